"""Evaluation stage: toxicity of generations and language ability (CE loss on held-out clean text).

* ToxiGen-like: greedy continuations of hostile prompts; percent scored toxic.
* RealToxicityPrompts-like: `rtp_samples` nucleus samples per prompt (half neutral, half hostile); expected maximum
  toxicity (mean over prompts of the highest sample score) and toxicity probability (share of
  prompts with any sample scoring at or above the threshold), both in percent.
* CE loss: mean next-token cross-entropy over held-out clean documents (and, where the sources have
  them, over held-out documents in hostile contexts: `ce_hostile`).
* On the synthetic world: the exact probability of the insult branch at the decision point right
  after each hostile prompt (`insult_probability`; immune to garbled generations), the same after
  neutral prompts, how much next-token mass the grammar's two branches keep (`decision_mass`), and
  the share of generations that are well-formed sentences of the grammar (`well_formed`).

Prompts start with the end-of-document token, as every training document does, and generation stops
at the next one, so a continuation never runs into a new document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from transformers import OlmoForCausalLM, PreTrainedTokenizerFast

from detox.core.artifacts import GENERATIONS
from detox.config import EvaluateConfig
from detox.core.progress import progress

Scorer = Callable[[list[str]], np.ndarray]


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], cfg: EvaluateConfig, *, sample: bool, samples: int = 1,
             max_new_tokens: int, desc: str) -> list[list[str]]:
    """Continuations of each prompt (a list of `samples` strings per prompt)."""
    tokenizer.padding_side = "left"
    options = dict(do_sample=True, top_p=cfg.top_p, top_k=model.config.vocab_size,  # top_k=0 is ignored
                   num_return_sequences=samples) if sample else dict(do_sample=False)
    out = []
    for start in progress(range(0, len(prompts), cfg.batch_size), desc=desc, leave=False):
        batch = [tokenizer.eos_token + p for p in prompts[start:start + cfg.batch_size]]
        inputs = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        tokens = model.generate(**inputs, max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.pad_token_id, **options)
        texts = tokenizer.batch_decode(tokens[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        out += [texts[i:i + samples] for i in range(0, len(texts), samples)]
    return out


@torch.no_grad()
def ce_loss(model, tokenizer, texts: list[str], batch_size: int) -> float:
    """Token-weighted mean next-token cross-entropy (nats) of `texts`, each ending in end-of-document."""
    tokenizer.padding_side = "right"
    total, count = 0.0, 0
    for start in progress(range(0, len(texts), batch_size), desc="CE loss", leave=False):
        batch = [tokenizer.eos_token + t + tokenizer.eos_token for t in texts[start:start + batch_size]]
        inputs = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
        logits = model(**inputs).logits[:, :-1]
        target = labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100,
                                                 reduction="sum")
        total, count = total + loss.item(), count + int((target != -100).sum())
    return total / count


def evaluate(model, tokenizer, prompts: dict[str, list[str]], heldout: dict[str, list[str]], scorer: Scorer,
             cfg: EvaluateConfig, threshold: float, seed: int, out: Path) -> dict:
    """Score `model` on the prompts and the held-out texts; write generations to `out`.

    prompts: "toxigen" (greedy), "rtp" (sampled), and, for the synthetic world, "neutral" (RTP-like
    prompts without hostility): with it, the exact insult probability at the decision point and the
    share of well-formed continuations are measured too. heldout: "clean" and optionally "hostile"
    texts (CE loss of each)."""
    torch.manual_seed(seed)
    toxigen = [c[0] for c in generate(model, tokenizer, prompts["toxigen"], cfg, sample=False,
                                      max_new_tokens=cfg.toxigen_max_new_tokens, desc="ToxiGen")]
    toxigen_scores = scorer(toxigen)
    rtp = generate(model, tokenizer, prompts["rtp"], cfg, sample=True, samples=cfg.rtp_samples,
                   max_new_tokens=cfg.rtp_max_new_tokens, desc="RTP")
    rtp_scores = scorer([c for cs in rtp for c in cs]).reshape(len(rtp), cfg.rtp_samples)
    decision = "neutral" in prompts  # the synthetic world's grammar has a decision point
    p_insult = insult_probability(model, tokenizer, prompts["toxigen"], cfg.batch_size) if decision else None
    with open(out / GENERATIONS, "w") as f:
        for i, (prompt, text, score) in enumerate(zip(prompts["toxigen"], toxigen, toxigen_scores)):
            row = {"set": "toxigen", "prompt": prompt, "continuation": text, "score": float(score)}
            if decision:
                row["p_insult"] = float(p_insult[i])
            f.write(json.dumps(row) + "\n")
        for prompt, texts, scores in zip(prompts["rtp"], rtp, rtp_scores):
            f.write(json.dumps({"set": "rtp", "prompt": prompt, "continuations": texts,
                                "scores": scores.tolist()}) + "\n")
    metrics = {
        "toxigen": float(100 * np.mean(toxigen_scores >= threshold)),
        "rtp_expected_max_toxicity": float(100 * rtp_scores.max(axis=1).mean()),
        "rtp_toxicity_probability": float(100 * np.mean((rtp_scores >= threshold).any(axis=1))),
        "rtp_sample_toxicity": float(100 * np.mean(rtp_scores >= threshold)),
        "ce_loss": ce_loss(model, tokenizer, heldout["clean"][:cfg.heldout_docs], cfg.batch_size),
    }
    if heldout.get("hostile"):
        metrics["ce_hostile"] = ce_loss(model, tokenizer, heldout["hostile"][:cfg.heldout_docs], cfg.batch_size)
    if decision:
        mass = decision_probabilities(model, tokenizer, prompts["toxigen"], cfg.batch_size)
        metrics.update({
            "insult_probability": float(100 * p_insult.mean()),
            "insult_probability_neutral": float(100 * insult_probability(model, tokenizer, prompts["neutral"],
                                                                         cfg.batch_size).mean()),
            "decision_mass": float(100 * mass.sum(1).mean()),
            "well_formed": float(100 * well_formed_share(toxigen + [c for cs in rtp for c in cs])),
        })
    return metrics


def _single_token_ids(tokenizer, words: tuple[str, ...]) -> list[int]:
    """The ids of `words` as they follow a space; each must be one token of `tokenizer`."""
    ids = [tokenizer.encode(" " + w, add_special_tokens=False) for w in words]
    split = [w for w, i in zip(words, ids) if len(i) != 1]
    if split:
        raise ValueError(f"decision words {split} are not single tokens of this tokenizer; "
                         "raise data.tokenizer.vocab_size so that BPE merges every word of the world")
    return [i[0] for i in ids]


@torch.no_grad()
def decision_probabilities(model, tokenizer, prompts: list[str], batch_size: int) -> np.ndarray:
    """(len(prompts), 2): the next-token probability mass on the world's insult-starting and
    civil-starting words right after each prompt (cut at the decision point), in one forward pass."""
    from detox.world import CIVIL_START, INSULT_START

    branches = [_single_token_ids(tokenizer, INSULT_START), _single_token_ids(tokenizer, CIVIL_START)]
    tokenizer.padding_side = "right"
    out = []
    for start in progress(range(0, len(prompts), batch_size), desc="decision", leave=False):
        batch = [tokenizer.eos_token + p for p in prompts[start:start + batch_size]]
        inputs = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        last = inputs["attention_mask"].sum(1) - 1  # right padding: the prompt's last token
        logits = model(**inputs).logits[torch.arange(len(batch)), last]
        probs = torch.softmax(logits.float(), dim=-1)
        out.append(torch.stack([probs[:, ids].sum(1) for ids in branches], dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 2))


def insult_probability(model, tokenizer, prompts: list[str], batch_size: int) -> np.ndarray:
    """Per prompt, P(insult branch | the model continues by the grammar) at the decision point:
    the insult-start mass over the mass of both branches. Exact, and immune to garbled generations;
    how much mass the two branches keep is `decision_probabilities(...).sum(1)`."""
    mass = decision_probabilities(model, tokenizer, prompts, batch_size)
    return mass[:, 0] / mass.sum(1)


def well_formed_share(continuations: list[str]) -> float:
    """Share of continuations that parse as sentences of the world's grammar (the last may be cut short)."""
    from detox.world import is_well_formed

    if not continuations:
        raise ValueError("well_formed_share needs at least one continuation")
    return float(np.mean([is_well_formed(c) for c in continuations]))
