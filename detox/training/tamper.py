"""A fine-tuning attack (the `tamper` group; Deep Ignorance's tamper-resistance protocol, O'Brien et al.
2025): the treated model is fine-tuned on toxic documents it has not seen, and measured at a few step
counts, to see whether a treatment's effect survives. An inference-time treatment (ITI, CAA,
ablation) stays switched on while the model is fine-tuned and measured, as a deployed model would keep
it: the attacker trains the weights underneath the intervention (the caller holds the intervention's
context around `attack`). A prompt prefix goes before the measured prompts only.

Resumes exactly: after each measured step count the weights, the optimiser's state, the step and the
points so far are saved in one file, atomically; a killed build's work folder (the stage cache keeps
it) continues from there, and the batch of step s is a function of (seed, s) alone, so a resumed
attack is the uninterrupted one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from detox.core.progress import progress as tqdm
from detox.training.config import TamperConfig
from detox.training.posttrain import _document_batch, _lm_loss

STATE_FILE = "tamper_state.pt"


def attack(model, tokenizer, texts: list[str], cfg: TamperConfig, seed: int, out: Path,
           measure: Callable[[int], dict[str, float]]) -> list[dict]:
    """Fine-tune `model` in place on `texts`; `measure(step)` at each step count of cfg.eval_at (the model
    in eval mode). Returns the points [{"step", **measured}]."""
    cfg.check()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    step, points = 0, []
    if (out / STATE_FILE).is_file():  # a killed attack: continue after its last measured step
        state = torch.load(out / STATE_FILE, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, points = state["step"], json.loads(state["points"])
    bar = tqdm(total=cfg.steps, initial=step, desc="tamper attack", leave=False)
    for target in cfg.eval_at:
        if target < step or (points and points[-1]["step"] == target):
            continue
        model.train()
        while step < target:
            order = np.random.default_rng([seed, step]).choice(len(texts), cfg.batch_size, replace=False)
            batch = {k: v.to(model.device) for k, v in
                     _document_batch(tokenizer, [texts[i] for i in order], cfg.max_tokens).items()}
            optimizer.zero_grad(set_to_none=True)
            _lm_loss(model, batch).backward()
            optimizer.step()
            step += 1
            bar.update(1)
        model.eval()
        points.append({"step": step, **measure(step)})
        _save(out, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                    "points": json.dumps(points)})
    bar.close()
    return points


def _save(out: Path, state: dict) -> None:
    torch.save(state, out / f"{STATE_FILE}.tmp")
    os.replace(out / f"{STATE_FILE}.tmp", out / STATE_FILE)  # whole or not at all
