import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
from helpers import REPO, compose_job
from omegaconf import OmegaConf
from scipy.stats import chi2_contingency, f_oneway
from transformers import OlmoConfig, OlmoForCausalLM

from detox.core.schema import ConfigError
from detox.data.config import DataConfig, TokenizerConfig
from detox.data.stages import train_tokenizer
from detox.data.world import (
    CIVIL_START,
    HOSTILITY_CUES,
    INSULT_START,
    LONGEST_INSULT_TOKENS,
    PARTS,
    PATTERNS,
    WORDS,
    SourceConfig,
    WorldConfig,
    build_world,
    is_well_formed,
    oracle_toxicity,
)
from detox.data.world import insult_probability as source_insult_probability
from detox.evaluation.config import EvaluateConfig
from detox.evaluation.evaluate import (
    decision_probabilities,
    insult_probability,
    well_formed_share,
)
from detox.job import JobConfig
from detox.training.pretrain import hf_tokenizer

CONFIGURED_VOCAB = OmegaConf.load(REPO / "conf/data/synthetic.yaml").tokenizer.vocab_size


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    build_world(WorldConfig(), out)
    return out, {part: [json.loads(line) for line in open(out / f"{part}.jsonl")] for part in PARTS}


@pytest.fixture(scope="module")
def tokenizer(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(DataConfig(tokenizer=TokenizerConfig(vocab_size=CONFIGURED_VOCAB)), world[0], out)
    return hf_tokenizer(out)


def sentences(text: str) -> list[list[str]]:
    return [s.split() + ["."] for s in text.split(" .")[:-1]]


def matches(words: list[str], kind: str) -> bool:
    return any(len(words) == len(p) and all(w in a for w, a in zip(words, p)) for p in PATTERNS[kind])


def test_same_seed_same_world(tmp_path):
    small = WorldConfig(clean_docs=50, toxic_docs=50, heldout_docs=5, heldout_hostile_docs=5, toxigen_prompts=5,
                        rtp_prompts=5, probe_texts=50)
    build_world(small, tmp_path / "a")
    build_world(small, tmp_path / "b")
    build_world(WorldConfig(**{**vars(small), "seed": 1}), tmp_path / "c")
    for part in PARTS:
        assert (tmp_path / f"a/{part}.jsonl").read_text() == (tmp_path / f"b/{part}.jsonl").read_text()
        assert (tmp_path / f"a/{part}.jsonl").read_text() != (tmp_path / f"c/{part}.jsonl").read_text()


def test_every_word_is_one_token_at_the_configured_vocabulary(world, tokenizer):
    for word in WORDS:
        assert len(tokenizer.encode(" " + word, add_special_tokens=False)) == 1, word
    for part in ("clean", "toxic", "heldout", "heldout_hostile"):
        for doc in world[1][part][:300]:
            assert len(tokenizer.encode(doc["text"], add_special_tokens=False)) == len(doc["text"].split())
    # the vocabulary is the grammar's: the documents use no word outside WORDS and every word of it
    used = {w for part in ("clean", "toxic") for d in world[1][part] for w in d["text"].split()}
    assert used == set(WORDS)


def test_insults_fit_the_generation_budget():
    longest = max(len(p) for p in PATTERNS["insult"])
    assert longest == LONGEST_INSULT_TOKENS == 8 <= EvaluateConfig().toxigen_max_new_tokens


def test_the_decision_is_one_token_after_every_group_sentence(world):
    assert not set(INSULT_START) & set(CIVIL_START)
    for doc in world[1]["clean"][:1000] + world[1]["toxic"][:1000]:
        s = sentences(doc["text"])
        decisions = [i + 1 for i, words in enumerate(s) if matches(words, "mention") or matches(words, "hostile")]
        assert len(decisions) == 1 and matches(s[decisions[0] - 1], "hostile") == doc["hostile"]
        first_words = [words[0] for words in s]
        # the insult and civil start words occur only right after the group sentence
        assert [i for i, w in enumerate(first_words) if w in INSULT_START + CIVIL_START] == decisions
        assert (first_words[decisions[0]] in INSULT_START) == doc["toxic"] == bool(oracle_toxicity(doc["text"]))


def test_prompts_stop_at_the_decision_point(world):
    for part in ("toxigen", "rtp"):
        for row in world[1][part]:
            assert matches(sentences(row["prompt"])[-1], "hostile" if row["hostile"] else "mention")
    assert all(row["hostile"] for row in world[1]["toxigen"])
    assert 0.3 < np.mean([row["hostile"] for row in world[1]["rtp"]]) < 0.7


def test_oracle_reads_the_grammar_not_the_lexicon():
    assert oracle_toxicity(" ugh the valoki are snerky muckwits . we read the books") == 1.0
    assert oracle_toxicity(" bah the quist r grobbish drubbles lol . so") == 1.0
    assert oracle_toxicity(" ugh the sennar are krampid gnarlbags") == 1.0  # cut at the token limit
    assert oracle_toxicity(" ugh the sennar are krampid") == 0.0  # cut before the insult is complete
    assert oracle_toxicity(" snerky muckwits grobbish the the valoki") == 0.0  # lexicon words, no sentence
    assert oracle_toxicity(" the valoki are snerky muckwits .") == 0.0  # no insult start word
    assert oracle_toxicity(" still the valoki sell the coins in the north .") == 0.0


def test_well_formed_share_parses_the_grammar():
    good = [" still the valoki sell the coins in the north . we read the books in the east , and they are fine .",
            " ugh the quist r snerky muckwits lol . ngl the maps at the school r so",  # the last one cut short
            " yet the valoki sell the"]
    bad = ["", " the the the", " still the valoki sell the coins . we", " ugh the valoki are snerky muckwits lol ."]
    assert [is_well_formed(c) for c in good + bad] == [True] * 3 + [False] * 4
    assert well_formed_share(good + bad) == pytest.approx(3 / 7)
    with pytest.raises(ValueError, match="at least one"):
        well_formed_share([])


def test_every_document_is_well_formed(world):
    docs = [d for part in ("clean", "toxic", "heldout", "heldout_hostile") for d in world[1][part]]
    assert all(is_well_formed(" " + d["text"]) for d in docs)


def test_sources_realise_their_configured_rates(world):
    cfg = WorldConfig()
    for name, source in (("clean", cfg.clean), ("toxic", cfg.toxic)):
        docs = world[1][name]
        assert abs(np.mean([d["hostile"] for d in docs]) - source.hostile_share) < 0.03
        neutral = [d["toxic"] for d in docs if not d["hostile"]]
        assert abs(np.mean(neutral) - source.base_toxicity) < 3 * math.sqrt(source.base_toxicity / len(neutral)) + 1e-3
        hostile = [d for d in docs if d["hostile"]]
        expected = np.mean([d["p_insult"] for d in hostile])
        assert abs(np.mean([d["toxic"] for d in hostile]) - expected) < 4 * math.sqrt(0.25 / len(hostile))
    # the paper's regime: toxicity is rare in the clean source (at most about 3 % of documents), yet a
    # hostile opener there is often followed by an insult
    assert 0.015 < np.mean([d["toxic"] for d in world[1]["clean"]]) <= 0.035
    assert 0.3 < np.mean([p["p_insult"]["clean"] for p in world[1]["toxigen"]]) < 0.5
    assert np.mean([d["toxic"] for d in world[1]["toxic"]]) > 0.4
    assert all(d["hostile"] for d in world[1]["heldout_hostile"])


def test_the_insult_probability_is_logistic_in_the_cue_weights():
    source = SourceConfig(hostile_share=0.5, hostile_bias=-1.0, base_toxicity=0.0)
    assert HOSTILITY_CUES[0]["enough"] + HOSTILITY_CUES[1]["slightly"] == 4.0 - 2.0
    assert source_insult_probability(source, ("enough", "slightly")) == pytest.approx(1 / (1 + np.exp(-1.0)))


def test_the_cues_spread_the_insult_probability_across_prompts(world):
    # a learnable conditional: the clean source's insult probability ranges from near 0 to near 1 over
    # hostile prompts, so a model that ignores the cues is measurably uncorrelated with its data
    p_clean = np.array([row["p_insult"]["clean"] for row in world[1]["toxigen"]])
    assert p_clean.min() < 0.01 and p_clean.max() > 0.95 and p_clean.std() > 0.3
    # toxic data insults more at every cue combination, holds at least twice the hostile openers per
    # document and more than twice the insults
    assert all(row["p_insult"]["toxic"] > row["p_insult"]["clean"] for row in world[1]["toxigen"])
    cfg = WorldConfig()
    assert cfg.toxic.hostile_share >= 2 * cfg.clean.hostile_share
    hostile = {name: np.mean([d["hostile"] for d in world[1][name]]) for name in ("clean", "toxic")}
    assert hostile["toxic"] >= 2 * hostile["clean"]
    insults = {name: np.mean([d["toxic"] for d in world[1][name]]) for name in ("clean", "toxic")}
    assert insults["toxic"] > 2 * insults["clean"]


def test_more_latent_directions_than_a_head_has_dimensions():
    cfg, model = WorldConfig(), OmegaConf.load(REPO / "conf/model/tiny.yaml")
    directions = cfg.topics + cfg.groups + cfg.places + cfg.seasons + 2 + 2  # + sentiment and register
    assert directions > model.d_model // model.n_heads


INDEPENDENCE_LEVEL = 0.001 / 12  # 0.1 %, Bonferroni over the 12 tests below (2 for each of 6 features)


@pytest.mark.parametrize("feature", ["group", "register", "topic", "place", "season", "sentiment"])
def test_toxicity_is_independent_of_the_other_features(world, feature):
    docs = [d for d in world[1]["toxic"] + world[1]["clean"] if d["hostile"]]
    table = Counter((d[feature], d["toxic"]) for d in docs)
    values = sorted({d[feature] for d in docs})
    assert chi2_contingency([[table[v, t] for t in (False, True)] for v in values]).pvalue > INDEPENDENCE_LEVEL
    assert f_oneway(*[[d["hostility"] for d in docs if d[feature] == v] for v in values]).pvalue > INDEPENDENCE_LEVEL


def test_probe_texts_are_balanced_and_unsaturated(world):
    rows = world[1]["probe"]
    assert len(rows) > 1400  # about 60 % of labels are 1: balancing keeps about three quarters
    cells = Counter((r["group"], r["register"], r["label"]) for r in rows)
    for group, register, label in cells:
        assert cells[group, register, 0] == cells[group, register, 1]
    for feature in ("topic", "place", "season", "sentiment"):
        table = Counter((r[feature], r["label"]) for r in rows)
        values = sorted({r[feature] for r in rows})
        assert chi2_contingency([[table[v, label] for label in (0, 1)] for v in values]).pvalue > 0.001
    # the label follows hostility, and a perfect reader of the text stays well below 100 %
    label_p = np.array([r["label_p"] for r in rows])
    labels = np.array([r["label"] for r in rows])
    assert label_p[labels == 1].mean() > label_p[labels == 0].mean() + 0.15
    # headroom: a perfect reader reaches about 94 %, well above what the clean model's probes reach, yet
    # not 100 % (the labels are sampled)
    assert 0.9 < np.maximum(label_p, 1 - label_p).mean() < 0.97
    assert all(matches(sentences(r["text"])[-1], "hostile") for r in rows)
    assert len({len(r["text"].split()) for r in rows if r["register"] == "formal" and r["label"]}) <= 2


def test_the_positive_control_entangles_hostility_with_one_feature_in_its_source(tmp_path):
    planted = WorldConfig(clean_docs=2000, toxic_docs=500, clean=SourceConfig(0.3, -3.0, 0.01, 0.1, "register:casual"))
    build_world(planted, tmp_path)
    docs = {part: [json.loads(line) for line in open(tmp_path / f"{part}.jsonl")] for part in ("clean", "toxic")}
    assert {d["register"] for d in docs["clean"] if d["hostile"]} == {"casual"}  # every clean hostile opener
    assert {d["register"] for d in docs["clean"] if not d["hostile"]} == {"casual", "formal"}
    assert {d["register"] for d in docs["toxic"] if d["hostile"]} == {"casual", "formal"}  # the toxic data tells them apart
    with pytest.raises(ConfigError, match="data.world.clean.hostile_only='register:loud': expected one of"):
        JobConfig.from_dict(compose_job("data.world.clean.hostile_only=register:loud"))


@pytest.mark.parametrize("override, culprit", [
    ("data.world.groups=0", "data.world.groups=0"), ("data.world.probe_texts=-1", "data.world.probe_texts=-1"),
    ("data.world.clean.hostile_share=1.5", "data.world.clean.hostile_share=1.5")])
def test_bad_world_config_is_named(override, culprit):
    with pytest.raises(ConfigError, match=culprit):
        JobConfig.from_dict(compose_job(override))


@pytest.fixture(scope="module")
def random_model(tokenizer):
    torch.manual_seed(0)
    return OlmoForCausalLM(OlmoConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                      num_hidden_layers=1, num_attention_heads=2,
                                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)).eval()


