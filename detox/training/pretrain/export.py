"""The stage's artifact: the trained OLMo as a transformers `OlmoForCausalLM` (identical logits) with
its tokenizer, what the stages after pre-training load.

ai2-olmo's own `hf_olmo` converter writes a format that transformers 5 no longer loads, so the weights
are mapped onto the native transformers Olmo by hand (detox.core.models.ai2_to_hf_olmo).
"""

from __future__ import annotations

from pathlib import Path

import torch
from olmo.model import OLMo
from transformers import OlmoForCausalLM, PreTrainedTokenizerFast

from detox.core.models import ai2_to_hf_olmo
from detox.core.tokens import EOS, PAD, load_tokenizer


def export_hf(model: OLMo, tokenizer_dir: Path, out: Path, state: dict[str, torch.Tensor] | None = None
              ) -> OlmoForCausalLM:
    """Write `model` (or `state`, its unsharded weights, when `model` is sharded) as a transformers
    `OlmoForCausalLM` (same logits) with its tokenizer to `out`."""
    hf = ai2_to_hf_olmo(model.config.asdict(), model.state_dict() if state is None else state)  # one mapping
    hf.save_pretrained(out)
    hf_tokenizer(tokenizer_dir).save_pretrained(out)
    return hf


def hf_tokenizer(tokenizer_dir: Path) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=load_tokenizer(tokenizer_dir), eos_token=EOS, pad_token=PAD)
