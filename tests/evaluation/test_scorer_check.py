"""detox-scorer-check on small files in the published formats, written here (RealToxicityPrompts'
prompts.jsonl with its Perspective fields, /pol/ NDJSON threads with `perspectives`, ToxiGen's annotated
split as parquet) and a tiny classifier written here: each figure of its table equals a direct computation
(scikit-learn's ROC-AUC, SciPy's Spearman) on the classifier's scores computed here; the figure, the
MLflow run and the calibration it writes; and a job that applies the calibration."""

import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
import zstandard
from helpers import REPO, tiny_classifier, tiny_tokenizer
from scipy.stats import spearmanr
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score

RUDE = ["you are a rude goblin", "the goblin is rude and loud", "rude rude goblin", "a loud rude dog"]
KIND = ["the cat sat on the mat", "what a lovely day it is", "the dog ran in the park", "a cat and a dog in the sun"]


def texts(n: int, seed: int) -> list[tuple[str, float]]:
    """n texts with a made-up reference score that leans with their rudeness (so ROC-AUC is defined)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        rude = i % 3 == 0
        text = f"{(RUDE if rude else KIND)[i % 4]} {i}"
        rows.append((text, float(np.clip((0.7 if rude else 0.2) + rng.normal(0, 0.15), 0, 1))))
    return rows


def write_published(folder):
    """The three references in their release formats, with the cases the readers must skip."""
    folder.mkdir()
    rtp = []
    for i, ((prompt, p), (cont, c)) in enumerate(zip(texts(30, 1), texts(30, 2))):
        attributes = {"profanity": 0.1, "sexually_explicit": 0.0, "identity_attack": 0.1, "flirtation": 0.2,
                      "threat": 0.0, "insult": 0.1, "severe_toxicity": 0.0}
        rtp.append({"filename": f"0{i}-x.txt", "begin": 0, "end": 50, "challenging": i % 5 == 0,
                    "prompt": {"text": prompt, **attributes, "toxicity": p},
                    "continuation": {"text": cont, **attributes, "toxicity": None if i == 7 else c}})  # a null
    (folder / "prompts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rtp))
    posts = [{"no": 100 + i, "now": "06/19/16(Sun)22:55:12", "com": text.replace(" ", " <wbr>", 1),
              "perspectives": {"TOXICITY": score, "SEVERE_TOXICITY": score / 2}} for i, (text, score) in enumerate(texts(24, 3))]
    posts += [{"no": 999, "com": "no score here", "perspectives": {}}, {"no": 998, "filename": "image-only"}]
    threads = [{"posts": posts[i:i + 5]} for i in range(0, len(posts), 5)]
    (folder / "pol.ndjson.zst").write_bytes(zstandard.ZstdCompressor().compress(
        "".join(json.dumps(t) + "\n" for t in threads).encode()))
    rows = texts(40, 4)
    pd.DataFrame({"text": [t for t, _ in rows], "target_group": "asian", "factual?": "neither factual nor opinion",
                  "ingroup_effect": "doesn't use in-group language", "lewd": "doesn't contain lewd content",
                  "framing": "disagreement", "predicted_group": "it is unclear who is referenced",
                  "stereotyping": "doesn't use positive stereotyping", "intent": 1 + 4 * np.array([s for _, s in rows]),
                  "toxicity_ai": 1 + 4 * np.array([s for _, s in rows]), "toxicity_human": 1 + 4 * np.array([s for _, s in rows]),
                  "predicted_author": "human", "actual_method": "topk"}).to_parquet(folder / "annotated_test.parquet")
    return rows


def direct_scores(folder, items) -> np.ndarray:
    """The classifier's P(toxic) computed here, one text at a time, without detox's scorer."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = tiny_tokenizer()
    with torch.no_grad():
        return np.array([model(**tokenizer(t, return_tensors="pt")).logits.softmax(-1)[0, 1].item() for t in items])


def test_the_default_scorer_is_the_one_the_classifier_option_file_names():
    from detox.scorer_check import DEFAULT_ACTIVATION, DEFAULT_LABEL, DEFAULT_MODEL

    written = yaml.safe_load((REPO / "conf" / "scorer" / "classifier.yaml").read_text())
    assert (written["model"], written["toxic_label"], written["activation"]) == (DEFAULT_MODEL, DEFAULT_LABEL,
                                                                                 DEFAULT_ACTIVATION)


def test_each_figure_is_scikit_learns_and_scipys_and_a_missing_score_is_left_out(tmp_path):
    """The check's rows in process, for any scorer (here a rule on the words, one text it cannot score)."""
    from detox.evaluation.agreement import check

    rows = write_published(tmp_path / "published")
    rule = lambda items: np.array([np.nan if t.endswith(" 4") else 0.9 if "rude" in t else 0.3 for t in items])  # noqa: E731
    table, pairs = check(rule, 0.5, toxigen=str(tmp_path / "published" / "annotated_test.parquet"), limit=100)
    [row] = table
    kept = [(t, 1 + 4 * s) for t, s in rows if not t.endswith(" 4")]
    scores, human = rule([t for t, _ in kept]), np.array([h for _, h in kept])
    assert row.n == len(kept) == 39 and row.dataset == "toxigen"
    assert row.roc_auc == pytest.approx(roc_auc_score(human > 3, scores))
    assert row.spearman == pytest.approx(spearmanr(scores, human).statistic)
    assert row.accuracy == pytest.approx(((scores >= 0.5) == (human > 3)).mean())
    np.testing.assert_allclose(pairs["toxigen"][1], (human - 1) / 4)


