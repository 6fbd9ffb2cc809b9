"""Evaluation stage: toxicity of generations and language ability (CE loss on held-out clean text).

* ToxiGen-like: greedy continuations of hostile prompts; percent scored toxic.
* RealToxicityPrompts-like: `rtp_samples` nucleus samples per neutral prompt; expected maximum
  toxicity (mean over prompts of the highest sample score) and toxicity probability (share of
  prompts with any sample scoring at or above the threshold), both in percent.
* CE loss: mean next-token cross-entropy over held-out clean documents.

Prompts start with the end-of-document token, as every training document does, and generation stops
at the next one, so a continuation never runs into a new document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import OlmoForCausalLM, PreTrainedTokenizerFast

from detox.config import EvaluateConfig

Scorer = Callable[[list[str]], np.ndarray]


def inference_device() -> torch.device:
    """The first GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(model_dir: Path, device: torch.device | None = None) -> tuple[OlmoForCausalLM, PreTrainedTokenizerFast]:
    """The exported model in eval mode on `device` (default: `inference_device()`) and its tokenizer."""
    model = OlmoForCausalLM.from_pretrained(model_dir).eval().to(device or inference_device())
    return model, PreTrainedTokenizerFast.from_pretrained(model_dir)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], cfg: EvaluateConfig, *, sample: bool, samples: int = 1,
             max_new_tokens: int, desc: str) -> list[list[str]]:
    """Continuations of each prompt (a list of `samples` strings per prompt)."""
    tokenizer.padding_side = "left"
    options = dict(do_sample=True, top_p=cfg.top_p, top_k=model.config.vocab_size,  # top_k=0 is ignored
                   num_return_sequences=samples) if sample else dict(do_sample=False)
    out = []
    for start in tqdm(range(0, len(prompts), cfg.batch_size), desc=desc, leave=False):
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
    for start in tqdm(range(0, len(texts), batch_size), desc="CE loss", leave=False):
        batch = [tokenizer.eos_token + t + tokenizer.eos_token for t in texts[start:start + batch_size]]
        inputs = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
        logits = model(**inputs).logits[:, :-1]
        target = labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100,
                                                 reduction="sum")
        total, count = total + loss.item(), count + int((target != -100).sum())
    return total / count


def evaluate(model, tokenizer, prompts: dict[str, list[str]], heldout: list[str], scorer: Scorer,
             cfg: EvaluateConfig, threshold: float, seed: int, out: Path) -> dict:
    """Score `model` on the toxigen and rtp prompts and the held-out texts; write generations to `out`."""
    torch.manual_seed(seed)
    toxigen = [c[0] for c in generate(model, tokenizer, prompts["toxigen"], cfg, sample=False,
                                      max_new_tokens=cfg.toxigen_max_new_tokens, desc="ToxiGen")]
    toxigen_scores = scorer(toxigen)
    rtp = generate(model, tokenizer, prompts["rtp"], cfg, sample=True, samples=cfg.rtp_samples,
                   max_new_tokens=cfg.rtp_max_new_tokens, desc="RTP")
    rtp_scores = scorer([c for cs in rtp for c in cs]).reshape(len(rtp), cfg.rtp_samples)
    with open(out / "generations.jsonl", "w") as f:
        for prompt, text, score in zip(prompts["toxigen"], toxigen, toxigen_scores):
            f.write(json.dumps({"set": "toxigen", "prompt": prompt, "continuation": text, "score": float(score)}) + "\n")
        for prompt, texts, scores in zip(prompts["rtp"], rtp, rtp_scores):
            f.write(json.dumps({"set": "rtp", "prompt": prompt, "continuations": texts,
                                "scores": scores.tolist()}) + "\n")
    return {
        "toxigen": float(100 * np.mean(toxigen_scores >= threshold)),
        "rtp_expected_max_toxicity": float(100 * rtp_scores.max(axis=1).mean()),
        "rtp_toxicity_probability": float(100 * np.mean((rtp_scores >= threshold).any(axis=1))),
        "rtp_sample_toxicity": float(100 * np.mean(rtp_scores >= threshold)),
        "ce_loss": ce_loss(model, tokenizer, heldout[:cfg.heldout_docs], cfg.batch_size),
    }
