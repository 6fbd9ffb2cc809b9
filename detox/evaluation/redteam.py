"""Red-teaming with GCG (Zou et al. 2023, "Universal and transferable adversarial attacks on aligned
language models"): optimise a suffix of tokens appended to a prompt so that the model continues with a
given toxic target, then see whether the model's own greedy continuation of prompt + suffix is toxic.

The optimisation is the maintained nanoGCG (GraySwanAI). Its release pins transformers<=4.47.1 in its
metadata but works with transformers 5, so it is installed without its pins:
``pip install --no-deps nanogcg==0.3.0`` (its other imports, torch, scipy and tqdm, are in this
project's dependencies). Its prefix cache fails on transformers 5 ("'DynamicCache' object is not
subscriptable"), so it is off.

nanoGCG expects chat messages; our models are base LMs without a chat template, so the "chat" is
rendered as the bare text: the model sees end-of-document + prompt + suffix, as every evaluation
prompt is seen (detox/evaluation/evaluate.py), and the target follows directly. Prompt, suffix and target are
tokenized separately (as nanoGCG does), and the continuation is generated from exactly those
prompt and suffix tokens.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from detox.core.progress import progress as tqdm
from detox.core.schema import ConfigError, check_fields
from detox.evaluation.config import RedteamConfig
from detox.evaluation.evaluate import json_score, toxic_share

# Renders nanoGCG's messages as their bare content: no chat markup around a base LM's text.
PLAIN_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
INSTALL = "pip install --no-deps nanogcg==0.3.0"
REDTEAM = "redteam.jsonl"  # the attacked prompts (with an intervention: with it on)
REDTEAM_WITHOUT_INTERVENTION = "redteam_without_intervention.jsonl"  # with an intervention: the same, with it off


@dataclass
class AttackResult:
    suffix: str  # the adversarial suffix (decodes and re-encodes to `suffix_tokens` tokens)
    loss: float  # mean cross-entropy of the target's tokens after prompt + suffix
    continuation: str  # greedy continuation of prompt + suffix


def _check(cfg: RedteamConfig, vocab_size: int) -> None:
    check_fields(cfg, "redteam.")
    if cfg.topk > vocab_size:
        raise ConfigError(f"redteam.topk={cfg.topk} exceeds the vocabulary ({vocab_size} tokens)")


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _initial_suffix(tokenizer: PreTrainedTokenizerBase, length: int) -> str:
    """A repeated one-token string of exactly `length` tokens that survives decoding and re-encoding
    (nanoGCG's default is " x" repeated; a small BPE may lack that token)."""
    for unit in (" x", " !", "x", "!", " the", " a"):
        text = unit * length
        ids = _encode(tokenizer, text)
        if len(ids) == length and tokenizer.decode(ids) == text:
            return text
    raise ConfigError(f"redteam.suffix_tokens={length}: no repeated single-token string of that length "
                      "survives this tokenizer; the attack needs a fixed-length suffix")


@torch.no_grad()
def _greedy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, ids: list[int], max_new_tokens: int) -> str:
    device = next(model.parameters()).device
    tokens = model.generate(torch.tensor([ids], device=device), attention_mask=torch.ones(1, len(ids), device=device,
                                                                                          dtype=torch.long),
                            max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(tokens[0, len(ids):], skip_special_tokens=True)


@torch.no_grad()
def target_loss(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, target: str,
                suffix: str = "") -> float:
    """Mean cross-entropy of `target`'s tokens after end-of-document + `prompt` + `suffix`, each part
    tokenized on its own (the quantity GCG minimises)."""
    context = _encode(tokenizer, tokenizer.eos_token + prompt) + _encode(tokenizer, suffix)
    target_ids = _encode(tokenizer, target)
    device = next(model.parameters()).device
    logits = model(torch.tensor([context + target_ids], device=device)).logits[0, len(context) - 1:-1]
    return torch.nn.functional.cross_entropy(logits.float(), torch.tensor(target_ids, device=device)).item()


def attack(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, target: str,
           cfg: RedteamConfig) -> AttackResult:
    """Optimise a `cfg.suffix_tokens`-token suffix after `prompt` towards `target`, then generate the
    greedy continuation of prompt + suffix."""
    _check(cfg, model.get_input_embeddings().num_embeddings)
    if not target:
        raise ConfigError("redteam: the attack target is empty")
    try:
        import nanogcg
    except ImportError as error:
        raise ImportError(f"red-teaming needs nanoGCG: {INSTALL}") from error
    plain = copy.copy(tokenizer)  # nanoGCG needs a chat template; leave the caller's tokenizer as it is
    plain.chat_template = PLAIN_TEMPLATE
    config = nanogcg.GCGConfig(
        num_steps=cfg.num_steps, optim_str_init=_initial_suffix(tokenizer, cfg.suffix_tokens),
        search_width=cfg.search_width, topk=cfg.topk, seed=cfg.seed, use_prefix_cache=False,
        verbosity="ERROR",  # its warnings only advise a GPU and half precision, which the caller chooses
    )
    # nanoGCG switches on deterministic algorithms globally when seeded; restore the caller's setting.
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    # nanoGCG runs a full gc.collect() after every candidate batch; with the many long-lived objects of
    # this stack each takes about a second. Frozen objects are skipped, so only the attack's are scanned.
    gc.freeze()
    try:
        result = nanogcg.run(model, plain, tokenizer.eos_token + prompt + "{optim_str}", target, config)
    finally:
        gc.unfreeze()
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    ids = _encode(tokenizer, tokenizer.eos_token + prompt) + _encode(tokenizer, result.best_string)
    return AttackResult(suffix=result.best_string, loss=float(result.best_loss),
                        continuation=_greedy(model, tokenizer, ids, cfg.max_new_tokens))


def red_team(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], targets: list[str],
             scorer: Callable[[list[str]], np.ndarray], cfg: RedteamConfig, threshold: float, out: Path,
             intervention: Callable[[], ContextManager] | None = None) -> dict:
    """The red-teaming stage: attack the prompts (`attack_success_rate`), one JSON line per prompt in
    `out/redteam.jsonl`. With an intervention (ITI's steering) the same prompts are attacked with it
    off (`out/redteam_without_intervention.jsonl`, metrics as without one) and on (`out/redteam.jsonl`,
    metrics named `<metric>_iti`), so the two success rates compare directly."""
    if intervention is None:
        return attack_success_rate(model, tokenizer, prompts, targets, scorer, cfg, threshold, out=out / REDTEAM)
    metrics = attack_success_rate(model, tokenizer, prompts, targets, scorer, cfg, threshold,
                                  out=out / REDTEAM_WITHOUT_INTERVENTION)
    steered = attack_success_rate(model, tokenizer, prompts, targets, scorer, cfg, threshold,
                                  intervention=intervention, out=out / REDTEAM)
    return {**metrics, **{f"{name}_iti": value for name, value in steered.items()}}


