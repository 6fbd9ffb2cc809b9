import os

# Before any import of huggingface_hub or datasets (helpers imports transformers): both read the offline
# switch once, at import. Set later, `pytest` without HF_HUB_OFFLINE=1 in its environment would let
# datasets retry the unreachable hub for about 20 s in every test that loads a hub id.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DETOX_HASH_CACHE", "")  # file hashes memoised per process: no memo in the home folder

import pytest  # noqa: E402

from helpers import compose_job  # noqa: E402


@pytest.fixture(scope="session")
def world_data(tmp_path_factory):
    """A small synthetic world's sources and tokenizer, built once for every test that needs them.

    Returns (DataConfig, folder with `sources/` and `tokenizer/`)."""
    from detox.data.config import DataConfig
    from detox.data.sources import source_kind
    from detox.data.stages import train_tokenizer
    from detox.data.world import WorldConfig

    root = tmp_path_factory.mktemp("world_data")
    cfg = DataConfig(clean_tokens=10000, seq_len=32, world=WorldConfig(
        clean_docs=300, toxic_docs=300, heldout_docs=10, toxigen_prompts=20, rtp_prompts=5))
    for part in ("sources", "tokenizer"):
        (root / part).mkdir()
    source_kind(cfg).build(root / "sources")
    train_tokenizer(cfg, root / "sources", root / "tokenizer")
    return cfg, root


@pytest.fixture(scope="session")
def mixture(world_data, tmp_path_factory):
    """A folder with the world's `tokenizer/` and a ratio-10 `mixture/` of 3000 clean tokens."""
    import dataclasses

    from detox.data.stages import build_mixture

    cfg, world = world_data
    root = tmp_path_factory.mktemp("pretrain")
    (root / "mixture").mkdir()
    (root / "tokenizer").symlink_to(world / "tokenizer")
    build_mixture(dataclasses.replace(cfg, clean_tokens=3000), 10, 1, world / "sources", world / "tokenizer",
                  root / "mixture")
    return root


@pytest.fixture
def smoke_job(tmp_path):
    from detox.job import JobConfig

    return JobConfig.from_dict(compose_job("experiment=smoke", f"root={tmp_path}"))


@pytest.fixture(scope="session")
def classifier_dir(world_data, tmp_path_factory):
    """A tiny, randomly initialised toxicity classifier saved locally, as a real one would be."""
    root = tmp_path_factory.mktemp("classifier")
    (root / "tokenizer").symlink_to(world_data[1] / "tokenizer")
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from detox.training.pretrain import hf_tokenizer

    tokenizer = hf_tokenizer(root / "tokenizer")
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        pad_token_id=tokenizer.pad_token_id, id2label={0: "neutral", 1: "toxic"}, label2id={"neutral": 0, "toxic": 1}))
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return root / "model"


@pytest.fixture(scope="module")
def launch_module():
    """launch.py imported as a module (its plan functions called in-process, without a subprocess)."""
    import importlib.util

    from helpers import REPO

    spec = importlib.util.spec_from_file_location("launch_under_test", REPO / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
