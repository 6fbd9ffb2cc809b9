"""Loading a model: what evaluation, probing, GCG and post-training all start from.

Any causal LM of a supported family (detox.core.families) loads here with its own tokenizer: the
models this project pre-trains (exported as transformers' OlmoForCausalLM) and pre-trained ones
(`model.path`, recorded by `record_pretrained`). ai2-olmo's hub checkpoints (model_type hf_olmo,
e.g. allenai/OLMo-1B; transformers 5 no longer loads them through ai2-olmo's `hf_olmo`) are converted
once to transformers' Olmo, same logits.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, OlmoConfig, OlmoForCausalLM

from detox.core import families
from detox.core.artifacts import HF_MODEL
from detox.core.schema import ConfigError

PRETRAINED_RECORD = "model.json"  # the pre-trained base stage: where its model came from and its shape


def inference_device() -> torch.device:
    """The first GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_tokenizer(model_dir: Path):
    """The model's own tokenizer; one without a padding token pads with its end-of-text token (GPT-2,
    Pythia, Llama), which every use here masks out."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.eos_token is None:
        raise ConfigError(f"{model_dir}: the tokenizer has no end-of-text token, which separates documents here")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model_dir: Path, device: torch.device | None = None):
    """The model in `model_dir` (a supported family) in eval mode on `device` (default: `inference_device()`)
    and its tokenizer."""
    families.family_for_config(AutoConfig.from_pretrained(model_dir))  # one line naming an unsupported family
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval().to(device or inference_device())
    return model, load_tokenizer(model_dir)


# --------------------------------------------------------------------------- pre-trained base models


def record_pretrained(path: str, identity: dict, out: Path) -> dict:
    """The pre-trained base stage: `out/hf` is the model (a link to the local folder or the hub snapshot
    of the recorded commit; an ai2-olmo checkpoint converted to transformers' Olmo), `out/model.json`
    where it came from; the metrics are its shape."""
    if "local" in identity:
        folder = Path(identity["local"]["path"])
    else:  # an unresolved revision is downloaded by its name; the commit it got is recorded below
        folder = download(identity["hub"], identity["commit"] if identity["commit"] != families.UNRESOLVED
                          else identity["revision"])
        identity = {**identity, "commit": folder.name}  # the snapshot's folder is named by its commit
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") == families.AI2_OLMO_MODEL_TYPE:
        convert_ai2_olmo(folder, out / HF_MODEL)
    else:
        os.symlink(folder, out / HF_MODEL, target_is_directory=True)
    hf_config = AutoConfig.from_pretrained(out / HF_MODEL)
    family = families.family_for_config(hf_config)
    with torch.device("meta"):  # the shape without allocating the weights
        skeleton = AutoModelForCausalLM.from_config(hf_config)
    layers, heads, head_dim = families.head_shape(skeleton)
    record = {"path": path, **identity, "family": family.name, "layers": layers, "heads": heads, "head_dim": head_dim}
    (out / PRETRAINED_RECORD).write_text(json.dumps(record, indent=2))
    return {"base_layers": layers, "base_heads": heads, "base_head_dim": head_dim,
            "base_parameters": sum(p.numel() for p in skeleton.parameters())}


def download(repo: str, commit: str) -> Path:
    """The hub model's snapshot at `commit` (or a branch or tag), from the local hub cache when it is there,
    else downloaded: its config, tokenizer and weights (safetensors only where the repository has them), no
    other frameworks' files."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo, revision=commit, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.bin"]
    if any(name.endswith(".safetensors") for name in HfApi().list_repo_files(repo, revision=commit)):
        patterns.remove("*.bin")
    return Path(snapshot_download(repo, revision=commit, allow_patterns=patterns))


def _state_dict(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state = {}
    for file in sorted(folder.iterdir()):
        if file.suffix == ".safetensors":
            state.update(load_file(file))
        elif file.suffix in (".bin", ".pt", ".pth"):
            state.update(torch.load(file, map_location="cpu", weights_only=True))
    return state


AI2_REQUIRED = {"rope": True, "include_bias": False, "layer_norm_type": "default", "layer_norm_with_affine": False,
                "activation_type": "swiglu", "block_type": "sequential", "attention_layer_norm": False}


def ai2_to_hf_olmo(config: dict, state: dict[str, torch.Tensor]) -> OlmoForCausalLM:
    """An ai2-olmo model (its config as a dict, its state dict with `transformer.` keys) as transformers'
    OlmoForCausalLM with the same logits (OLMo's fused q/k/v and SwiGLU projections split)."""
    for key, value in AI2_REQUIRED.items():
        if config.get(key, value) != value:
            raise ConfigError(f"ai2-olmo checkpoint with {key}={config.get(key)!r}: only {key}={value!r} "
                              "converts to transformers' Olmo")
    d, heads, layers = config["d_model"], config["n_heads"], config["n_layers"]
    if config.get("n_kv_heads") not in (None, heads):
        raise ConfigError(f"ai2-olmo checkpoint with n_kv_heads={config['n_kv_heads']}: only full multi-head attention "
                          "converts to transformers' Olmo")
    hidden = config.get("mlp_hidden_size") or d * config["mlp_ratio"]
    tied = config.get("weight_tying", True)
    hf = OlmoForCausalLM(OlmoConfig(
        vocab_size=config.get("embedding_size") or config["vocab_size"], hidden_size=d, intermediate_size=hidden // 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=config["max_sequence_length"], rope_theta=config.get("rope_theta", 10_000),
        attention_bias=False, clip_qkv=config.get("clip_qkv"), pad_token_id=config.get("pad_token_id"),
        eos_token_id=config.get("eos_token_id"), bos_token_id=None, tie_word_embeddings=tied))
    state = {key.removeprefix("model."): value for key, value in state.items()}
    weights = {"model.embed_tokens.weight": state["transformer.wte.weight"],
               "lm_head.weight": state["transformer.wte.weight" if tied else "transformer.ff_out.weight"]}
    for i in range(layers):
        block, layer = f"transformer.blocks.{i}.", f"model.layers.{i}."
        q, k, v = state[block + "att_proj.weight"].split(d, dim=0)
        up, gate = state[block + "ff_proj.weight"].chunk(2, dim=0)  # OLMo's SwiGLU: x, gate = chunk(2)
        weights.update({
            layer + "self_attn.q_proj.weight": q, layer + "self_attn.k_proj.weight": k,
            layer + "self_attn.v_proj.weight": v, layer + "self_attn.o_proj.weight": state[block + "attn_out.weight"],
            layer + "mlp.gate_proj.weight": gate, layer + "mlp.up_proj.weight": up,
            layer + "mlp.down_proj.weight": state[block + "ff_out.weight"],
        })
    hf.load_state_dict(weights, strict=True)
    return hf.eval()


def convert_ai2_olmo(folder: Path, out: Path) -> None:
    """An ai2-olmo checkpoint folder (config.json of model_type hf_olmo, weights, tokenizer.json) saved to
    `out` as transformers' Olmo with its tokenizer."""
    from transformers import PreTrainedTokenizerFast

    config = json.loads((folder / "config.json").read_text())
    ai2_to_hf_olmo(config, _state_dict(folder)).save_pretrained(out)
    if not (folder / "tokenizer.json").is_file():
        raise ConfigError(f"{folder}: an ai2-olmo checkpoint without tokenizer.json")
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    eos = tokenizer.convert_ids_to_tokens(config["eos_token_id"])
    pad = tokenizer.convert_ids_to_tokens(config["pad_token_id"]) if config.get("pad_token_id") is not None else eos
    tokenizer.eos_token, tokenizer.pad_token = eos, pad
    tokenizer.save_pretrained(out)
