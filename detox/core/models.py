"""Loading an exported model: what evaluation, probing and post-training all start from."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import OlmoForCausalLM, PreTrainedTokenizerFast


def inference_device() -> torch.device:
    """The first GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(model_dir: Path, device: torch.device | None = None) -> tuple[OlmoForCausalLM, PreTrainedTokenizerFast]:
    """The exported model in eval mode on `device` (default: `inference_device()`) and its tokenizer."""
    model = OlmoForCausalLM.from_pretrained(model_dir).eval().to(device or inference_device())
    return model, PreTrainedTokenizerFast.from_pretrained(model_dir)
