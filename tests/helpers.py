"""Helpers the tests share (plain functions; the shared fixtures are in conftest.py)."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import OlmoConfig, OlmoForCausalLM, PreTrainedTokenizerFast

from detox.core.tokens import EOS, PAD

REPO = Path(__file__).resolve().parents[1]


def compose_job(*overrides: str) -> dict:
    """The composed config as a plain dict, as launch.py hands it to JobConfig.from_dict."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=list(overrides)), resolve=True)


def launch(*args: str, timeout: int = 600, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run launch.py in a subprocess, as a user would (from `cwd`)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(REPO / "launch.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


CORPUS = ["the cat sat on the mat", "the dog ran in the park", "you are a rude goblin", "what a lovely day it is",
          "the goblin is rude and loud", "a cat and a dog in the sun"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer like detox.data's, trained on a few sentences."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(CORPUS, trainer=trainers.BpeTrainer(
        vocab_size=320, special_tokens=[EOS, PAD], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=PAD)


def tiny_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0, init_std: float = 0.02) -> OlmoForCausalLM:
    torch.manual_seed(seed)
    return OlmoForCausalLM(OlmoConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None, tie_word_embeddings=True, initializer_range=init_std)).eval()


def toxigen_line(statements: list[str]) -> str:
    """A prompt line exactly as ToxiGen's src/make_prompts.py writes it: repr() of the prompt, quotes cut."""
    prompt = "".join(f"- {s}\n" for s in statements) + "-"
    return repr(prompt)[1:-1]
