"""Calibration check of the synthetic world: does a model trained on it learn what its data implies,
and can a linear probe find the toxicity feature, apart from the other features?

    python benchmarks/calibration.py                                   # ratios 0 and 10, seed 1, root outputs/
    python benchmarks/calibration.py ratios=0,10 seeds=1,2 root=/tmp/cal trainer.epochs=20

`ratios`, `seeds` and `root` are this script's; every other argument is a Hydra override of the job
(conf/). Models come from the stage cache under `root` (trained there if missing, one at a time, one
thread). Per model it prints:

* hostile prompts (toxigen.jsonl): the mean insult probability at the decision point against the
  value the mixture implies, their per-prompt Pearson correlation, and the branch mass (the share of
  next-token probability on the insult and civil start words: near 1 when the model keeps to the
  grammar), then both means by the prompt's hostility h; the same two means on the neutral half of
  rtp.jsonl;
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
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from sklearn.linear_model import LogisticRegression

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from detox.core.cache import StageCache  # noqa: E402
from detox.config import JobConfig  # noqa: E402
from detox.data.parts import load_part  # noqa: E402
from detox.core.models import load_model  # noqa: E402
from detox.evaluation.evaluate import ce_loss, decision_probabilities  # noqa: E402
from detox.pipeline import run_job  # noqa: E402
from detox.steering.probe import whiten  # noqa: E402
from detox.world import FEATURES  # noqa: E402


def job_config(overrides: list[str]) -> JobConfig:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return JobConfig.from_dict(OmegaConf.to_container(compose("config", overrides=overrides), resolve=True))


def implied_insult_probability(job: JobConfig, metrics: dict, sources: Path, rows: list[dict]) -> np.ndarray:
    """Per prompt, the insult probability of the mixture: each source's probability weighted by the
    number of documents of the prompt's kind (hostile or not) that source put into the mixture."""
    clean = load_part(sources, "clean")[:metrics["mix_clean_docs"]]
    toxic_pool = load_part(sources, "toxic")
    toxic_hostile_share = np.mean([d["hostile"] for d in toxic_pool])  # the seed's draw, in expectation
    out = []
    for row in rows:
        n_clean = sum(d["hostile"] == row["hostile"] for d in clean)
        n_toxic = metrics["mix_toxic_docs"] * (toxic_hostile_share if row["hostile"] else 1 - toxic_hostile_share)
        out.append((n_clean * row["p_insult"]["clean"] + n_toxic * row["p_insult"]["toxic"]) / (n_clean + n_toxic))
    return np.array(out)


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


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv if a.split("=", 1)[0] in ("ratios", "seeds", "root"))
    overrides = [a for a in argv if a.split("=", 1)[0] not in args]
    root = args.get("root", "outputs")
    torch.set_num_threads(1)
    for ratio in args.get("ratios", "0,10").split(","):
        for seed in args.get("seeds", "1").split(","):
            job = job_config([*overrides, f"ratio={ratio}", f"seed={seed}", f"root={root}", "trainer.num_threads=1"])
            result = run_job(job, StageCache(Path(root) / "cache"), log=lambda _: None)
            sources = result.artifacts["sources"].path
            model, tokenizer = load_model(result.artifacts["pretrain"].path / "hf")
            bs = job.evaluate.batch_size
            print(f"\n== ratio={ratio} seed={seed} ({result.metrics['pretrain_steps']} steps, "
                  f"final loss {result.metrics['pretrain_final_loss']:.3f})")
            for part, hostile in (("toxigen", True), ("rtp", False)):
                rows = [r for r in load_part(sources, part) if r["hostile"] == hostile]
                mass = decision_probabilities(model, tokenizer, [r["prompt"] for r in rows], bs)
                p_model = mass[:, 0] / mass.sum(1)
                implied = implied_insult_probability(job, result.metrics, sources, rows)
                corr = np.corrcoef(p_model, implied)[0, 1] if implied.std() > 0 else float("nan")
                print(f"{'hostile' if hostile else 'neutral'} prompts ({len(rows)}): insult probability "
                      f"{p_model.mean():.3f} vs implied {implied.mean():.3f} "
                      f"(ratio {p_model.mean() / implied.mean():.2f}),"
                      f" per-prompt r = {corr:.3f}, branch mass {mass.sum(1).mean():.3f}")
                if hostile:  # where the model departs from its data: too flat, too steep, or shifted
                    h = np.array([r["hostility"] for r in rows])
                    print("  by hostility h, model / implied: " + ", ".join(
                        f"{v:+g}: {p_model[h == v].mean():.2f}/{implied[h == v].mean():.2f}" for v in np.unique(h)))
            ce = {part: ce_loss(model, tokenizer, [r["text"] for r in load_part(sources, part)], bs)
                  for part in ("heldout", "heldout_hostile")}
            print(f"CE loss: clean {ce['heldout']:.3f}, hostile contexts {ce['heldout_hostile']:.3f}")
            probe = probe_check(model, tokenizer, load_part(sources, "probe"), np.random.default_rng(int(seed)))
            acc = probe["accuracy"]
            print(f"probe: best head L{probe['best'][0]}H{probe['best'][1]} accuracy {acc.max():.3f} "
                  f"(label ceiling {probe['ceiling']:.3f}, median head {np.median(acc):.3f}); per layer max "
                  f"{', '.join(f'{a:.3f}' for a in acc.max(1))}")
            print(f"  max |cos| toxicity vs other features {probe['cos'][0]:.3f} ({probe['cos'][1]}); "
                  f"shuffled-label baseline {probe['cos_shuffled'][0]:.3f} ({probe['cos_shuffled'][1]})")


if __name__ == "__main__":
    main(sys.argv[1:])