@pytest.mark.slow  # about 45 s: the command in its own process, a classifier, MLflow
def test_the_check_command_prints_a_table_equal_to_direct_computations(tmp_path):
    from detox.core.calibration import load
    from detox.data.corpora import clean_post

    data = tmp_path / "published"
    write_published(data)
    model = tiny_classifier(tmp_path / "classifier", labels=("neutral", "toxic"), seed=5)
    out = tmp_path / "check"
    command = [sys.executable, "-m", "detox.scorer_check", "--model", str(model), "--toxic-label", "toxic",
               "--activation", "softmax", "--rtp", str(data / "prompts.jsonl"), "--pol", str(data / "pol.ndjson.zst"),
               "--toxigen", str(data / "annotated_test.parquet"), "--limit", "50", "--calibrate", "--out", str(out)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    print(result.stdout)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "spearman" in result.stdout and "roc_auc" in result.stdout and "Calibration onto Perspective" in result.stdout
    table = pd.read_csv(out / "scorer_check.csv").set_index("dataset")

    # the references, read here from the files as published (a null score, a post without TOXICITY left out)
    rtp = [json.loads(line) for line in (data / "prompts.jsonl").read_text().splitlines()]
    rtp = [(row[p]["text"], row[p]["toxicity"]) for row in rtp for p in ("prompt", "continuation")
           if row[p]["toxicity"] is not None]
    threads = [json.loads(line) for line in zstandard.ZstdDecompressor().decompressobj().decompress(
        (data / "pol.ndjson.zst").read_bytes()).decode().splitlines()]
    pol = [(clean_post(p["com"]), p["perspectives"]["TOXICITY"]) for t in threads for p in t["posts"]
           if "TOXICITY" in p.get("perspectives", {})]
    human = pd.read_parquet(data / "annotated_test.parquet")
    references = {"rtp": (rtp, 0.5, False), "pol": (pol, 0.5, False),
                  "toxigen": (list(zip(human["text"], human["toxicity_human"])), 3.0, True)}
    assert len(rtp) == 59 and len(pol) == 24 and len(human) == 40  # every text is within --limit 50 but RTP's
    for name, (rows, cut, strictly) in references.items():
        if len(rows) > 50:  # the command's seeded sample of 50
            chosen = np.sort(np.random.default_rng(0).choice(len(rows), size=50, replace=False))
            rows = [rows[i] for i in chosen]
        scores = direct_scores(model, [t for t, _ in rows])
        values = np.array([v for _, v in rows])
        toxic = values > cut if strictly else values >= cut
        row = table.loc[name]
        assert row["n"] == len(rows)
        assert row["spearman"] == pytest.approx(spearmanr(scores, values).statistic, abs=1e-6)
        assert row["roc_auc"] == pytest.approx(roc_auc_score(toxic, scores), abs=1e-6)
        assert row["reference_toxic"] == pytest.approx(toxic.mean())
        assert row["scorer_toxic"] == pytest.approx((scores >= 0.5).mean())
        assert row["accuracy"] == pytest.approx(((scores >= 0.5) == toxic).mean())

    # the calibration: fitted on a seeded half of the Perspective-scored texts, checked on the other
    sample = [rtp[i] for i in np.sort(np.random.default_rng(0).choice(len(rtp), size=50, replace=False))]
    scores = np.concatenate([direct_scores(model, [t for t, _ in sample]), direct_scores(model, [t for t, _ in pol])])
    values = np.array([v for _, v in sample] + [v for _, v in pol])
    order = np.random.default_rng(0).permutation(len(scores))
    fitted, held = order[:len(order) // 2], order[len(order) // 2:]
    iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(scores[fitted], values[fitted])
    calibration = load(out / "calibration.json")
    np.testing.assert_allclose(calibration(scores[held]), iso.predict(scores[held]), atol=1e-6)
    checked = calibration.checked_on
    assert checked["texts"] == len(held)
    assert checked["mean_abs_difference_after"] == pytest.approx(np.abs(iso.predict(scores[held]) - values[held]).mean())
    assert checked["mean_abs_difference_before"] == pytest.approx(np.abs(scores[held] - values[held]).mean())

    # the figure and the MLflow run, with the scorer's identity as a param and each figure as a metric
    assert (out / "scorer_check.png").stat().st_size > 10_000
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["detox-scorer-check"], output_format="list")[0]
    assert run.data.params["scorer"].startswith("classifier files:") and "files" in run.data.params["scorer_identity"]
    assert run.data.metrics["toxigen_roc_auc"] == pytest.approx(table.loc["toxigen", "roc_auc"])
    assert {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)} == {
        "scorer_check.csv", "scorer_check.md", "scorer_check.png", "calibration.json"}


def test_readers_name_a_file_that_is_not_in_the_published_format(tmp_path):
    from detox.core.schema import ConfigError
    from detox.data.evalsets import load_rtp_scores, load_toxigen_annotated

    bad = tmp_path / "annotated.parquet"
    pd.DataFrame({"text": ["a"], "toxicity": [3.0]}).to_parquet(bad)
    with pytest.raises(ConfigError, match=r"annotated.parquet: no column\(s\) \['toxicity_human'\]"):
        load_toxigen_annotated(bad)
    pd.DataFrame({"text": ["a"], "toxicity_human": [7.0]}).to_parquet(bad)
    with pytest.raises(ConfigError, match="toxicity_human=7.0, expected a rating in"):
        load_toxigen_annotated(bad)
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "no object"}\n')
    with pytest.raises(ConfigError, match="prompts.jsonl:1: expected an object with prompt.text"):
        load_rtp_scores(tmp_path / "prompts.jsonl")
