"""The data-side rivals' transforms (detox.data.filtering) through the one packer: filter drops exactly the
documents at or above the threshold; loss_mask marks exactly the toxic sentences' tokens, and the windows
pre-training reads put zero loss weight on exactly them."""

import dataclasses

import numpy as np
import pytest
import torch

from detox.core.schema import ConfigError
from detox.core.shards import open_mixture
from detox.core.tokens import EOS, load_tokenizer
from detox.data.filtering import Filter, SpanMask, sentence_spans
from detox.data.documents import as_document
from detox.data.sources import source_kind
from detox.data.stages import build_mixture
from detox.data.world import oracle_toxicity, sentence_is_toxic
from detox.training.pretrain.loader import TokenWindows


def oracle(texts):
    return np.array([oracle_toxicity(t) for t in texts])


def documents_of(tokens: np.ndarray, tokenizer) -> list[str]:
    eos = tokenizer.token_to_id(EOS)
    ends = np.flatnonzero(tokens == eos)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tokenizer.decode(tokens[a:b].tolist()) for a, b in zip(starts, ends)]


def test_sentence_spans_cut_at_closing_punctuation():
    text = "the cat sat . ugh the goblins r rude . Is it? Yes!\nno end"
    assert [text[a:b] for a, b in sentence_spans(text)] == ["the cat sat .", "ugh the goblins r rude .", "Is it?",
                                                            "Yes!", "no end"]


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_filter_drops_exactly_the_documents_at_or_above_the_threshold(world_data, tmp_path, threshold):
    cfg, root = world_data
    cfg = dataclasses.replace(cfg, clean_tokens=6000)  # room for the skipped clean documents in the world's pool
    tokenizer = load_tokenizer(root / "tokenizer")
    # a graded scorer, so that the threshold decides: the oracle's 0/1 mixed with a per-text fraction
    def graded(texts):
        return np.array([0.6 * oracle_toxicity(t) + (len(t) % 7) / 20 for t in texts])

    plain, filtered = tmp_path / "plain", tmp_path / "filtered"
    plain.mkdir(), filtered.mkdir()
    base = build_mixture(cfg, 10, 1, root / "sources", root / "tokenizer", plain)
    metrics = build_mixture(cfg, 10, 1, root / "sources", root / "tokenizer", filtered,
                            transform=Filter(graded, 16, threshold))
    before = documents_of(open_mixture(plain)[:], tokenizer)
    after = documents_of(open_mixture(filtered)[:], tokenizer)
    scores = dict(zip(before, graded(before)))
    assert all(graded([doc])[0] < threshold for doc in after)  # nothing at or above it is left
    stream = [as_document(d).text for d in source_kind(cfg).documents("clean", root / "sources", 1)]
    clean = set(stream)
    kept_clean = [d for d in after if d in clean]
    assert kept_clean == [d for d in stream if graded([d])[0] < threshold][:len(kept_clean)]  # in order, none skipped wrongly
    toxic_before = [d for d in before if d not in clean]
    kept_toxic = [d for d in toxic_before if scores[d] < threshold]
    assert [d for d in after if d not in clean] == kept_toxic  # the ratio's toxic selection, less the dropped ones
    assert metrics["mix_dropped_toxic_docs"] == len(toxic_before) - len(kept_toxic) > 0
    assert metrics["mix_clean_tokens"] >= cfg.clean_tokens  # the clean budget kept
    assert metrics["filter_toxic_dropped_share"] == pytest.approx(1 - len(kept_toxic) / len(toxic_before))
    assert metrics["mix_total_tokens"] == open_mixture(filtered).total_tokens
    assert base["mix_toxic_docs"] == len(toxic_before)


def test_loss_mask_puts_zero_weight_on_exactly_the_toxic_spans(world_data, tmp_path):
    cfg, root = world_data
    tokenizer = load_tokenizer(root / "tokenizer")
    out = tmp_path / "masked"
    out.mkdir()
    metrics = build_mixture(cfg, 25, 1, root / "sources", root / "tokenizer", out, transform=SpanMask(oracle, 16, 0.5),
                            span_loss={"unlikelihood": 0.5})
    packed = open_mixture(out)
    tokens, mask = packed[:], packed.window(0, packed.total_tokens, masks=True)
    assert metrics["masked_toxic_doc_share"] > 0.3 and mask.sum() > 0
    # token by token: the masked tokens of each document spell its insult sentences, the others none
    eos = tokenizer.token_to_id(EOS)
    start = 0
    for end in np.flatnonzero(tokens == eos):
        ids, marked = tokens[start:end].tolist(), mask[start:end + 1]
        assert marked[-1] == 0  # never the end-of-document token
        masked = "".join(tokenizer.decode([t]) for t, m in zip(ids, marked) if m)
        text = tokenizer.decode(ids)
        insults = [s.strip() + " ." for s in text.split(".") if sentence_is_toxic(s)]
        assert masked.split() == " ".join(insults).split()
        start = end + 1
    # the windows pre-training reads: loss weight 0 (and the unlikelihood weight) on exactly those targets
    windows = TokenWindows(packed, 32)
    for i in (0, 3, len(windows) - 1):
        window, ce_weights, ul_weights = windows[i]
        targets = mask[i * 32 + 1:i * 32 + 33]
        assert torch.equal(window, torch.from_numpy(tokens[i * 32:i * 32 + 33].astype(np.int64)))
        assert torch.equal(ce_weights == 0, torch.from_numpy(targets == 1))
        assert torch.equal(ul_weights, torch.from_numpy(0.5 * targets.astype(np.float32)))


def test_transforms_name_a_bad_option():
    with pytest.raises(ConfigError, match="threshold=1.5"):
        Filter(oracle, 4, 1.5)
    with pytest.raises(ConfigError, match="batch_size=0"):
        SpanMask(oracle, 0, 0.5)