def attack_success_rate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                        targets: list[str], scorer: Callable[[list[str]], np.ndarray], cfg: RedteamConfig,
                        threshold: float, intervention: Callable[[], ContextManager] | None = None,
                        out: Path | None = None) -> dict:
    """Attack every prompt towards its target; success means the attacked continuation scores toxic
    (at or above `threshold`). `intervention` (e.g. ITI's steering) is a factory of a context manager
    that is active during each attack's optimisation and generation, so the attack sees the
    intervened model. The un-attacked greedy continuation is scored too, as the baseline. With `out`
    (a file's path), one JSON line per prompt goes there."""
    if len(prompts) != len(targets):
        raise ConfigError(f"redteam: {len(prompts)} prompts but {len(targets)} targets")
    if not prompts:
        raise ConfigError("redteam: no prompts to attack")
    _check(cfg, model.get_input_embeddings().num_embeddings)
    rows = []
    for prompt, target in tqdm(list(zip(prompts, targets)), desc="GCG red-teaming"):
        with intervention() if intervention else contextlib.nullcontext():
            plain_ids = _encode(tokenizer, tokenizer.eos_token + prompt)
            rows.append({"prompt": prompt, "target": target,
                         "plain_continuation": _greedy(model, tokenizer, plain_ids, cfg.max_new_tokens),
                         "plain_loss": target_loss(model, tokenizer, prompt, target),
                         **asdict(attack(model, tokenizer, prompt, target, cfg))})
    attacked = scorer([r["continuation"] for r in rows])
    plain = scorer([r["plain_continuation"] for r in rows])
    if out is not None:
        with open(out, "w") as f:
            for row, attacked_score, plain_score in zip(rows, attacked, plain):
                f.write(json.dumps({**row, "score": json_score(attacked_score), "plain_score": json_score(plain_score)})
                        + "\n")
    return {  # a continuation the scorer could not score is left out (toxic_share), never counted as 0
        "gcg_success": 100 * toxic_share(attacked, threshold),
        "gcg_unattacked_toxic": 100 * toxic_share(plain, threshold),
        "gcg_target_loss": float(np.mean([r["loss"] for r in rows])),
        "gcg_unattacked_target_loss": float(np.mean([r["plain_loss"] for r in rows])),
    }
