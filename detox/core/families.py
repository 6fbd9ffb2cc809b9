"""Model families: where each decoder keeps what probing and ITI read and steer, one small table each.

ITI (Li et al. 2023) works on the attention heads' outputs before they are mixed: the input of the
attention output projection, which is the heads' outputs concatenated (head h owns the slice
[h * head_dim, (h + 1) * head_dim)). Every family names that module differently (`o_proj`, GPT-2's
`c_proj`, GPT-NeoX's `dense`, ai2-olmo's `attn_out`), keeps its blocks under a different attribute,
and reads its head count from a different config field. `Family` says so for one family; everything
that touches heads (probing, the ITI hooks, the baked-bias export) and everything that loads a model
(evaluation, GCG, SFT, DPO, through detox.core.models) goes through `family_of` / `family_for_config`,
so a family is one row of `FAMILIES` and nothing else.

A baked-bias export folds a head shift s into the projection's bias (proj(x + s) = proj(x) + W s). Where
the projection has no bias, one is added; `bias_switch` is the config field that makes the family's
own class build that bias, so the exported model reloads with plain `from_pretrained` (the switch may
add other biases too, e.g. q/k/v: those are written as zeros).

Also here, light for the config check and the plan (no torch at import): reading a local model's
config.json, and a pre-trained model's identity (the content of its files, or a hub commit).
"""

from __future__ import annotations

import json
import operator
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from detox.core.hub import UNRESOLVED, resolve_commit
from detox.core.schema import ConfigError


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # transformers' config.model_type values of this family
    layers: str  # dotted attribute path from the model to its list of decoder blocks
    head_output: str  # dotted path from a block to the module whose input is the heads' outputs, concatenated
    n_heads: str = "num_attention_heads"  # config field: attention heads per layer
    width: str = "hidden_size"  # config field: residual width (head_dim = width / heads unless config.head_dim)
    conv1d: bool = False  # the projection is GPT-2's Conv1D: weight (in, out), y = x W + b
    bias_switch: str | None = "attention_bias"  # config field that gives the projection a bias (None: no such field)

    def blocks(self, model) -> list:
        return list(operator.attrgetter(self.layers)(model))

    def projection(self, block):
        """The module of `block` whose input is the concatenated head outputs."""
        return operator.attrgetter(self.head_output)(block)

    def projections(self, model) -> list:
        return [self.projection(block) for block in self.blocks(model)]

    def head_shape(self, config) -> tuple[int, int]:
        """(heads, head_dim) per layer, from the config."""
        heads = getattr(config, self.n_heads)
        head_dim = getattr(config, "head_dim", None) or getattr(config, self.width) // heads
        return heads, head_dim

    def in_features(self, projection) -> int:
        return projection.weight.shape[0] if self.conv1d else projection.weight.shape[1]

    def weight(self, projection):
        """The projection's weight as (out, in), whatever its layout."""
        return projection.weight.T if self.conv1d else projection.weight


FAMILIES = (
    Family("olmo", ("olmo",), "model.layers", "self_attn.o_proj"),  # transformers' OlmoForCausalLM (our exports)
    Family("olmo2", ("olmo2", "olmo3"), "model.layers", "self_attn.o_proj"),
    Family("llama", ("llama",), "model.layers", "self_attn.o_proj"),
    Family("qwen2", ("qwen2",), "model.layers", "self_attn.o_proj", bias_switch=None),  # o_proj never has a bias
    Family("qwen3", ("qwen3",), "model.layers", "self_attn.o_proj"),
    Family("mistral", ("mistral",), "model.layers", "self_attn.o_proj", bias_switch=None),
    Family("gpt2", ("gpt2",), "transformer.h", "attn.c_proj", n_heads="n_head", width="n_embd", conv1d=True,
           bias_switch=None),  # c_proj always has its bias
    Family("gpt_neox", ("gpt_neox",), "gpt_neox.layers", "attention.dense"),  # Pythia: dense has a bias by default
    # ai2-olmo's own `OLMo` module (what pre-training trains, detox.training.pretrain); its hub checkpoints
    # (config model_type hf_olmo, e.g. allenai/OLMo-1B) are converted to `olmo` on loading
    Family("olmo_ai2", ("olmo_ai2",), "transformer.blocks", "attn_out", n_heads="n_heads", width="d_model",
           bias_switch="include_bias"),
)
AI2_OLMO_MODEL_TYPE = "hf_olmo"  # config.json of ai2-olmo's checkpoints: converted to transformers' Olmo on loading


def family_for_type(model_type: str) -> Family:
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    raise ConfigError(f"model family {model_type!r} is not supported; supported: "
                      f"{', '.join(t for f in FAMILIES for t in f.model_types)}, {AI2_OLMO_MODEL_TYPE}")


def family_for_config(config) -> Family:
    return family_for_type(getattr(config, "model_type", None) or "olmo_ai2")  # ai2-olmo's config has no model_type


