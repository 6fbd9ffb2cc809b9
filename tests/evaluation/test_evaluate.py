import json
import weakref
from collections import defaultdict

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers import OlmoConfig, OlmoForCausalLM

from detox.evaluation.config import EvaluateConfig
from detox.evaluation.evaluate import (
    ce_loss,
    evaluate,
    generate,
    insult_probability,
    per_group_rates,
    token_batches,
    windows,
)
from detox.evaluation.prompt_sets import PROMPT_SETS, PromptSet
from detox.training.pretrain import hf_tokenizer

CLEAN = {"clean": ["the valoki sell the coins ."]}
SEQ_LEN = 64  # the tiny model's context
QUICK = EvaluateConfig(toxigen_max_new_tokens=4, rtp_samples=2, rtp_max_new_tokens=4, batch_size=2)


@pytest.fixture(scope="module")
def model_and_tokenizer(world_data):
    tokenizer = hf_tokenizer(world_data[1] / "tokenizer")
    torch.manual_seed(0)
    model = OlmoForCausalLM(OlmoConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                       num_hidden_layers=1, num_attention_heads=2,
                                       pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)).eval()
    return model, tokenizer


def prompt_rows(*prompts: str, **fields) -> list[dict]:
    return [{"prompt": p, **fields} for p in prompts]


def generations(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "generations.jsonl").read_text().splitlines()]


def every_third_toxic():
    """A scorer that calls every third text toxic, in the order it is asked, and records its calls."""
    calls = []

    def scorer(texts):
        calls.append(len(texts))
        start = sum(calls[:-1])
        return np.array([1.0 if (start + i) % 3 == 0 else 0.0 for i in range(len(texts))])

    return scorer, calls


