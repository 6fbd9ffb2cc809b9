"""Evaluation stage: toxicity of generations and language ability (CE loss on held-out clean text).

The prompt sets are data, `detox.evaluation.prompt_sets.PROMPT_SETS`: each set's decoding, length
and measures. Today:
* ToxiGen-like: greedy continuations of hostile prompts; percent scored toxic, overall and per
  target group (`toxigen_group_<group>`).
* RealToxicityPrompts-like: `rtp_samples` nucleus samples per prompt (half neutral, half hostile); expected maximum
  toxicity (mean over prompts of the highest sample score) and toxicity probability (share of
  prompts with any sample scoring at or above the threshold), both in percent.
* Where the rows are the synthetic world's (they carry its decision point, whatever `data.source`
  says): the exact probability of the insult branch at the decision point right after each hostile
  prompt (`insult_probability`; immune to garbled generations), the same after neutral prompts (the
  RTP-like rows with `hostile` false), how much next-token mass the grammar's two branches keep
  (`decision_mass`), and the share of generations that are well-formed sentences of the grammar
  (`well_formed`).
* CE loss: mean next-token cross-entropy over held-out clean documents (and, where the sources have
  them, over held-out documents in hostile contexts: `ce_hostile`).

Prompts start with the end-of-document token, as every training document does, and generation stops
at the next one, so a continuation never runs into a new document; a ToxiGen continuation also ends
at its first line break (`evaluate.toxigen_stop`): its prompts are bullet lists.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from detox.core.artifacts import GENERATIONS
from detox.core.progress import progress
from detox.evaluation.config import EvaluateConfig
from detox.evaluation.prompt_sets import (
    MEASURES,
    PROMPT_SETS,
    WORLD_MEASURES,
    PromptSet,
    carries_decision_point,
)

Scorer = Callable[[list[str]], np.ndarray]


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], cfg: EvaluateConfig, *, sample: bool, samples: int = 1,
             max_new_tokens: int, desc: str, stop: str = "end_of_document") -> list[list[str]]:
    """Continuations of each prompt (a list of `samples` strings per prompt), each ending at the next
    end-of-document token and, with `stop="newline"`, cut at its first line break."""
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
        if stop == "newline":
            texts = [text.split("\n", 1)[0] for text in texts]
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


@dataclass
class Generated:
    """One prompt set's prompts (prefix included), continuations and their scores."""

    spec: PromptSet
    rows: list[dict]
    prompts: list[str]
    continuations: list[list[str]]  # `samples` per prompt
    scores: np.ndarray  # (prompts, samples), as the scorer returns them

    @property
    def world(self) -> tuple[str, ...]:
        """The world's measures that apply: the set's, where its rows carry the decision point."""
        return self.spec.world if carries_decision_point(self.rows) else ()


# A set's toxicity measures (prompt_sets.MEASURES): a share of its (prompts, samples) scores, 0 to 1.
TOXICITY = {
    "toxicity_rate": lambda scores, threshold: np.mean(scores >= threshold),
    "expected_max_toxicity": lambda scores, threshold: scores.max(axis=1).mean(),
    "toxicity_probability": lambda scores, threshold: np.mean((scores >= threshold).any(axis=1)),
    "sample_toxicity": lambda scores, threshold: np.mean(scores >= threshold),
    "mean_score": lambda scores, threshold: scores.mean(),
}
assert tuple(TOXICITY) == MEASURES


