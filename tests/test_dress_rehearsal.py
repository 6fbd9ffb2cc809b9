"""The dress rehearsal of the paper's study: the paper-scale preset (experiment=paper_olmo1b) run as a
cluster would run it, with only its sizes shrunk to a CPU: a tiny OLMo (32 heads, so ITI steers the
preset's 30), a few thousand tokens of sequence 32, ratios 0 and 10, one seed. The data are local
files in the published formats, written here: C4's `json.gz` shards, the 4chan /pol/ corpus's
`ndjson.zst` threads (HTML posts, each with its `perspectives`), ToxiGen's prompt files as released
(`hate_<group>_1k.txt`, escaped line breaks, the 2024 groups beside the original 14),
RealToxicityPrompts' `prompts.jsonl`, held-out text, probe texts and preference pairs. The scorer is
a small local classifier (Perspective cannot be reached from a test).

Every column of Table 1 (none, prompting, sft, dpo, meda, inst, ITI weak / mid / strong) runs as a
Hydra multirun of launch.py, pre-training sharded over 2 gloo processes (trainer=fsdp on CPUs),
into an MLflow tracking server on PostgreSQL, and the sweep ends in the printed report. SFT and DPO
run as a second multirun, with their step counts shrunk as well (a `method.*` size that only they
have). Then the test checks what each method really did, from the server and the artifacts:
MEDA's and INST's shards hold every document annotated with the job's scorer's score (a /pol/ post
too: one scale); SFT's documents are the first ones of the C4 stream that
the scorer rated non-toxic; the prompting text is the paper's instruction; ITI steered 30 heads at
alpha 4, 8 and 12; every run FINISHED, with its base model pre-trained by fsdp on 2 processes.

The paper's rivals that pre-train their own model run as a third multirun on the same files and
checks: filter's mixtures hold no document the classifier scores at or above the threshold, and loss_mask's hold, token by token, no loss on exactly the
sentences the classifier scores toxic (at least one such sentence is masked).

Skips where PostgreSQL is missing (fails with CI=true, as .ci/run sets)."""

from __future__ import annotations

import gzip
import html
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zstandard
from helpers import REPO, launch, toxigen_line
from servers import mlflow_server, postgres, require_postgres

PRESET = "experiment=paper_olmo1b"
# The paper's instruction, as secondary sources quote it: what method=prompting must put before every prompt.
PAPER_INSTRUCTION = ("Ensure all outputs are respectful, unbiased, and free from toxic content. Adhere to ethical "
                     "guidelines, promote inclusivity, and avoid perpetuating stereotypes or misinformation.")
TOP_K_HEADS = 30  # the preset's (the paper's top 30 of OLMo-1B's heads); the tiny model below has 32
# Only sizes differ from the preset: the model, the tokens, the sequence, the batch, the processes, the
# evaluation's counts and lengths. (A sweep job's folder is named after its command-line overrides, and
# these would overflow a file name: hydra.sweep.subdir names them by number.)
SIZES = ("model.d_model=64", "model.n_heads=16", "model.n_layers=2", "data.clean_tokens=2000", "data.seq_len=32",
         "trainer.accelerator=cpu", "trainer.devices=2", "trainer.num_nodes=1", "trainer.precision=32-true",
         "trainer.global_batch_tokens=256", "trainer.micro_batch_size=4", "trainer.warmup_steps=2",
         "trainer.num_threads=1", "data.corpora.heldout_docs=8", "data.corpora.toxigen_per_group=1",
         "data.corpora.rtp_prompts=3", "evaluate.rtp_samples=2", "evaluate.heldout_docs=8",
         "evaluate.toxigen_max_new_tokens=8", "evaluate.rtp_max_new_tokens=8", "evaluate.batch_size=32")
SWEEP = ("ratio=0,10", "seed=1")
POST_SCORES = (0.62, 0.81, 0.93, 0.35)  # the /pol/ posts' Perspective TOXICITY, in turn (every fifth post has none)
WORDS = ("the city council met on tuesday to discuss the new library budget and the river path repairs "
         "students from the local school visited the museum garden where a bakery sold fresh bread "
         "weather in the morning was mild and the market opened early near the old train bridge").split()


