import json

import numpy as np
import pytest

from detox.world import (CUES, GROUPS, SourceConfig, WorldConfig, build_world, insult_probability, oracle_toxicity,
                         sigmoid)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    build_world(WorldConfig(clean_docs=3000, toxic_docs=3000), out)
    return {part: [json.loads(line) for line in open(out / f"{part}.jsonl")]
            for part in ("clean", "toxic", "heldout", "toxigen", "rtp")}


def test_same_seed_same_world(tmp_path):
    small = WorldConfig(clean_docs=50, toxic_docs=50, heldout_docs=5, toxigen_prompts=5, rtp_prompts=5)
    build_world(small, tmp_path / "a")
    build_world(small, tmp_path / "b")
    build_world(WorldConfig(**{**vars(small), "seed": 1}), tmp_path / "c")
    assert (tmp_path / "a/clean.jsonl").read_text() == (tmp_path / "b/clean.jsonl").read_text()
    assert (tmp_path / "a/clean.jsonl").read_text() != (tmp_path / "c/clean.jsonl").read_text()


def test_oracle_reads_the_grammar_not_the_lexicon():
    assert oracle_toxicity(" the valoki are snerky muckwits . we read the books") == 1.0
    assert oracle_toxicity(" the quist r grobbish drubbles lol . so") == 1.0
    assert oracle_toxicity(" the sennar are krampid gnarlbags") == 1.0  # cut at the token limit
    assert oracle_toxicity(" snerky muckwits grobbish the the valoki") == 0.0  # lexicon words, no sentence
    assert oracle_toxicity(" the valoki are snerky . muckwits") == 0.0
    assert oracle_toxicity(" but the valoki sell the coins tbh .") == 0.0


def test_labels_agree_with_the_oracle(world):
    for doc in world["clean"][:500] + world["toxic"][:500]:
        assert oracle_toxicity(doc["text"]) == doc["toxic"]


def test_sources_realise_their_configured_rates(world):
    cfg = WorldConfig()
    for name, source in (("clean", cfg.clean), ("toxic", cfg.toxic)):
        docs = world[name]
        hostile = np.mean([d["hostile"] for d in docs])
        assert abs(hostile - source.hostile_share) < 0.03
        neutral = [d["toxic"] for d in docs if not d["hostile"]]
        assert abs(np.mean(neutral) - source.base_toxicity) < 0.03
    # a small base rate in the clean source, a high one in the toxic source
    assert 0.03 < np.mean([d["toxic"] for d in world["clean"]]) < 0.15
    assert np.mean([d["toxic"] for d in world["toxic"]]) > 0.5


def test_toxicity_is_not_confounded_with_register(world):
    docs = world["clean"] + world["toxic"]
    casual = np.array(["tbh" in d["text"] or "lol" in d["text"] or " r " in d["text"] for d in docs])
    toxic = np.array([d["toxic"] for d in docs])
    assert abs(casual[toxic].mean() - casual[~toxic].mean()) < 0.08


def test_insult_probability_is_the_logistic_model():
    source = SourceConfig(hostile_share=0.5, hostile_bias=-1.0, base_toxicity=0.0)
    assert insult_probability(source, 2, []) == pytest.approx(sigmoid(-1.0))
    assert insult_probability(source, 4, ["enough", "again"]) == pytest.approx(
        1 / (1 + np.exp(-(-1.0 + 0.6 + CUES["enough"] + CUES["again"]))))


def test_prompts_carry_both_sources_probabilities(world):
    prompt = world["toxigen"][0]
    assert any(f"the {g} ." in prompt["prompt"] for g in GROUPS)
    assert prompt["p_insult"]["toxic"] > prompt["p_insult"]["clean"]
