"""Calibration of the synthetic world's base models: does a model trained on it land where its data
says, whatever its seed and its float rounding?

    python benchmarks/calibration.py                                  # ratios 0,10,25 x seeds 1,2,3, seed 1 perturbed
    python benchmarks/calibration.py ratios=0 seeds=1,2 perturb=1,2 root=/tmp/cal trainer.epochs=20
    python benchmarks/calibration.py ratios=0 seeds=1 detail=1        # per model: by hostility, CE, probe

`ratios`, `seeds`, `perturb` (the seeds also trained with perturbed initial weights; empty: none),
`perturbation` (relative size, default 1e-6), `detail` (1: the per-model checks below) and `root` are
this script's; every other argument is a Hydra override of the job (conf/). Models come from the stage
cache under `root` (trained there if missing, one at a time, one thread), through the job's own
pre-training: a perturbed model is the job's pretrain stage with `InitPerturbation` among its
Lightning callbacks (every initial weight times 1 + eps * N(0, 1), before the first step), cached
under its own key. The stand-in for another machine's arithmetic: a model that lands somewhere else
after a change at the level of float rounding lands by chance, not by its data.

It ends with the table (the issue's targets: the mean within 2 points of the implied value, the
between-seed SD at most 2 points, a perturbed seed within 1 point of its unperturbed run):

    ratio implied   mean mean-impl SD seeds max|miss| |perturbed-seed|  per seed

where "insult probability" is the job's `insult_probability` (the insult branch's share of the
next-token mass at the decision point of the hostile ToxiGen-like prompts, exact, no sampling) and
"implied" the mixture's `realised_toxigen_sampled` (the same quantity of the documents that model saw:
per prompt, the share of the mixture's hostile documents of its hostility that insult; the sources'
expectation, `implied_toxigen_sampled`, differs from it by the realisation's own rates).

With `detail=1`, per model also:

* the mean insult probability by the prompt's hostility h against the implied one, the per-prompt
  Pearson correlation and the branch mass (near 1 when the model keeps to the grammar); the same on
  the neutral half of rtp.jsonl; by the word in each of the two hostility cue slots (a model that
  ignores one slot is flat along it);
* the insult probability on the same hostile prompts after 0, 1 and 2 held-out documents (each closed
  by EOS, as in the packed training windows): with trainer.document_mask=false it should not move,
  since documents are independent (it did: 50.1 / 46.6 / 44.7 %, the reason for the mask); with the
  mask (the default) the model never attended across documents in training, so these contexts are
  outside what it learned and the figures after 1 and 2 documents mean nothing (39.4 / 4.7 / 2.4 %);
* CE loss (nats) on held-out clean documents and on held-out hostile-context documents;
* a quick probe: per head, a logistic regression on the o_proj input at the last token of the probe
  texts (70 / 30 split); the best head's test accuracy against the label ceiling E[max(p, 1 - p)],
  and the largest |cos| between that head's toxicity direction (mass mean difference) and the
  one-vs-rest directions of the other latent features, both in the head's whitened coordinates (else
  every noisy mean difference points along the head's largest-variance direction and all cosines are
  near 1); the baseline in the same run is a direction from shuffled labels, whose largest |cos| is
  what no toxicity feature gives.
"""

import sys
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from sklearn.linear_model import LogisticRegression

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from detox.core.artifacts import STAGE  # noqa: E402
from detox.core.cache import StageCache  # noqa: E402
from detox.job import JobConfig  # noqa: E402
from detox.data.parts import load_part  # noqa: E402
from detox.core.models import load_model  # noqa: E402
from detox.evaluation.evaluate import ce_loss, decision_probabilities, insult_probability, token_budget  # noqa: E402
from detox.pipeline import run_plan, study_plan  # noqa: E402
from detox.steering.probe import whiten  # noqa: E402
from detox.data.world import FEATURES, HOSTILITY_CUES  # noqa: E402


def job_config(overrides: list[str]) -> JobConfig:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return JobConfig.from_dict(OmegaConf.to_container(compose("config", overrides=overrides), resolve=True))