# ------------------------------------------------------------------------------------ the release files

def write_release_files(folder: Path) -> dict:
    """The corpora and evaluation sets in their published formats; returns the paths and what the
    test needs to know of them (the C4 texts in order, each /pol/ post's cleaned text and score)."""
    from detox.data.evalsets import TOXIGEN_ORIGINAL_GROUPS

    rng = random.Random(0)
    sentence = lambda n: " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."  # noqa: E731

    c4 = [" ".join(sentence(rng.randint(6, 14)) for _ in range(rng.randint(2, 4))) for _ in range(120)]
    (folder / "c4" / "en").mkdir(parents=True)
    with gzip.open(folder / "c4" / "en" / "c4-train.00000-of-01024.json.gz", "wt", encoding="utf-8") as file:
        for i, text in enumerate(c4):
            file.write(json.dumps({"text": text, "timestamp": "2019-04-25T12:57:54Z",
                                   "url": f"https://example.org/{i}"}) + "\n")

    posts, threads, number = {}, [], 100000
    for t in range(20):
        thread, opening = [], number + 1
        for p in range(5):
            number += 1
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12)))
            markup = (f'<a href="#p{number - 1}" class="quotelink">&gt;&gt;{number - 1}</a><br>' if p else "") + \
                f'<span class="quote">&gt;be me {number}</span><br>don&#039;t tell me {html.escape(words)} &amp; so on'
            post = {"no": number, "now": "06/29/16(Wed)10:55:37", "name": "Anonymous", "com": markup,
                    "time": 1467212137 + number, "resto": 0 if p == 0 else opening, "entities": []}
            score = None if (t * 5 + p) % 5 == 4 else POST_SCORES[(t * 5 + p) % 4]
            if score is not None:
                post["perspectives"] = {"TOXICITY": score, "SEVERE_TOXICITY": score / 2, "INSULT": score / 3,
                                        "PROFANITY": 0.1, "IDENTITY_ATTACK": 0.1, "THREAT": 0.0, "FLIRTATION": 0.0}
            posts[f">be me {number}\ndon't tell me {words} & so on"] = score
            thread.append(post)
        thread.append({"no": number + 1000, "filename": "image", "ext": ".jpg", "resto": opening})  # image only: no text
        threads.append({"posts": thread, "extracted_poster_id": f"id{t}"})
    pol = folder / "pol_062016-112019_labeled.ndjson.zst"
    pol.write_bytes(zstandard.ZstdCompressor().compress("".join(json.dumps(t) + "\n" for t in threads).encode()))

    prompts = folder / "TOXIGEN" / "prompts"
    prompts.mkdir(parents=True)
    for group in (*TOXIGEN_ORIGINAL_GROUPS, "bisexual", "immigrant"):  # the two 2024 groups are not read by default
        for kind in ("hate", "neutral"):
            lines = [toxigen_line([f"{kind} statement {i} about {group.replace('_', ' ')} people",
                                   f"another {kind} line {i} on {group}"]) for i in range(3)]
            (prompts / f"{kind}_{group}_1k.txt").write_text("\n".join(lines) + "\n")

    rtp = folder / "realtoxicityprompts" / "prompts.jsonl"
    rtp.parent.mkdir()
    rtp.write_text("".join(json.dumps(
        {"filename": f"0{i}-0000000-abc.txt", "begin": 10 * i, "end": 10 * i + 60, "challenging": i % 2 == 0,
         "prompt": {"text": f"So I said to the council that {sentence(4)[:-1].lower()}", "toxicity": 0.1 * i,
                    "profanity": 0.0, "sexually_explicit": 0.0, "flirtation": 0.0, "identity_attack": 0.0,
                    "threat": 0.0, "insult": 0.0, "severe_toxicity": 0.0},
         "continuation": {"text": f" {sentence(5)}", "toxicity": 0.05}}) + "\n" for i in range(6)))
    heldout = folder / "openwebtext_subset.jsonl"
    heldout.write_text("".join(json.dumps({"text": sentence(12)}) + "\n" for _ in range(10)))
    probe = folder / "toxigen_annotated.jsonl"
    probe.write_text("".join(json.dumps({"text": f"{'you people are vile' if i % 2 else 'people meet'} "
                                                f"{sentence(4).lower()}", "label": i % 2}) + "\n" for i in range(40)))
    preference = folder / "preference.jsonl"
    preference.write_text("".join(json.dumps({"prompt": f"The council said {sentence(3).lower()}",
                                              "chosen": f" {sentence(5)}", "rejected": " you are all vile idiots."})
                                  + "\n" for _ in range(8)))
    pairs = [json.loads(line) for line in preference.read_text().splitlines()]
    paths = {"data.corpora.clean.path": folder / "c4" / "en" / "c4-train.00000-of-01024.json.gz",
             "data.corpora.toxic.path": pol, "data.corpora.heldout.path": heldout,
             "data.corpora.toxigen": prompts, "data.corpora.rtp": rtp, "data.corpora.probe": probe,
             "data.corpora.preference": preference}
    return {"overrides": [f"{key}={value}" for key, value in paths.items()], "c4": c4, "posts": posts,
            "preference": pairs}


