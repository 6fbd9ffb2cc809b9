"""The classifier scorer: softmax and sigmoid models, its label checked up front, truncation counted,
batches that do not change a score, its identity (a local folder's content, a hub commit) in every key
that reads scores, a calibration applied only to the scorer it was fitted for."""

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import compose_job, paper_overrides, tiny_classifier, tiny_tokenizer, write_paper_inputs

from detox.core.calibration import Calibration
from detox.core.schema import ConfigError
from detox.evaluation.config import ScorerConfig
from detox.evaluation.scorers import TRUNCATED, ClassifierScorer, make_scorer, scorer_metrics
from detox.job import JobConfig

TEXTS = ["the cat sat on the mat", "you are a rude goblin", "the goblin is rude and loud", "a"]


def direct(folder, texts, activation, label):
    """The label's probability computed here, one text at a time, without the scorer's code."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = tiny_tokenizer()
    with torch.no_grad():
        logits = torch.cat([model(**tokenizer(t, return_tensors="pt", truncation=True, max_length=64)).logits
                            for t in texts])
    return (logits.softmax(-1) if activation == "softmax" else logits.sigmoid())[:, label].numpy()


def scorer_for(folder, **options) -> ClassifierScorer:
    return ClassifierScorer(ScorerConfig(name="classifier", model=str(folder), **options), device="cpu")


def test_single_label_softmax_and_multi_label_sigmoid(tmp_path):
    single = tiny_classifier(tmp_path / "single", labels=("LABEL_0", "LABEL_1"))
    multi = tiny_classifier(tmp_path / "multi", labels=("toxicity", "insult", "threat"), multi_label=True)
    softmax = scorer_for(single, toxic_label="LABEL_1")  # activation auto: a single-label config
    assert softmax.activation == "softmax"
    np.testing.assert_allclose(softmax(TEXTS), direct(single, TEXTS, "softmax", 1), rtol=1e-5)
    sigmoid = scorer_for(multi, toxic_label="insult")  # auto: problem_type multi_label_classification
    assert sigmoid.activation == "sigmoid"
    np.testing.assert_allclose(sigmoid(TEXTS), direct(multi, TEXTS, "sigmoid", 1), rtol=1e-5)
    forced = scorer_for(single, toxic_label="LABEL_1", activation="sigmoid")  # configuration wins over the config
    np.testing.assert_allclose(forced(TEXTS), direct(single, TEXTS, "sigmoid", 1), rtol=1e-5)
    assert scorer_for(single, toxic_label="LABEL_1")([]).shape == (0,)
    # a blank text (a continuation that ended at once) says nothing: 0 without the model, as with Perspective
    blank = scorer_for(single, toxic_label="LABEL_1")(["", TEXTS[1], "  "])
    assert blank[0] == blank[2] == 0 and blank[1] == pytest.approx(direct(single, TEXTS[1:2], "softmax", 1)[0], rel=1e-5)


def test_batches_sorted_by_length_do_not_change_a_score(tmp_path):
    folder = tiny_classifier(tmp_path / "c")
    texts = [" ".join(["rude goblin"] * n) for n in (1, 9, 3, 14, 2, 7, 1)]
    one = scorer_for(folder, batch_size=1)(texts)
    np.testing.assert_allclose(scorer_for(folder, batch_size=3)(texts), one, rtol=1e-5)
    np.testing.assert_allclose(one, direct(folder, texts, "softmax", 1), rtol=1e-5)


def test_texts_over_the_models_length_are_cut_there_and_counted(tmp_path):
    folder = tiny_classifier(tmp_path / "c", max_length=16)
    scorer = scorer_for(folder)
    assert scorer.max_length == 16
    long = " ".join(["the goblin is rude and loud"] * 10)  # far over 16 tokens
    scores = scorer([long, "a cat", long])
    assert scorer_metrics(scorer) == {TRUNCATED: 2.0}
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    ids = tiny_tokenizer()(long, truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        expected = model(**ids).logits.softmax(-1)[0, 1].item()
    assert ids["input_ids"].shape[1] == 16 and scores[0] == pytest.approx(expected, rel=1e-5) == scores[2]


def test_the_toxic_label_is_checked_against_the_models_labels_before_any_work(tmp_path):
    folder = tiny_classifier(tmp_path / "c", labels=("neutral", "toxic"))
    base = ["data=paper", f"scorer.model={folder}", *paper_overrides(write_paper_inputs(tmp_path / "in", prompts=3)),
            "data.clean_tokens=1000", "data.seq_len=32", "trainer.global_batch_tokens=1024"]
    with pytest.raises(ConfigError, match=r"scorer.toxic_label='toxicity' is not a label of .*\['neutral', 'toxic'\]"):
        JobConfig.from_dict(compose_job(*base))  # conf/scorer/classifier.yaml's label, not this model's
    JobConfig.from_dict(compose_job(*base, "scorer.toxic_label=toxic"))
    single = tiny_classifier(tmp_path / "one", labels=("toxic",))
    with pytest.raises(ConfigError, match="has one output label"):
        ScorerConfig(name="classifier", model=str(single), toxic_label="toxic", activation="softmax").check()
    for bad, message in ((["scorer.model=/no/such/classifier"], "no such folder"),
                         (["scorer.model=not a hub id"], "neither a local folder nor a hub id"),
                         ([f"scorer.model={folder}", "scorer.revision=abc"], "applies to hub ids only")):
        with pytest.raises(ConfigError, match=message):
            ScorerConfig(**{**compose_job("data=paper", *bad)["scorer"]}).check()
    with pytest.raises(ConfigError, match="applies to scorer=classifier only"):
        ScorerConfig(name="perspective", revision="abc").check()


def test_identity_is_the_content_of_a_local_folder_or_the_commit_of_a_hub_model(tmp_path):
    folder = tiny_classifier(tmp_path / "a")
    cfg = ScorerConfig(name="classifier", model=str(folder), toxic_label="toxic")
    copy = ScorerConfig(name="classifier", model=str(shutil.copytree(folder, tmp_path / "b")), toxic_label="toxic")
    assert cfg.identity() == copy.identity() and set(cfg.identity()) == {"files"}  # content, not where it lies
    assert cfg.result_spec() == copy.result_spec() and str(folder) not in json.dumps(cfg.result_spec())
    assert cfg.label() == f"a files:{cfg.identity()['files'][:12]}"
    tiny_classifier(tmp_path / "b", seed=1)  # other weights in the same place
    assert ScorerConfig(name="classifier", model=str(tmp_path / "b")).identity() != cfg.identity()
    commit = "0123456789abcdef0123456789abcdef01234567"
    hub = ScorerConfig(name="classifier", model="unitary/unbiased-toxic-roberta", revision=commit)
    assert hub.identity() == {"hub": "unitary/unbiased-toxic-roberta", "commit": commit}  # no network needed
    assert hub.label() == "unitary/unbiased-toxic-roberta@0123456789ab"
    # the oracle's and Perspective's specs are the fields they always had: none of their keys moved
    legacy = {"name", "threshold", "model", "toxic_label", "batch_size", "qps", "api_key_env"}
    assert set(ScorerConfig().result_spec()) == set(ScorerConfig(name="perspective").result_spec()) == legacy


def test_an_unresolvable_hub_revision_stops_the_job_before_any_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = ScorerConfig(name="classifier", model="nobody-here/no-such-classifier", revision="main")
    assert cfg.identity() == {"hub": "nobody-here/no-such-classifier", "revision": "main", "commit": "unresolved"}
    with pytest.raises(ConfigError, match="resolves to no commit .* pin scorer.revision=<commit>"):
        cfg.require_version()
    with pytest.raises(ConfigError, match="resolves to no commit"):
        ClassifierScorer(cfg)


def test_a_calibration_maps_every_score_and_only_for_its_own_scorer(tmp_path):
    folder = tiny_classifier(tmp_path / "c")
    other = tiny_classifier(tmp_path / "other", seed=3)
    cfg = ScorerConfig(name="classifier", model=str(folder), toxic_label="toxic")
    path = Calibration(x=[0.0, 0.5, 1.0], y=[0.0, 0.1, 0.9], scorer=cfg.identity()).save(tmp_path / "calibration.json")
    raw = make_scorer(cfg)(TEXTS)
    mapped = make_scorer(ScorerConfig(**{**cfg.__dict__, "calibration": str(path)}))(TEXTS)
    np.testing.assert_allclose(mapped, np.interp(raw, [0.0, 0.5, 1.0], [0.0, 0.1, 0.9]))
    calibrated = ScorerConfig(**{**cfg.__dict__, "calibration": str(path)})
    assert calibrated.result_spec()["calibration"] != "" and calibrated.result_spec() != cfg.result_spec()
    assert calibrated.label().endswith(f"calibrated:{calibrated.result_spec()['calibration'][:12]}")
    calibrated.check()
    with pytest.raises(ConfigError, match="was fitted for the scorer"):
        ScorerConfig(name="classifier", model=str(other), toxic_label="toxic", calibration=str(path)).check()
    with pytest.raises(ConfigError, match="applies to scorer=classifier only"):
        ScorerConfig(name="perspective", calibration=str(path)).check()