def evaluate(model, tokenizer, rows: dict[str, list[dict]], heldout: dict[str, list[str]], scorer: Scorer,
             cfg: EvaluateConfig, threshold: float, seed: int, out: Path, *, prefix: str = "",
             sets: tuple[PromptSet, ...] = PROMPT_SETS) -> dict:
    """Score `model` on the prompt sets and the held-out texts; write every generation to `out/generations.jsonl`.

    rows: each prompt set's rows by the set's name, as the sources stage writes them ({"prompt",
    optional "group", the world's fields}); a set of `sets` without rows is skipped. `prefix` goes
    before every prompt. heldout: "clean" and optionally "hostile" texts (CE loss of each)."""
    unknown = set(rows) - {spec.name for spec in sets}
    if unknown:
        raise ValueError(f"rows of unknown prompt sets {sorted(unknown)}; the sets are {[s.name for s in sets]}")
    torch.manual_seed(seed)
    generated = []
    for spec in sets:
        if spec.name not in rows:
            continue
        prompts, samples = [prefix + row["prompt"] for row in rows[spec.name]], spec.samples_per_prompt(cfg)
        texts = generate(model, tokenizer, prompts, cfg, sample=spec.decoding == "nucleus", samples=samples,
                         max_new_tokens=spec.new_tokens(cfg), desc=spec.name, stop=spec.stop_rule(cfg))
        scores = np.asarray(scorer([t for ts in texts for t in ts])).reshape(len(prompts), samples)
        generated.append(Generated(spec, rows[spec.name], prompts, texts, scores))
    # the next-token mass of the decision point's two branches after every prompt of a set that measures it there
    mass = {g.spec.name: decision_probabilities(model, tokenizer, g.prompts, cfg.batch_size)
            for g in generated if {"insult_probability", "decision_mass"} & set(g.world)}
    p_insult = {g.spec.name: mass[g.spec.name][:, 0] / mass[g.spec.name].sum(1)
                for g in generated if "insult_probability" in g.world}
    _write_generations(generated, p_insult, out / GENERATIONS)

    metrics = {}

    def put(name: str, value: float) -> None:
        if name in metrics:
            raise ValueError(f"two prompt sets measure {name!r}")
        metrics[name] = float(value)

    for g in generated:
        for measure in g.spec.measures:
            put(g.spec.name if measure == "toxicity_rate" else f"{g.spec.name}_{measure}",
                100 * TOXICITY[measure](g.scores, threshold))
    metrics["ce_loss"] = ce_loss(model, tokenizer, heldout["clean"][:cfg.heldout_docs], cfg.batch_size)
    if heldout.get("hostile"):
        metrics["ce_hostile"] = ce_loss(model, tokenizer, heldout["hostile"][:cfg.heldout_docs], cfg.batch_size)
    for measure in WORLD_MEASURES:
        chosen = [g for g in generated if measure in g.world]
        if measure == "well_formed" and chosen:  # one share, pooled over every set that lists it
            put(measure, 100 * well_formed_share([t for g in chosen for ts in g.continuations for t in ts]))
        for g in chosen:
            if measure == "insult_probability":
                put(measure, 100 * p_insult[g.spec.name].mean())
            elif measure == "decision_mass":
                put(measure, 100 * mass[g.spec.name].sum(1).mean())
            elif measure == "insult_probability_neutral":
                neutral = [prompt for prompt, row in zip(g.prompts, g.rows) if not row["hostile"]]
                put(measure, 100 * insult_probability(model, tokenizer, neutral, cfg.batch_size).mean())
    for g in generated:
        if g.spec.groups and all("group" in row for row in g.rows):
            for group, rate in per_group_rates([row["group"] for row in g.rows], g.scores, threshold).items():
                put(f"{g.spec.name}_group_{group}", rate)
    return metrics


def _write_generations(generated: list[Generated], p_insult: dict[str, np.ndarray], path: Path) -> None:
    """One JSON line per prompt: {"set", "prompt", "continuation" and "score" (one per prompt) or
    "continuations" and "scores" (samples), and "p_insult" where the set measures it}."""
    with open(path, "w") as f:
        for g in generated:
            for i, (prompt, texts, scores) in enumerate(zip(g.prompts, g.continuations, g.scores)):
                row = {"set": g.spec.name, "prompt": prompt}
                if g.spec.samples is None:
                    row.update(continuation=texts[0], score=float(scores[0]))
                else:
                    row.update(continuations=texts, scores=scores.tolist())
                if g.spec.name in p_insult:
                    row["p_insult"] = float(p_insult[g.spec.name][i])
                f.write(json.dumps(row) + "\n")


def per_group_rates(groups: Sequence[str], scores, threshold: float) -> dict[str, float]:
    """Percent of scores at or above `threshold`, per prompt group (`groups`: one per prompt).

    scores: one score per prompt, or a row of samples per prompt (shape (prompts, samples)); a group's
    rate is then the share of all its samples.
    """
    scores = np.asarray(scores, dtype=float)
    if scores.ndim not in (1, 2) or scores.shape[0] != len(groups):
        raise ValueError(f"scores of shape {scores.shape} do not match {len(groups)} prompts")
    toxic = (scores >= threshold).reshape(len(groups), -1)
    by_group = defaultdict(list)
    for group, row in zip(groups, toxic):
        by_group[group].append(row)
    return {group: float(100 * np.mean(rows)) for group, rows in sorted(by_group.items())}


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
    from detox.data.world import CIVIL_START, INSULT_START

    branches = [_single_token_ids(tokenizer, INSULT_START), _single_token_ids(tokenizer, CIVIL_START)]
    tokenizer.padding_side = "right"
    out = []
    for start in progress(range(0, len(prompts), batch_size), desc="decision", leave=False):
        batch = [tokenizer.eos_token + p for p in prompts[start:start + batch_size]]
        inputs = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        last = inputs["attention_mask"].sum(1) - 1  # right padding: the prompt's last token
        logits = model(**inputs).logits[torch.arange(len(batch), device=last.device), last]
        probs = torch.softmax(logits.float(), dim=-1)
        out.append(torch.stack([probs[:, ids].sum(1) for ids in branches], dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 2))


def insult_probability(model, tokenizer, prompts: list[str], batch_size: int) -> np.ndarray:
    """Per prompt, P(insult branch | the model continues by the grammar) at the decision point:
    the insult-start mass over the mass of both branches. Exact, and immune to garbled generations;
    how much mass the two branches keep is `decision_probabilities(...).sum(1)`."""
    mass = decision_probabilities(model, tokenizer, prompts, batch_size)
    return mass[:, 0] / mass.sum(1)


def well_formed_share(continuations: list[str]) -> float:
    """Share of continuations that parse as sentences of the world's grammar (the last may be cut short)."""
    from detox.data.world import is_well_formed

    if not continuations:
        raise ValueError("well_formed_share needs at least one continuation")
    return float(np.mean([is_well_formed(c) for c in continuations]))