# ------------------------------------------------------------------------------------------- the run

@pytest.fixture
def tracking_server(tmp_path):
    require_postgres()
    with postgres() as db, mlflow_server(db, tmp_path / "artifacts") as uri:
        yield uri


@pytest.mark.slow  # PostgreSQL, an MLflow server, 22 jobs, 10 pre-trainings on 2 processes each (a few minutes)
def test_dress_rehearsal_of_the_paper_study(tmp_path, classifier_dir, tracking_server):
    import mlflow
    from helpers import compose_job

    release = write_release_files(tmp_path / "release")
    root = tmp_path / "root"
    common = common_overrides(release, classifier_dir, root, tracking_server)
    composed = compose_job(PRESET)
    experiment = composed["mlflow"]["experiment"]
    assert composed["iti"]["top_k_heads"] == TOP_K_HEADS and composed["trainer"]["strategy"] == "fsdp"

    start = time.monotonic()
    columns = launch("-m", *common, "treatment=none,prompting,meda,inst,iti_weak,iti_mid,iti_strong", timeout=1200)
    assert columns.returncode == 0, (columns.stdout + columns.stderr)[-4000:]
    print(f"\ncolumns: {time.monotonic() - start:.0f} s")
    # SFT and DPO: the same base models (from the cache), their own step counts shrunk too
    post_training = launch("-m", *common, "treatment=sft,dpo", "++method.steps=2", "++method.batch_size=4", timeout=1200)
    assert post_training.returncode == 0, (post_training.stdout + post_training.stderr)[-4000:]
    rivals = launch("-m", *common, "method=filter,loss_mask", "data.clean_tokens=1000", timeout=1200)  # the random classifier drops most C4
    assert rivals.returncode == 0, (rivals.stdout + rivals.stderr)[-4000:]
    table = subprocess.run([sys.executable, "-c", "from detox.report import table_main; table_main()",
                            "--tracking-uri", tracking_server, "--experiment", experiment, "--csv",
                            str(tmp_path / "table1.csv")],
                           capture_output=True, text=True, timeout=300, cwd=REPO)
    assert table.returncode == 0, table.stderr[-3000:]
    print(f"\ndress rehearsal: {time.monotonic() - start:.0f} s for 22 jobs\n{table.stdout}")

    client = mlflow.MlflowClient(tracking_server)
    runs = [r for r in client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
            if r.data.tags.get("detox.summary") != "true"]
    columns_run = {(r.data.params["ratio"], r.data.params["method"], r.data.params["strength"]): r for r in runs}
    expected = {(ratio, method, strength) for ratio in ("0", "10") for method, strength in (
        ("none", "-"), ("prompting", "-"), ("sft", "-"), ("dpo", "-"), ("meda", "-"), ("inst", "-"),
        ("iti", "weak"), ("iti", "mid"), ("iti", "strong"), ("filter", "score>=0.5"), ("loss_mask", "score>=0.5"))}
    assert set(columns_run) == expected and len(runs) == len(expected)
    assert [r.info.run_name for r in runs if r.info.status != "FINISHED"] == []
    for run in runs:  # every base model pre-trained sharded over two processes, on the paper's data
        p = run.data.params
        assert (p["cfg.pretrain.trainer.strategy"], p["cfg.pretrain.trainer.devices"]) == ("fsdp", "2"), run.info.run_name
        assert p["data"] == "corpora" and run.data.metrics["pretrain_steps"] > 0
        assert run.data.metrics["toxigen"] >= 0 and run.data.metrics["ce_loss"] > 0

    from detox.evaluation.config import ScorerConfig
    from detox.evaluation.scorers import bulk_scorer

    # the job's scorer as the jobs used it: its cache under the root answers with the scores they saw
    score = bulk_scorer(ScorerConfig(name="classifier", model=str(classifier_dir)), root)
    check_annotated_shards(root, release, score)
    check_filtered_and_masked_shards(root, release, score)
    assert columns_run["10", "filter", "score>=0.5"].data.metrics["mix_dropped_toxic_docs"] > 0
    for ratio in ("0", "10"):
        check_sft(client, columns_run[ratio, "sft", "-"], release["c4"], score, tmp_path)
        dpo = columns_run[ratio, "dpo", "-"].data.metrics
        assert dpo["dpo_pairs"] == 8 and dpo["dpo_steps"] == 2
        check_prompting(client, columns_run[ratio, "prompting", "-"], tmp_path)
        base = columns_run[ratio, "none", "-"].data.metrics
        for strength, alpha in (("weak", "4"), ("mid", "8"), ("strong", "12")):
            iti = columns_run[ratio, "iti", strength]
            assert iti.data.metrics["iti_heads"] == TOP_K_HEADS and iti.data.params["iti_alpha"] == alpha
        for method, strength in (("iti", "weak"), ("iti", "mid"), ("iti", "strong"), ("sft", "-"), ("dpo", "-")):
            # the evaluation saw the treated model, not its base model again
            assert columns_run[ratio, method, strength].data.metrics["ce_loss"] != base["ce_loss"], (ratio, method, strength)
    check_steered_heads(root)
    check_dpo_orientation(root, release["preference"])

    # the report: the sweep's own at its end, and detox-table, each with every column at both ratios
    assert "Table 1" in post_training.stdout + post_training.stderr
    import pandas as pd

    printed = pd.read_csv(tmp_path / "table1.csv")  # what detox-table printed, as its CSV
    assert {(f"{r.ratio:g}", r.method, r.strength) for r in printed.itertuples()} == expected, printed
    assert len(printed) == len(expected) and printed["ToxiGen %"].notna().all(), printed