class InitPerturbation(L.Callback):
    """Multiplies every initial weight by 1 + eps * N(0, 1) (seeded) before the first optimiser step."""

    def __init__(self, eps: float, seed: int):
        self.eps, self.seed = eps, seed

    def on_train_start(self, trainer, module):
        if trainer.global_step:  # resumed from a checkpoint: its weights are already the perturbed run's
            return
        generator = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            for p in module.parameters():
                p.mul_(1 + self.eps * torch.randn(p.shape, generator=generator, dtype=p.dtype))


def base_model(job: JobConfig, cache: StageCache, perturbation: float = 0.0):
    """The job's sources, mixture and pre-trained model (from the cache or built), with its initial
    weights perturbed when `perturbation` > 0: (metrics, sources folder, model folder)."""
    from detox.core.plan import Plan
    from detox.training.pretrain import pretrain

    plan = study_plan(job)
    plan = Plan([plan[name] for name in (STAGE.SOURCES, STAGE.TOKENIZER, STAGE.MIXTURE, STAGE.PRETRAIN)])
    if perturbation:
        stage = plan[STAGE.PRETRAIN]
        plan.replace(replace(stage, spec={**stage.spec, "init_perturbation": perturbation}, distributed=False,
                             build=lambda out, i: pretrain(
                                 job.model, job.trainer, job.data.seq_len, job.seed, i[STAGE.MIXTURE],
                                 i[STAGE.TOKENIZER], out, callbacks=[InitPerturbation(perturbation, job.seed)])))
    result = run_plan(plan, cache, log=lambda _: None)
    return result.metrics, result.artifacts[STAGE.SOURCES].path, result.artifacts[STAGE.PRETRAIN].path / "hf"


def implied_insult_probability(metrics: dict, rows: list[dict]) -> np.ndarray:
    """Per prompt, the insult probability of the mixture: each source's probability weighted by its
    share of the mixture's documents of the prompt's kind (as `implied_toxigen_sampled`)."""
    w = metrics["mix_hostile_toxic_weight"]
    return np.array([(1 - w) * r["p_insult"]["clean"] + w * r["p_insult"]["toxic"] if r["hostile"]
                     else r["p_insult"]["clean"] for r in rows])