def family_of(model) -> Family:
    return family_for_config(model.config)


def head_shape(model) -> tuple[int, int, int]:
    """(layers, heads, head_dim) of `model`, checked against its projections' input width."""
    family = family_of(model)
    heads, head_dim = family.head_shape(model.config)
    projections = family.projections(model)
    width = family.in_features(projections[0])
    if heads * head_dim != width:
        raise ConfigError(f"{family.name}: {heads} heads x {head_dim} dims do not make the {family.head_output} "
                          f"input width {width}")
    return len(projections), heads, head_dim


def add_to_bias(family: Family, projection, vector) -> None:
    """proj(x + vector) == proj'(x): fold W vector into the projection's bias, adding a bias where none is."""
    import torch

    with torch.no_grad():
        shift = family.weight(projection) @ vector.to(projection.weight)
        if projection.bias is not None:
            projection.bias += shift
        else:
            projection.bias = torch.nn.Parameter(shift, requires_grad=projection.weight.requires_grad)


def switch_bias_on(model) -> None:
    """Set the family's `bias_switch` in the config (so the class builds the projections' biases) and give
    every other parameter the switch creates a zero value: the model then saves and reloads as it is."""
    import torch

    family = family_of(model)
    config = model.config.__class__.from_dict(model.config.to_dict())
    if family.bias_switch:
        setattr(config, family.bias_switch, True)
    with torch.device("meta"):  # the model the class builds from that config, without allocating it
        reference = type(model)(config)
    if any(p.bias is None for p in family.projections(reference)):
        raise ConfigError(f"{family.name}: its attention output projection has no bias and its config no switch for "
                          "one: a baked model cannot be saved for from_pretrained; steer it with the hooks instead")
    have = dict(model.named_parameters())
    for name, parameter in reference.named_parameters():
        if name not in have:
            module_name, _, attribute = name.rpartition(".")
            module = model.get_submodule(module_name)
            weight = module.weight
            setattr(module, attribute, torch.nn.Parameter(torch.zeros(parameter.shape, dtype=weight.dtype,
                                                                      device=weight.device)))
    model.config = config


# ------------------------------------------------------------------------ pre-trained models (light)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_local_model(path: str) -> bool:
    return Path(path).expanduser().is_dir() or path.startswith(("/", "./", "../", "~"))


def read_local_config(path: str) -> dict:
    """A local model folder's config.json, or a ConfigError naming what is missing."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"model.path={path!r}: no such folder (a local model folder or a hub id such as "
                          "allenai/OLMo-1B-hf)")
    if not (folder / "config.json").is_file():
        raise ConfigError(f"model.path={path!r}: no config.json in the folder (save the model with save_pretrained)")
    if not any(f.name.endswith(WEIGHT_SUFFIXES) for f in folder.iterdir()):
        raise ConfigError(f"model.path={path!r}: no weight files ({', '.join(WEIGHT_SUFFIXES)}) in the folder")
    return json.loads((folder / "config.json").read_text())


def check_pretrained(path: str, revision: str | None) -> None:
    """Before any work: a local folder holds a model of a supported family; a hub id is well formed."""
    if is_local_model(path):
        if revision:
            raise ConfigError(f"model.revision={revision!r} applies to hub ids only, not the local folder {path!r}")
        model_type = read_local_config(path).get("model_type")
        if model_type != AI2_OLMO_MODEL_TYPE:
            family_for_type(model_type)
    elif not HUB_ID.fullmatch(path):
        raise ConfigError(f"model.path={path!r}: neither a local folder nor a hub id (owner/name)")


def local_identity(path: str) -> dict:
    """A local model folder's identity: its resolved path and the sha256 of every file in it (weights,
    config, tokenizer), memoised per file identity (detox.core.filehash)."""
    from detox.core.filehash import content_hash

    folder = Path(path).expanduser().resolve()
    files = sorted(f for f in folder.rglob("*") if f.is_file() and not any(p.startswith(".") for p in
                                                                             f.relative_to(folder).parts))
    return {"path": str(folder), "files": {str(f.relative_to(folder)): content_hash(f) for f in files}}


@lru_cache(maxsize=None)
def resolve_model_commit(repo: str, revision: str | None, warn: bool = True) -> str:
    """The commit a hub model's revision (None: main) points to, or UNRESOLVED (detox.core.hub), asked
    once per process (a sweep plans many jobs of one model)."""
    return resolve_commit(repo, revision, "model", warn)


def pretrained_identity(path: str, revision: str | None) -> dict:
    """What a pre-trained base model's key is made of: a local folder's file contents, or a hub id at a commit."""
    if is_local_model(path):
        return {"local": local_identity(path)}
    commit = resolve_model_commit(path, revision)
    return {"hub": path, "commit": commit} if commit != UNRESOLVED else {"hub": path, "revision": revision or "main",
                                                                        "commit": UNRESOLVED}
