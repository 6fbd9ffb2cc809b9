"""Post-training detoxification baselines of the paper: SFT on non-toxic text and DPO (Rafailov et al.
2023) on (prompt, non-toxic chosen, toxic rejected) continuations, both through Lightning with the
pre-training optimiser and schedule.

Every text is read as a document: it follows an end-of-document token, as in pre-training (see
detox/evaluation/evaluate.py). SFT documents also end with one, so the model keeps learning where documents end;
DPO continuations are scored exactly as given.

DPO's reference is the starting model, frozen. Its log-probabilities never change, so they are
computed once before training (as trl's `precompute_ref_log_probs`) instead of keeping a second
copy of the model through training.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from detox.core.artifacts import HF_MODEL
from detox.core.models import load_model
from detox.core.progress import on_terminal
from detox.core.progress import progress as tqdm
from detox.core.schema import ConfigError, check_fields
from detox.training.config import DpoConfig, FinetuneConfig, SftConfig
from detox.training.optim import adamw_warmup_cosine

log = logging.getLogger(__name__)
BETAS = (0.9, 0.95)  # AdamW betas of pre-training (OLMo's)


def _check(cfg) -> None:
    """The declared ranges of the options (the same check a job's config gets), for direct callers."""
    check_fields(cfg, "method.")


# ----------------------------------------------------------------------------------------------- losses


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sigmoid DPO loss (mean over pairs) and the implicit rewards beta * log(pi / pi_ref) of each
    chosen and rejected continuation (detached: they are metrics)."""
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    loss = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios)).mean()
    return loss, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def sequence_logps(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                   continuations: list[str]) -> torch.Tensor:
    """Summed log-probability of each continuation given end-of-document + its prompt.

    Prompt and continuation are tokenized separately and joined, so the continuation's tokens are the
    same whatever the prompt; only continuation tokens count (prompt and padding are masked).
    """
    eos = tokenizer.eos_token
    prompt_ids = tokenizer([eos + p for p in prompts], add_special_tokens=False)["input_ids"]
    continuation_ids = tokenizer(list(continuations), add_special_tokens=False)["input_ids"]
    sequences = [p + c for p, c in zip(prompt_ids, continuation_ids)]
    width = max(map(len, sequences))
    input_ids = torch.full((len(sequences), width), tokenizer.pad_token_id)
    attention_mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for row, (p, c) in enumerate(zip(prompt_ids, continuation_ids)):
        input_ids[row, :len(p) + len(c)] = torch.tensor(p + c)
        attention_mask[row, :len(p) + len(c)] = 1
        labels[row, len(p):len(p) + len(c)] = torch.tensor(c, dtype=torch.long)
    device = next(model.parameters()).device
    input_ids, attention_mask, labels = input_ids.to(device), attention_mask.to(device), labels.to(device)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    targets = labels[:, 1:]
    token_logps = torch.gather(logits.log_softmax(-1), 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token_logps * (targets != -100)).sum(dim=1)


# ------------------------------------------------------------------------------------------- Lightning


class _PostTraining(L.LightningModule):
    """A transformers causal LM trained for `total_steps` with the pre-training optimiser and schedule."""

    def __init__(self, model: PreTrainedModel, cfg: FinetuneConfig, total_steps: int):
        super().__init__()
        self.model, self.cfg, self.total_steps = model, cfg, total_steps

    def configure_optimizers(self):
        return adamw_warmup_cosine(self.model.parameters(), self.cfg.lr, self.cfg.weight_decay, BETAS,
                                   self.cfg.warmup_fraction, self.total_steps)

    def checked(self, loss: torch.Tensor, name: str) -> torch.Tensor:
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name} loss is {loss.item()} at step {self.global_step}; lower the lr")
        self.log(f"{name}_loss", loss, prog_bar=True)
        return loss


class _Sft(_PostTraining):
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.checked(_lm_loss(self.model, batch), "sft")


class _Dpo(_PostTraining):
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: DpoConfig, total_steps: int):
        super().__init__(model, cfg, total_steps)
        self.tokenizer = tokenizer

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _, _ = _dpo_batch(self.model, self.tokenizer, batch, self.cfg.beta)
        return self.checked(loss, "dpo")


def _fit(module: _PostTraining, loader: torch.utils.data.DataLoader, cfg: FinetuneConfig) -> None:
    trainer = L.Trainer(max_steps=cfg.steps, max_epochs=-1, accelerator=cfg.accelerator, devices=1,
                        gradient_clip_val=cfg.grad_clip, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=on_terminal(), num_sanity_val_steps=0)
    trainer.fit(module, loader)
    module.model.cpu().eval()


def _save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    model.save_pretrained(out / HF_MODEL)
    tokenizer.save_pretrained(out / HF_MODEL)


# ------------------------------------------------------------------------------------------------- SFT


def _document_batch(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_tokens: int) -> dict:
    """Right-padded documents (end-of-document on both sides, cut to `max_tokens`) with their labels."""
    ids = [tokenizer(tokenizer.eos_token + t + tokenizer.eos_token, add_special_tokens=False)["input_ids"][:max_tokens]
           for t in texts]
    batch = tokenizer.pad({"input_ids": ids}, padding=True, padding_side="right", return_tensors="pt")
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return dict(batch)


def _lm_loss(model: PreTrainedModel, batch: dict, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy over the unmasked targets of `batch`."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    return F.cross_entropy(logits.flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=-100,
                           reduction=reduction)


@torch.no_grad()
def _mean_lm_loss(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], cfg: SftConfig) -> float:
    """Token-weighted mean of the SFT objective over all of `texts`."""
    total, count = 0.0, 0
    for start in tqdm(range(0, len(texts), cfg.batch_size), desc="SFT loss", leave=False):
        batch = _document_batch(tokenizer, texts[start:start + cfg.batch_size], cfg.max_tokens)
        total += _lm_loss(model, batch, reduction="sum").item()
        count += int((batch["labels"][:, 1:] != -100).sum())
    return total / count


def sft(model_dir: Path, texts: list[str], cfg: SftConfig, seed: int, out: Path) -> dict:
    """Fine-tune the model in `model_dir` on `texts` (already filtered to non-toxic ones by the caller),
    save it with its tokenizer to `out/hf` and return the loss on those texts before and after."""
    _check(cfg)
    texts = list(texts[:cfg.max_docs])
    if not texts:
        raise ConfigError("sft: no texts to fine-tune on (did the toxicity filter drop every document?)")
    if not all(isinstance(t, str) and t for t in texts):
        raise ConfigError("sft: every text must be a non-empty string")
    L.seed_everything(seed, workers=True, verbose=False)
    model, tokenizer = load_model(model_dir)
    initial = _mean_lm_loss(model, tokenizer, texts, cfg)
    loader = torch.utils.data.DataLoader(texts, batch_size=cfg.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed),
                                         collate_fn=lambda batch: _document_batch(tokenizer, batch, cfg.max_tokens))
    _fit(_Sft(model, cfg, cfg.steps), loader, cfg)
    final = _mean_lm_loss(model, tokenizer, texts, cfg)
    _save(model, tokenizer, out)
    return {"sft_initial_loss": initial, "sft_final_loss": final, "sft_steps": cfg.steps, "sft_docs": len(texts)}


# ------------------------------------------------------------------------------------------------- DPO


def _dpo_batch(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch: dict, beta: float):
    """DPO loss and rewards of a batch of pairs carrying their reference log-probabilities."""
    n = len(batch["prompt"])
    logps = sequence_logps(model, tokenizer, batch["prompt"] * 2, batch["chosen"] + batch["rejected"])
    return dpo_loss(logps[:n], logps[n:], batch["ref_chosen"].to(logps.device), batch["ref_rejected"].to(logps.device),
                    beta)


def _collate_pairs(rows: list[dict]) -> dict:
    return {"prompt": [r["prompt"] for r in rows], "chosen": [r["chosen"] for r in rows],
            "rejected": [r["rejected"] for r in rows],
            "ref_chosen": torch.tensor([r["ref_chosen"] for r in rows]),
            "ref_rejected": torch.tensor([r["ref_rejected"] for r in rows])}


@torch.no_grad()
def _dpo_metrics(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict], cfg: DpoConfig) -> dict:
    """Loss, reward accuracy (share of pairs whose chosen reward beats the rejected one) and mean
    reward margin over all pairs."""
    losses, chosen, rejected = [], [], []
    for start in tqdm(range(0, len(rows), cfg.batch_size), desc="DPO metrics", leave=False):
        batch = _collate_pairs(rows[start:start + cfg.batch_size])
        loss, chosen_rewards, rejected_rewards = _dpo_batch(model, tokenizer, batch, cfg.beta)
        losses.append(loss.item() * len(batch["prompt"]))
        chosen.append(chosen_rewards)
        rejected.append(rejected_rewards)
    chosen, rejected = torch.cat(chosen), torch.cat(rejected)
    return {"loss": sum(losses) / len(rows), "reward_accuracy": float((chosen > rejected).float().mean()),
            "reward_margin": float((chosen - rejected).mean())}


def dpo(model_dir: Path, pairs: list[tuple[str, str, str]], cfg: DpoConfig, seed: int, out: Path) -> dict:
    """DPO of the model in `model_dir` on (prompt, chosen, rejected) continuations against its frozen
    starting point; save it with its tokenizer to `out/hf` and return the DPO metrics at start and end."""
    _check(cfg)
    if not pairs:
        raise ConfigError("dpo: the preference set is empty")
    for i, pair in enumerate(pairs):
        if len(pair) != 3 or not all(isinstance(s, str) for s in pair) or not pair[1] or not pair[2]:
            raise ConfigError(f"dpo: preference pair {i} is not (prompt, non-empty chosen, non-empty rejected): "
                              f"{pair!r:.200}")
    L.seed_everything(seed, workers=True, verbose=False)
    model, tokenizer = load_model(model_dir)
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in pairs]
    with torch.no_grad():  # the frozen reference: the starting model's log-probabilities
        for start in tqdm(range(0, len(rows), cfg.batch_size), desc="DPO reference", leave=False):
            batch = rows[start:start + cfg.batch_size]
            logps = sequence_logps(model, tokenizer, [r["prompt"] for r in batch] * 2,
                                   [r["chosen"] for r in batch] + [r["rejected"] for r in batch])
            for row, ref_chosen, ref_rejected in zip(batch, logps[:len(batch)], logps[len(batch):]):
                row["ref_chosen"], row["ref_rejected"] = ref_chosen.item(), ref_rejected.item()
    start_metrics = _dpo_metrics(model, tokenizer, rows, cfg)
    loader = torch.utils.data.DataLoader(rows, batch_size=cfg.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed), collate_fn=_collate_pairs)
    _fit(_Dpo(model, tokenizer, cfg, cfg.steps), loader, cfg)
    end_metrics = _dpo_metrics(model, tokenizer, rows, cfg)
    _save(model, tokenizer, out)
    metrics = {f"dpo_initial_{k}": v for k, v in start_metrics.items()}
    metrics.update({f"dpo_final_{k}": v for k, v in end_metrics.items()})
    return {**metrics, "dpo_steps": cfg.steps, "dpo_pairs": len(pairs)}