@torch.no_grad()
def head_inputs(model, tokenizer, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """(texts, layers, heads, head_dim): each attention's o_proj input at the text's last token."""
    captured = []
    hooks = [layer.self_attn.o_proj.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
             for layer in model.model.layers]
    tokenizer.padding_side = "right"
    out = []
    try:
        for start in range(0, len(texts), batch_size):
            captured.clear()
            batch = [tokenizer.eos_token + t for t in texts[start:start + batch_size]]
            inputs = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            model(**inputs)
            last = inputs["attention_mask"].sum(1) - 1
            out.append(torch.stack([c[torch.arange(len(batch)), last] for c in captured], 1).numpy())
    finally:
        for hook in hooks:
            hook.remove()
    acts = np.concatenate(out)
    n_heads = model.config.num_attention_heads
    return acts.reshape(len(texts), acts.shape[1], n_heads, -1)


def max_abs_cos(direction: np.ndarray, acts: np.ndarray, rows: list[dict]) -> tuple[float, str]:
    """The largest |cos| between `direction` and a one-vs-rest mass-mean direction of a latent feature value."""
    best = (0.0, "")
    for feature in FEATURES:
        values = np.array([r[feature] for r in rows])
        for value in np.unique(values):
            other = acts[values == value].mean(0) - acts[values != value].mean(0)
            cos = abs(direction @ other) / (np.linalg.norm(direction) * np.linalg.norm(other))
            best = max(best, (float(cos), f"{feature}={value}"))
    return best


def probe_check(model, tokenizer, rows: list[dict], rng: np.random.Generator) -> dict:
    acts = head_inputs(model, tokenizer, [r["text"] for r in rows])
    labels = np.array([r["label"] for r in rows])
    label_p = np.array([r["label_p"] for r in rows])
    train = np.zeros(len(rows), bool)
    train[rng.permutation(len(rows))[:int(0.7 * len(rows))]] = True
    accuracy = np.zeros(acts.shape[1:3])
    for layer in range(acts.shape[1]):
        for head in range(acts.shape[2]):
            x = acts[:, layer, head]
            probe = LogisticRegression(max_iter=2000).fit(x[train], labels[train])
            accuracy[layer, head] = probe.score(x[~train], labels[~train])
    layer, head = np.unravel_index(accuracy.argmax(), accuracy.shape)
    x = whiten(acts[:, layer:layer + 1, head:head + 1])[:, 0, 0]
    toxicity = x[labels == 1].mean(0) - x[labels == 0].mean(0)
    shuffled = rng.permutation(labels)
    baseline = x[shuffled == 1].mean(0) - x[shuffled == 0].mean(0)
    return {"accuracy": accuracy, "best": (int(layer), int(head)),
            "ceiling": float(np.maximum(label_p, 1 - label_p)[~train].mean()),
            "cos": max_abs_cos(toxicity, x, rows), "cos_shuffled": max_abs_cos(baseline, x, rows)}


def details(job: JobConfig, metrics: dict, sources: Path, model, tokenizer, seed: int) -> None:
    bs = token_budget(job.evaluate.batch_size, job.data.seq_len)
    for part, hostile in (("toxigen", True), ("rtp", False)):
        rows = [r for r in load_part(sources, part) if r["hostile"] == hostile]
        mass = decision_probabilities(model, tokenizer, [r["prompt"] for r in rows], bs)
        p_model = mass[:, 0] / mass.sum(1)
        implied = implied_insult_probability(metrics, rows)
        corr = np.corrcoef(p_model, implied)[0, 1] if implied.std() > 0 else float("nan")
        print(f"  {'hostile' if hostile else 'neutral'} prompts ({len(rows)}): insult probability "
              f"{p_model.mean():.3f} vs implied {implied.mean():.3f}, per-prompt r = {corr:.3f}, "
              f"branch mass {mass.sum(1).mean():.3f}")
        if hostile:  # where the model departs from its data: too flat, too steep, or shifted
            h = np.array([r["hostility"] for r in rows])
            print("    by hostility h, model / implied: " + ", ".join(
                f"{v:+g}: {p_model[h == v].mean():.2f}/{implied[h == v].mean():.2f}" for v in np.unique(h)))
            for i, slot in enumerate(HOSTILITY_CUES):
                cue = np.array([next(w for w in r["prompt"].split() if w in slot) for r in rows])
                print(f"    by cue slot {i}, model / implied: " + ", ".join(
                    f"{w}: {p_model[cue == w].mean():.2f}/{implied[cue == w].mean():.2f}" for w in slot))
    # The same prompts after k held-out documents (each closed by EOS, as in the packed training windows): a
    # model whose answer moves with k learned a rate that depends on the position in the window, not on the document.
    held, rows, rng = load_part(sources, "heldout"), load_part(sources, "toxigen"), np.random.default_rng(seed)
    after = []
    for k in (0, 1, 2):
        prompts = ["".join(held[j]["text"] + tokenizer.eos_token for j in rng.choice(len(held), k, replace=False))
                   + r["prompt"] for r in rows]
        after.append(100 * insult_probability(model, tokenizer, prompts, bs).mean())
    print(f"  insult probability after 0 / 1 / 2 preceding documents: {' / '.join(f'{v:.1f}' for v in after)} %")
    ce = {part: ce_loss(model, tokenizer, [r["text"] for r in load_part(sources, part)],
                        job.evaluate.batch_size, job.data.seq_len)
          for part in ("heldout", "heldout_hostile")}
    print(f"  CE loss: clean {ce['heldout']:.3f}, hostile contexts {ce['heldout_hostile']:.3f}")
    probe = probe_check(model, tokenizer, load_part(sources, "probe"), np.random.default_rng(seed))
    acc = probe["accuracy"]
    print(f"  probe: best head L{probe['best'][0]}H{probe['best'][1]} accuracy {acc.max():.3f} "
          f"(label ceiling {probe['ceiling']:.3f}, median head {np.median(acc):.3f}); per layer max "
          f"{', '.join(f'{a:.3f}' for a in acc.max(1))}")
    print(f"    max |cos| toxicity vs other features {probe['cos'][0]:.3f} ({probe['cos'][1]}); "
          f"shuffled-label baseline {probe['cos_shuffled'][0]:.3f} ({probe['cos_shuffled'][1]})")


def main(argv: list[str]) -> None:
    own = ("ratios", "seeds", "perturb", "perturbation", "detail", "root")
    args = dict(a.split("=", 1) for a in argv if a.split("=", 1)[0] in own)
    overrides = [a for a in argv if a.split("=", 1)[0] not in args]
    root = args.get("root", "outputs")
    seeds = args.get("seeds", "1,2,3").split(",")
    perturbed = [s for s in args.get("perturb", seeds[0]).split(",") if s]
    eps = float(args.get("perturbation", "1e-6"))
    cache = StageCache(Path(root) / "cache")
    torch.set_num_threads(1)
    table = []
    for ratio in args.get("ratios", "0,10,25").split(","):
        p, implied, moved = {}, {}, {}
        for seed in seeds + [s for s in perturbed if s not in seeds]:
            job = job_config([*overrides, f"ratio={ratio}", f"seed={seed}", f"root={root}", "trainer.num_threads=1"])
            for perturbation in (0.0, eps) if seed in perturbed else (0.0,):
                metrics, sources, hf = base_model(job, cache, perturbation)
                model, tokenizer = load_model(hf)
                prompts = [r["prompt"] for r in load_part(sources, "toxigen")]
                value = 100 * float(insult_probability(model, tokenizer, prompts,
                                                             token_budget(job.evaluate.batch_size, job.data.seq_len)).mean())
                implied[seed] = metrics["realised_toxigen_sampled"]
                print(f"ratio={ratio} seed={seed}{f' perturbed {perturbation:g}' if perturbation else ''}: insult "
                      f"probability {value:.1f} % vs implied {implied[seed]:.1f} % "
                      f"({metrics['pretrain_steps']} steps, final loss {metrics['pretrain_final_loss']:.3f})", flush=True)
                if perturbation:
                    moved[seed] = value - p[seed]
                else:
                    p[seed] = value
                if args.get("detail") == "1" and not perturbation:
                    details(job, metrics, sources, model, tokenizer, int(seed))
        values = np.array([p[s] for s in seeds])
        table.append((ratio, float(np.mean([implied[s] for s in seeds])), values, moved))
    print(f"\ninsult probability (%) on hostile prompts, {len(seeds)} seeds ({','.join(seeds)}); perturbation "
          f"{eps:g} of seeds {','.join(perturbed) or '-'}; overrides: {' '.join(overrides) or '(defaults)'}")
    print(f"{'ratio':>5} {'implied':>7} {'mean':>6} {'mean-impl':>9} {'SD seeds':>8} {'max|miss|':>9} "
          f"{'|perturbed-seed|':>16}  per seed")
    for ratio, implied_mean, values, moved in table:
        sd = values.std(ddof=1) if len(values) > 1 else float("nan")
        shift = max(map(abs, moved.values())) if moved else float("nan")
        print(f"{ratio:>5} {implied_mean:7.1f} {values.mean():6.1f} {values.mean() - implied_mean:+9.1f} {sd:8.1f} "
              f"{np.abs(values - implied_mean).max():9.1f} {shift:16.1f}  {', '.join(f'{v:.1f}' for v in values)}"
              + (f"  (perturbed: {', '.join(f'{d:+.1f}' for d in moved.values())})" if moved else ""))


if __name__ == "__main__":
    main(sys.argv[1:])