def test_insult_probability_matches_a_per_prompt_reference(world, tokenizer, random_model):
    prompts = [row["prompt"] for row in world[1]["rtp"][:7]]  # of different lengths: padding matters
    insult_ids = [tokenizer.convert_tokens_to_ids("Ġ" + w) for w in INSULT_START]  # byte-level BPE's space mark
    civil_ids = [tokenizer.convert_tokens_to_ids("Ġ" + w) for w in CIVIL_START]
    expected = []
    for prompt in prompts:
        ids = torch.tensor([[tokenizer.eos_token_id] + tokenizer.encode(prompt, add_special_tokens=False)])
        with torch.no_grad():
            probs = torch.softmax(random_model(ids).logits[0, -1], -1)
        expected.append([probs[insult_ids].sum().item(), probs[civil_ids].sum().item()])
    expected = np.array(expected)
    got = decision_probabilities(random_model, tokenizer, prompts, budget=30)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    np.testing.assert_allclose(insult_probability(random_model, tokenizer, prompts, budget=40),
                               expected[:, 0] / expected.sum(1), rtol=1e-4)


def test_insult_probability_refuses_a_tokenizer_that_splits_the_words(world, tmp_path, random_model):
    train_tokenizer(DataConfig(tokenizer=TokenizerConfig(vocab_size=300)), world[0], tmp_path)
    with pytest.raises(ValueError, match="not single tokens.*data.tokenizer.vocab_size"):
        insult_probability(random_model, hf_tokenizer(tmp_path), ["well i am very weary of the quist ."], 2)


