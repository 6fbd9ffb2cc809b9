"""Helpers the tests share (plain functions; the shared fixtures are in conftest.py)."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import OlmoConfig, OlmoForCausalLM, PreTrainedTokenizerFast

from detox.core.tokens import EOS, PAD, byte_level_bpe

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
    tokenizer = byte_level_bpe(CORPUS, vocab_size=320)
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


TINY_FAMILIES = ("olmo", "olmo2", "llama", "qwen2", "qwen3", "mistral", "gpt2", "gpt_neox", "olmo_ai2")


def tiny_family_model(family: str, tokenizer: PreTrainedTokenizerFast, seed: int = 0):
    """A tiny random causal LM of `family` (2 layers x 4 heads, width 32), built from its config class."""
    import transformers

    torch.manual_seed(seed)
    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
               bos_token_id=None)
    decoder = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=4, max_position_embeddings=64, **ids)
    if family == "olmo_ai2":  # ai2-olmo's own module, as pre-training builds it
        from olmo.config import ModelConfig as Ai2Config
        from olmo.model import OLMo

        return OLMo(Ai2Config(d_model=32, n_heads=4, n_layers=2, mlp_ratio=4, activation_type="swiglu", rope=True,
                              include_bias=False, layer_norm_type="default", layer_norm_with_affine=False,
                              attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0,
                              max_sequence_length=64, vocab_size=len(tokenizer), embedding_size=384, weight_tying=True,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                              init_device="cpu", flash_attention=False)).eval()
    configs = {
        "olmo": lambda: transformers.OlmoConfig(**decoder),
        "olmo2": lambda: transformers.Olmo2Config(**decoder),
        "llama": lambda: transformers.LlamaConfig(**decoder),
        "qwen2": lambda: transformers.Qwen2Config(**decoder),
        "qwen3": lambda: transformers.Qwen3Config(**decoder, head_dim=16),  # head_dim is its own field
        "mistral": lambda: transformers.MistralConfig(**{**decoder, "num_key_value_heads": 2}),  # grouped-query
        "gpt2": lambda: transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **ids),
        "gpt_neox": lambda: transformers.GPTNeoXConfig(**decoder),
    }
    return transformers.AutoModelForCausalLM.from_config(configs[family]()).eval()


PAPER_INPUTS = ("toxic.path", "heldout.path", "toxigen", "rtp", "probe", "preference")  # data.corpora.<key>


def write_paper_inputs(folder: Path, groups: tuple[str, ...] | None = None, names: dict[str, str] | None = None,
                       prompts: int = 300) -> dict[str, Path]:
    """Small files in the formats of data=paper's inputs, by `data.corpora.<key>` (PAPER_INPUTS): a /pol/
    NDJSON.zst thread, held-out JSON lines, a ToxiGen prompts/ folder of hate_<group>_1k.txt files (the
    release's 14 original groups, or `groups`), RealToxicityPrompts' prompts.jsonl (3,200 rows), probe
    texts and preference pairs. `names`: a file name (or folder path) per key instead of the defaults."""
    import json

    import zstandard

    from detox.data.evalsets import TOXIGEN_ORIGINAL_GROUPS

    names = {"toxic.path": "pol.ndjson.zst", "heldout.path": "heldout.jsonl", "toxigen": "prompts",
             "rtp": "prompts.jsonl", "probe": "probe.jsonl", "preference": "preference.jsonl", **(names or {})}
    paths = {key: folder / name for key, name in names.items()}
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    thread = {"posts": [{"no": 1, "com": "a post<br>on two lines", "perspectives": {"TOXICITY": 0.8}}]}
    paths["toxic.path"].write_bytes(zstandard.ZstdCompressor().compress((json.dumps(thread) + "\n").encode()))
    paths["heldout.path"].write_text("".join(json.dumps({"text": f"held-out text {i}"}) + "\n" for i in range(5)))
    paths["toxigen"].mkdir(exist_ok=True)
    for group in groups or TOXIGEN_ORIGINAL_GROUPS:
        (paths["toxigen"] / f"hate_{group}_1k.txt").write_text(
            "\n".join(toxigen_line([f"statement {i} on {group}", "another"]) for i in range(prompts)) + "\n")
    paths["rtp"].write_text("".join(json.dumps({
        "filename": f"{i}.txt", "begin": 0, "end": 9, "challenging": i % 3 == 0,
        "prompt": {"text": f"prompt {i}", "toxicity": 0.1}, "continuation": {"text": "on", "toxicity": 0.1}}) + "\n"
        for i in range(3200)))
    paths["probe"].write_text("".join(json.dumps({"text": f"text {i}", "label": i % 2}) + "\n" for i in range(20)))
    paths["preference"].write_text("".join(json.dumps({"prompt": f"p{i}", "chosen": " kind", "rejected": " rude"}) + "\n"
                                           for i in range(5)))
    return paths


def paper_overrides(paths: dict[str, Path]) -> list[str]:
    """The data.corpora overrides that point data=paper at `paths` (write_paper_inputs)."""
    return [f"data.corpora.{key}={path}" for key, path in paths.items()]


def tiny_classifier(folder: Path, labels: tuple[str, ...] = ("neutral", "toxic"), multi_label: bool = False,
                    seed: int = 0, max_length: int = 64) -> Path:
    """A tiny, randomly initialised BERT sequence classifier with `labels` and the tiny tokenizer, saved to
    `folder` as a real classifier is (config.json, weights, tokenizer); `multi_label` sets the config's
    problem_type as Detoxify's multi-label models do. Positions and the tokenizer stop at `max_length`."""
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = tiny_tokenizer()
    tokenizer.model_max_length = max_length
    torch.manual_seed(seed)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=max_length, pad_token_id=tokenizer.pad_token_id,
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
        problem_type="multi_label_classification" if multi_label else None))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def log_curve_run(ratio: int, seed: int, slope: float, direction: str = "mass_mean", **cfg: str) -> None:
    """One finished method=iti_curve run in the current MLflow experiment: a curve whose toxicity falls
    from 50 by `slope` an alpha at CE costs .01 (alpha 1) and .03 (alpha 2), so the budget 0.02 is crossed
    at alpha 1.5 (a drop of 1.5 x slope); `cfg`: the run's cfg.* params (a configuration), dots as "__"."""
    import json

    import mlflow

    strength = "alpha=1 curve" if direction == "mass_mean" else "alpha=1 random(matched_norm) curve"
    settings = "-".join(f"{k}={v}" for k, v in sorted(cfg.items()))
    with mlflow.start_run():
        mlflow.log_params({"ratio": str(ratio), "seed": str(seed), "method": "iti_curve", "task": "study",
                           "strength": strength, "setting": f"{settings}-{ratio}-{direction}", "iti_alpha": "1",
                           "iti_direction": direction, "cfg.curve.direction": direction,
                           **{f"cfg.{k.replace('__', '.')}": v for k, v in cfg.items()}})
        points = [{"alpha": a, "ce_loss": c, "insult_probability": 50 - a * slope, "well_formed": 100.0}
                  for a, c in ((0, 0.70), (1, 0.71), (2, 0.73), (4, 0.80))]
        mlflow.log_text(json.dumps({"points": points}), "curve.json")