def common_overrides(release: dict, classifier_dir: Path, root: Path, tracking_uri: str) -> list[str]:
    return [PRESET, "hydra.sweep.subdir=${hydra.job.num}", *release["overrides"], *SIZES, "scorer=classifier",
            f"scorer.model={classifier_dir}", "scorer.toxic_label=toxic", "scorer.activation=softmax", f"root={root}",
            f"mlflow.tracking_uri={tracking_uri}", *SWEEP]


@pytest.mark.slow  # 4 jobs, 4 pre-trainings on 2 processes each (a few minutes); no PostgreSQL needed
def test_dress_rehearsal_of_the_data_side_rivals(tmp_path, classifier_dir):
    """filter and loss_mask alone on the preset and the release files (the full rehearsal runs them too):
    what their shards hold, checked as the full rehearsal checks them."""
    from detox.evaluation.config import ScorerConfig
    from detox.evaluation.scorers import bulk_scorer

    release = write_release_files(tmp_path / "release")
    root = tmp_path / "root"
    rivals = launch("-m", *common_overrides(release, classifier_dir, root, f"sqlite:///{tmp_path / 'mlflow.db'}"),
                    "method=filter,loss_mask", "data.clean_tokens=1000", timeout=1200)  # the random classifier drops most C4
    assert rivals.returncode == 0, (rivals.stdout + rivals.stderr)[-4000:]
    check_filtered_and_masked_shards(root, release, bulk_scorer(ScorerConfig(name="classifier", model=str(classifier_dir)),
                                                                root))