def test_ce_loss_matches_a_per_document_reference(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    texts = ["the valoki sell the coins .", "we read the books each morning , and they are fine . indeed , ok ."]
    total, count = 0.0, 0
    for text in texts:  # unpadded, one document at a time, summed over tokens
        ids = torch.tensor([tokenizer.encode(tokenizer.eos_token + text + tokenizer.eos_token, add_special_tokens=False)])
        with torch.no_grad():
            loss = model(ids, labels=ids).loss.item()
        total, count = total + loss * (ids.shape[1] - 1), count + ids.shape[1] - 1
    assert ce_loss(model, tokenizer, texts, batch_size=2, seq_len=SEQ_LEN) == pytest.approx(total / count, rel=1e-5)


def test_metrics_follow_their_definitions(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    rows = {"toxigen": prompt_rows(*["i am weary of the valoki ."] * 4), "rtp": prompt_rows(*["the quist sell the coins ."] * 3)}
    cfg = EvaluateConfig(toxigen_max_new_tokens=4, rtp_samples=5, rtp_max_new_tokens=4, batch_size=2)
    # A scorer that calls every third text toxic, in order: the metrics can be computed by hand.
    scorer, calls = every_third_toxic()
    m = evaluate(model, tokenizer, rows, CLEAN, scorer, cfg, 0.5, 0, tmp_path, seq_len=SEQ_LEN, prefix="be kind . ")
    assert calls == [4, 15]
    assert m["toxigen"] == 50.0  # texts 0 and 3 of 4
    rtp = np.array([1.0 if (4 + i) % 3 == 0 else 0.0 for i in range(15)]).reshape(3, 5)
    assert m["rtp_expected_max_toxicity"] == pytest.approx(100 * rtp.max(1).mean())
    assert m["rtp_toxicity_probability"] == pytest.approx(100 * rtp.any(1).mean())
    assert m["rtp_sample_toxicity"] == pytest.approx(100 * rtp.mean())
    # the other unit: the mean score x 100 (here the scores are 0 or 1, so it equals the shares)
    assert m["toxigen_mean_score"] == 50.0 and m["rtp_mean_score"] == pytest.approx(100 * rtp.mean())
    written = generations(tmp_path)
    assert len(written) == 4 + 3
    assert [r["set"] for r in written] == ["toxigen"] * 4 + ["rtp"] * 3
    assert all(r["prompt"].startswith("be kind . ") for r in written)  # the prefix goes before every prompt
    assert [r["score"] for r in written[:4]] == [1.0, 0.0, 0.0, 1.0] and isinstance(written[0]["continuation"], str)
    assert [r["scores"] for r in written[4:]] == rtp.tolist() and all(len(r["continuations"]) == 5 for r in written[4:])
    assert "insult_probability" not in m and "ce_hostile" not in m  # only where the sources have them
    assert not any(name.startswith("toxigen_group_") for name in m)  # the rows name no group
    assert not any("p_insult" in r for r in written)


def test_decision_measures_on_the_world(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    p = {"clean": 0.1, "toxic": 0.5}  # the world's rows carry the decision point: `hostile` and `p_insult`
    hostile = ["i am weary of the valoki , seriously .", "the valoki are here , utterly ."]
    rows = {"toxigen": prompt_rows(*hostile, hostile=True, p_insult=p),
            "rtp": prompt_rows("we read the books .", hostile=False, p_insult=p) + prompt_rows(hostile[0], hostile=True,
                                                                                                 p_insult=p)}
    m = evaluate(model, tokenizer, rows, {"clean": ["the valoki sell the coins ."], "hostile": ["ugh the valoki ."]},
                 lambda texts: np.zeros(len(texts)), QUICK, 0.5, 0, tmp_path, seq_len=SEQ_LEN)
    assert m["insult_probability"] == pytest.approx(100 * insult_probability(model, tokenizer, hostile, 2).mean())
    # neutral: the RTP-like rows with `hostile` false, chosen from the data
    assert m["insult_probability_neutral"] == pytest.approx(
        100 * insult_probability(model, tokenizer, ["we read the books ."], 2).mean())
    assert 0 <= m["well_formed"] <= 100 and 0 < m["decision_mass"] <= 100 and m["ce_hostile"] > 0
    written = generations(tmp_path)
    assert [r["p_insult"] for r in written if r["set"] == "toxigen"] == \
        pytest.approx(insult_probability(model, tokenizer, hostile, 2).tolist())
    assert not any("p_insult" in r for r in written if r["set"] == "rtp")


def test_per_group_rates_against_a_direct_count():
    groups = ["a", "b", "a", "c", "b", "a"]
    rng = np.random.default_rng(0)
    scores = rng.random(6)
    expected = {g: 100 * sum(s >= 0.5 for s, h in zip(scores, groups) if h == g) / groups.count(g) for g in "abc"}
    assert per_group_rates(groups, scores, 0.5) == pytest.approx(expected)
    samples = rng.random((6, 4))
    expected = {g: 100 * np.mean([samples[i] >= 0.3 for i, h in enumerate(groups) if h == g]) for g in "abc"}
    assert per_group_rates(groups, samples, 0.3) == pytest.approx(expected)
    assert per_group_rates(groups[:1], [0.5], 0.5) == {"a": 100.0}  # at the threshold counts as toxic
    with pytest.raises(ValueError, match="do not match 6 prompts"):
        per_group_rates(groups, scores[:5], 0.5)


def test_per_group_rates_match_the_generations_file(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    groups = ["valoki", "quist", "valoki", "ember", "quist", "valoki", "valoki"]
    rows = {"toxigen": [{"prompt": f"i am weary of the {g} .", "group": g} for g in groups],
            "rtp": [{"prompt": "the quist sell the coins .", "group": "quist"}]}  # RTP-like rates are not per group
    scorer, _ = every_third_toxic()
    m = evaluate(model, tokenizer, rows, CLEAN, scorer, QUICK, 0.5, 0, tmp_path, seq_len=SEQ_LEN)
    by_group = defaultdict(list)  # independently: the written scores of each group's prompts
    for row, written in zip(rows["toxigen"], (r for r in generations(tmp_path) if r["set"] == "toxigen")):
        by_group[row["group"]].append(written["score"] >= 0.5)
    expected = {f"toxigen_group_{g}": 100 * sum(toxic) / len(toxic) for g, toxic in by_group.items()}
    assert {k: v for k, v in m.items() if "_group_" in k} == pytest.approx(expected)
    assert set(expected) == {"toxigen_group_valoki", "toxigen_group_quist", "toxigen_group_ember"}
    assert m["toxigen_group_valoki"] == 50.0  # prompts 0, 2, 5, 6: texts 0 and 6 are toxic


def test_the_table_chooses_the_prompt_sets(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    assert [s.name for s in PROMPT_SETS] == ["toxigen", "rtp"]
    # a set of the table without rows is skipped
    m = evaluate(model, tokenizer, {"toxigen": prompt_rows("i am weary of the valoki .")}, CLEAN,
                 lambda texts: np.ones(len(texts)), QUICK, 0.5, 0, tmp_path, seq_len=SEQ_LEN)
    assert m["toxigen"] == 100.0 and not any(name.startswith("rtp") for name in m)
    assert {r["set"] for r in generations(tmp_path)} == {"toxigen"}
    # a table of one new set: it alone is run, named and measured as the table says
    lines = PromptSet("lines", part="lines", decoding="nucleus", samples="rtp_samples",
                      max_new_tokens="toxigen_max_new_tokens", measures=("toxicity_rate", "toxicity_probability"))
    scorer, calls = every_third_toxic()
    m = evaluate(model, tokenizer, {"lines": prompt_rows("we read", "the valoki", "a quist")}, CLEAN, scorer, QUICK,
                 0.5, 0, tmp_path, seq_len=SEQ_LEN, sets=(lines,))
    assert calls == [3 * QUICK.rtp_samples]
    assert set(m) == {"lines", "lines_toxicity_probability", "ce_loss"}
    assert m["lines"] == pytest.approx(100 * 2 / 6) and m["lines_toxicity_probability"] == pytest.approx(100 * 2 / 3)
    assert [len(r["continuations"]) for r in generations(tmp_path)] == [2, 2, 2]
    # rows for a set the table lacks are an error, not silently ignored
    with pytest.raises(ValueError, match=r"unknown prompt sets \['lines'\]"):
        evaluate(model, tokenizer, {"lines": prompt_rows("we read")}, CLEAN, scorer, QUICK, 0.5, 0, tmp_path, seq_len=SEQ_LEN)


@pytest.mark.parametrize("change, culprit", [({"decoding": "beam"}, "decoding='beam'"),
                                             ({"max_new_tokens": "max_tokens"}, "max_new_tokens='max_tokens'"),
                                             ({"stop": "sentence"}, "stop='sentence'"),
                                             ({"measures": ("toxicity",)}, r"unknown measures \['toxicity'\]"),
                                             ({"world": ("toxicity_rate",)}, r"unknown world \['toxicity_rate'\]"),
                                             ({"samples": "rtp_samples"}, "greedy decoding gives one continuation")])
def test_a_bad_prompt_set_names_its_field(change, culprit):
    with pytest.raises(ValueError, match=culprit):
        PromptSet(**{"name": "x", "part": "x", "decoding": "greedy", "max_new_tokens": "toxigen_max_new_tokens", **change})


def test_a_toxigen_continuation_ends_at_its_first_line_break(monkeypatch, tmp_path):
    """ToxiGen's prompts are bullet lists: the continuation is the rest of the line, not the next bullets
    (evaluate.toxigen_stop=newline, the default); end_of_document keeps it whole."""
    from helpers import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer)
    continued = tokenizer.encode(" a rude goblin\n- the cat sat", add_special_tokens=False)

    def scripted(input_ids, **_):  # every prompt continued by the same tokens
        return torch.cat([input_ids, torch.tensor([continued] * len(input_ids))], dim=1)

    monkeypatch.setattr(model, "generate", scripted)
    prompts = ["- the dog ran\n-", "- what a lovely day\n-"]
    whole = generate(model, tokenizer, prompts, QUICK, sample=False, max_new_tokens=8, desc="t", seq_len=SEQ_LEN)
    assert whole == [[" a rude goblin\n- the cat sat"]] * 2
    assert generate(model, tokenizer, prompts, QUICK, sample=False, max_new_tokens=8, desc="t", seq_len=SEQ_LEN,
                    stop="newline") == [[" a rude goblin"]] * 2
    texts = []
    evaluate(model, tokenizer, {"toxigen": prompt_rows(*prompts)}, {"clean": ["the cat sat"]},
             lambda batch: texts.extend(batch) or np.zeros(len(batch)), QUICK, 0.5, 0, tmp_path, seq_len=SEQ_LEN)
    assert QUICK.toxigen_stop == "newline" and texts == [" a rude goblin"] * 2  # what is scored is the first line


class PeakTensorMemory(TorchDispatchMode):
    """The most bytes of tensor storage made by torch operations and alive at once while it is entered (what
    the evaluation itself allocates; the model's weights are not counted)."""

    def __init__(self):
        super().__init__()
        self.live, self.now, self.peak = {}, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                ptr = storage.data_ptr()
                if ptr not in self.live:  # a new storage (a view or an in-place result shares its input's)
                    self.live[ptr] = [storage.nbytes(), 0]
                    self.now += storage.nbytes()
                    self.peak = max(self.peak, self.now)
                self.live[ptr][1] += 1
                weakref.finalize(t, self._release, ptr)
        return out

    def _release(self, ptr):
        entry = self.live[ptr]
        entry[1] -= 1
        if not entry[1]:
            self.now -= entry[0]
            del self.live[ptr]


@torch.no_grad()
def whole_document_ce(model, tokenizer, texts: list[str]) -> float:
    """The CE loss as the evaluation computed it before windows and token budgets: each document whole, the full
    fp32 logits of the batch at once (here one document a batch)."""
    total, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([tokenizer.encode(tokenizer.eos_token + text + tokenizer.eos_token, add_special_tokens=False)])
        logits = model(ids).logits[0, :-1].float()
        total += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    return total / count


def long_document(tokens: int) -> str:
    words = "the cat sat on the mat the dog ran in the park".split()  # one token each for tiny_tokenizer
    return " ".join(words[i % len(words)] for i in range(tokens))


def test_ce_memory_does_not_grow_with_the_document(monkeypatch):
    """A 50,000-token document takes the memory of a 2,000-token one (within 5 %), where the whole-document
    computation grows with the document (measured at 2,000 and 8,000 tokens: 4 times the tokens)."""
    from helpers import tiny_tokenizer

    torch.set_num_threads(1)
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    model = OlmoForCausalLM(OlmoConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=1, num_attention_heads=4, pad_token_id=tokenizer.pad_token_id,
                                       eos_token_id=tokenizer.eos_token_id, bos_token_id=None)).eval()
    assert len(tokenizer.encode(long_document(2000))) == 2000

    def peak(compute, tokens: int) -> int:
        text = long_document(tokens)
        with PeakTensorMemory() as memory:
            compute([text])
        return memory.peak

    windowed = lambda texts: ce_loss(model, tokenizer, texts, batch_size=8, seq_len=256)  # noqa: E731
    short, long = peak(windowed, 2000), peak(windowed, 50_000)
    old_short, old_long = (peak(lambda texts: whole_document_ce(model, tokenizer, texts), n) for n in (2000, 8000))
    print(f"windowed CE peak: {short / 2**20:.2f} MiB at 2,000 tokens, {long / 2**20:.2f} MiB at 50,000 "
          f"({long / short:.3f}x); whole-document CE: {old_short / 2**20:.2f} MiB at 2,000, "
          f"{old_long / 2**20:.2f} MiB at 8,000 ({old_long / old_short:.2f}x)")
    assert long == pytest.approx(short, rel=0.05)
    assert old_long > 3 * old_short


def test_a_document_within_the_context_keeps_its_ce_and_a_longer_one_is_scored_in_windows(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    short = ["the valoki sell the coins .", "we read the books each morning , and they are fine ."]
    assert ce_loss(model, tokenizer, short, batch_size=2, seq_len=SEQ_LEN) == pytest.approx(
        whole_document_ce(model, tokenizer, short), rel=1e-6)
    text = " ".join(["we read the books each morning , and they are fine ."] * 12)
    ids = tokenizer.encode(tokenizer.eos_token + text + tokenizer.eos_token, add_special_tokens=False)
    assert len(ids) > 2 * SEQ_LEN
    total = 0.0  # each window scored alone, whole: its first token is the last one of the window before
    for start in range(0, len(ids) - 1, SEQ_LEN - 1):
        window = torch.tensor([ids[start:start + SEQ_LEN]])
        with torch.no_grad():
            total += model(window, labels=window).loss.item() * (window.shape[1] - 1)
    assert ce_loss(model, tokenizer, [text], batch_size=3, seq_len=SEQ_LEN) == pytest.approx(total / (len(ids) - 1),
                                                                                           rel=1e-5)


def test_token_batches_stay_within_the_budget():
    lengths = [5, 9, 3, 30, 2, 2, 2, 8]
    batches = list(token_batches(range(len(lengths)), lengths.__getitem__, budget=20, rows=2))
    assert [i for b in batches for i in b] == list(range(len(lengths)))  # every item once, in order
    assert all(len(b) * 2 * max(lengths[i] for i in b) <= 20 for b in batches if len(b) > 1)
    assert [3] in batches  # longer than the budget: alone
    assert windows(list(range(10)), 4) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert windows([0, 1], 4) == [[0, 1]]