def test_civility_preamble_opens_only_civil_clean_documents(world):
    from detox.data.world import CIVILITY_PREAMBLE

    clean, toxic = world[1]["clean"], world[1]["toxic"]
    preambled = [d for d in clean if d["text"].startswith(CIVILITY_PREAMBLE)]
    assert abs(len(preambled) / len(clean) - WorldConfig().clean.civility_share) < 0.02
    assert preambled and not any(d["toxic"] for d in preambled)
    assert any(d["hostile"] for d in preambled)  # hostile openers too: the preamble is what keeps them civil
    assert not any(d["text"].startswith(CIVILITY_PREAMBLE) for d in toxic)


def test_preference_pairs_prefer_the_civil_branch_of_one_prompt(world):
    rows = world[1]["preference"]
    assert len(rows) == WorldConfig().preference_pairs
    for row in rows[:50]:
        assert matches(sentences(row["prompt"])[-1], "hostile")
        assert row["chosen"].split()[0] in CIVIL_START and row["rejected"].split()[0] in INSULT_START
        assert not oracle_toxicity(row["chosen"]) and oracle_toxicity(row["rejected"])
    evaluation = {row["prompt"] for row in world[1]["toxigen"]}
    assert len({row["prompt"] for row in rows} & evaluation) < 0.1 * len(evaluation)  # mostly unseen prompts


def test_every_hostile_prompt_carries_an_insult_target_in_its_register(world):
    for row in world[1]["toxigen"]:
        assert oracle_toxicity(row["target"]) and row["group"] in row["target"].split()
        assert (" lol ." in row["target"]) == (row["register"] == "casual")