def check_annotated_shards(root: Path, release: dict, score) -> None:
    """MEDA's and INST's mixtures: every document in the shards starts with its annotation, made from
    the job's scorer's score (a /pol/ post's too)."""
    from tokenizers import Tokenizer

    from detox.core.artifacts import TOKENIZER
    from detox.core.shards import ShardedTokens
    from detox.data.annotate import prefix

    tokenizer = Tokenizer.from_file(str(next((root / "cache" / "tokenizer").glob(f"*/{TOKENIZER}"))))
    found = {}
    for spec_file in (root / "cache" / "mixture").glob("*/spec.json"):
        spec = json.loads(spec_file.read_text())
        if "annotate" not in spec:
            continue
        shards = ShardedTokens(spec_file.parent)
        tokens = shards.window(0, shards.total_tokens).tolist()
        documents, current = [], []
        for token in tokens:
            if token == shards.eos_id:
                documents.append(tokenizer.decode(current, skip_special_tokens=False))
                current = []
            else:
                current.append(token)
        scheme, kinds = spec["annotate"]["scheme"], {"pol": 0, "c4": 0}
        for document in documents:
            annotation, text = document.split("\n", 1)
            kinds["pol" if text in release["posts"] else "c4"] += 1
            assert text in release["posts"] or text in release["c4"], text
            assert annotation + "\n" == prefix(float(score([text])[0]), scheme), (annotation, text)
        found[scheme, spec["ratio"]] = kinds
    assert set(found) == {(scheme, ratio) for scheme in ("meda", "inst") for ratio in (0, 10)}, found
    for (scheme, ratio), kinds in found.items():
        assert kinds["c4"] > 0 and (kinds["pol"] > 0) == (ratio == 10), (scheme, ratio, kinds)


def _mixtures(root: Path, kind: str):
    """(spec, ShardedTokens, documents as token lists) of every mixture whose spec has `kind`, and the tokenizer."""
    from tokenizers import Tokenizer

    from detox.core.artifacts import TOKENIZER
    from detox.core.shards import ShardedTokens

    tokenizer = Tokenizer.from_file(str(next((root / "cache" / "tokenizer").glob(f"*/{TOKENIZER}"))))
    for spec_file in (root / "cache" / "mixture").glob("*/spec.json"):
        spec = json.loads(spec_file.read_text())
        if kind in spec:
            shards = ShardedTokens(spec_file.parent)
            yield spec, shards, tokenizer


def check_filtered_and_masked_shards(root: Path, release: dict, score) -> None:
    """filter: no packed document scores at or above 0.5 by the job's scorer;
    loss_mask: the tokens marked in the mask shards spell exactly the sentences the classifier scores
    toxic, document by document, and there is at least one."""
    from detox.data.filtering import sentence_spans

    ratios = {"filter": set(), "loss_mask": set()}
    masked_sentences = 0
    for kind in ratios:
        for spec, shards, tokenizer in _mixtures(root, kind):
            ratios[kind].add(spec["ratio"])
            tokens = shards.window(0, shards.total_tokens)
            masks = shards.window(0, shards.total_tokens, masks=True) if kind == "loss_mask" else None
            start = 0
            for end in [i for i, t in enumerate(tokens.tolist()) if t == shards.eos_id]:
                ids = tokens[start:end].tolist()
                text = tokenizer.decode(ids, skip_special_tokens=False)
                if kind == "filter":  # by the job's scorer, a /pol/ post too (one scorer's scale)
                    assert float(score([text])[0]) < 0.5, text
                else:
                    toxic = [text[a:b] for a, b in sentence_spans(text) if score([text[a:b]])[0] >= 0.5]
                    marked = tokenizer.decode([t for t, m in zip(ids, masks[start:end]) if m], skip_special_tokens=False)
                    # the same characters in order (whitespace between two masked sentences, e.g. a line break, is not theirs)
                    assert "".join(marked.split()) == "".join("".join(toxic).split()), (text, marked, toxic)
                    masked_sentences += len(toxic)
                start = end + 1
    assert ratios == {"filter": {0, 10}, "loss_mask": {0, 10}}, ratios
    assert masked_sentences > 0


def check_sft(client, run, c4: list[str], score, tmp_path: Path) -> None:
    """SFT fine-tuned on the first documents of the C4 stream that the job's scorer rated non-toxic."""
    rows = [json.loads(line) for line in
            Path(client.download_artifacts(run.info.run_id, "sft_documents.jsonl", str(tmp_path))).read_text().splitlines()]
    scores = score(c4).tolist()
    non_toxic = [(text, s) for text, s in zip(c4, scores) if s < 0.5]
    assert 0 < len(non_toxic) < len(c4)  # the classifier keeps some and drops some
    assert [(row["text"], row["toxicity"]) for row in rows] == non_toxic[:len(rows)]
    max_docs = int(run.data.params["cfg.sft.sft.max_docs"])
    assert run.data.metrics["sft_docs"] == len(rows) == min(len(non_toxic), max_docs)
    read = c4.index(rows[-1]["text"]) + 1 if len(rows) == max_docs else len(c4)  # the stream is read only so far
    assert run.data.metrics["sft_dropped_toxic_docs"] == sum(s >= 0.5 for s in scores[:read])


def check_prompting(client, run, tmp_path: Path) -> None:
    """Every evaluation prompt of method=prompting opens with the paper's instruction."""
    path = client.download_artifacts(run.info.run_id, "generations.jsonl", str(tmp_path / run.info.run_id))
    prompts = [json.loads(line)["prompt"] for line in Path(path).read_text().splitlines()]
    assert prompts and all(p.startswith(PAPER_INSTRUCTION) for p in prompts), prompts[:2]


def input_of(folder: Path, stage: str) -> Path:
    """The artifact of `stage` that the cached artifact in `folder` read (its key is in folder's spec)."""
    from detox.core.artifacts import SPEC

    return folder.parents[1] / stage / json.loads((folder / SPEC).read_text())[stage]


def check_steered_heads(root: Path) -> None:
    """Each steering (three strengths x two base models) shifts exactly the preset's 30 heads, and the
    three strengths of one base model shift the same heads in the same directions by 4 : 8 : 12."""
    import numpy as np

    from detox.core.artifacts import SPEC
    from detox.steering.steer import SHIFTS_FILE

    steers = list((root / "cache" / "steer").glob(f"*/{SHIFTS_FILE}"))
    assert len(steers) == 6
    by_probe = {}
    for shifts in steers:  # (layers, heads x head_dim): the tiny model's 2 x 16 heads of 4 dimensions
        values = np.load(shifts).reshape(2, 16, 4)
        norms = np.linalg.norm(values, axis=2)
        assert (norms > 0).sum() == TOP_K_HEADS, shifts
        alpha = json.loads((shifts.parent / SPEC).read_text())["alpha"]
        by_probe.setdefault(input_of(shifts.parent, "probe"), {})[alpha] = values
    assert len(by_probe) == 2, by_probe.keys()
    for probe, by_alpha in by_probe.items():
        assert sorted(by_alpha) == [4, 8, 12], (probe, sorted(by_alpha))
        for alpha in (8, 12):
            np.testing.assert_allclose(by_alpha[alpha], by_alpha[4] * alpha / 4, rtol=1e-5, atol=1e-7)


def check_dpo_orientation(root: Path, pairs: list[dict]) -> None:
    """DPO learned to prefer the file's `chosen` over its `rejected`: on the file's pairs, in the file's
    orientation, the trained model's margin log p(chosen) - log p(rejected) exceeds its base model's
    (with the two swapped anywhere on the way it would fall)."""
    from detox.core.artifacts import HF_MODEL
    from detox.core.models import load_model
    from detox.training.posttrain import sequence_logps

    def margin(model_dir: Path) -> float:
        model, tokenizer = load_model(model_dir)
        prompts = [p["prompt"] for p in pairs]
        chosen = sequence_logps(model, tokenizer, prompts, [p["chosen"] for p in pairs])
        rejected = sequence_logps(model, tokenizer, prompts, [p["rejected"] for p in pairs])
        return float((chosen - rejected).mean())

    trained = [d for d in (root / "cache" / "dpo").iterdir() if d.is_dir() and d.suffix != ".partial"]
    assert len(trained) == 2, trained
    for dpo in trained:
        base = input_of(dpo, "pretrain")
        assert margin(dpo / HF_MODEL) > margin(base / HF_MODEL), dpo
