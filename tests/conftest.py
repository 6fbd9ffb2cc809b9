import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
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


@pytest.fixture(scope="session")
def world_data(tmp_path_factory):
    """A small synthetic world's sources and tokenizer, built once for every test that needs them.

    Returns (DataConfig, folder with `sources/` and `tokenizer/`)."""
    from detox.config import DataConfig
    from detox.data import build_sources, train_tokenizer
    from detox.world import WorldConfig

    root = tmp_path_factory.mktemp("world_data")
    cfg = DataConfig(clean_tokens=10000, seq_len=32, world=WorldConfig(
        clean_docs=300, toxic_docs=300, heldout_docs=10, toxigen_prompts=20, rtp_prompts=5))
    for part in ("sources", "tokenizer"):
        (root / part).mkdir()
    build_sources(cfg, root / "sources")
    train_tokenizer(cfg, root / "sources", root / "tokenizer")
    return cfg, root


@pytest.fixture(scope="session")
def mixture(world_data, tmp_path_factory):
    """A folder with the world's `tokenizer/` and a ratio-10 `mixture/` of 3000 clean tokens."""
    import dataclasses

    from detox.data import build_mixture

    cfg, world = world_data
    root = tmp_path_factory.mktemp("pretrain")
    (root / "mixture").mkdir()
    (root / "tokenizer").symlink_to(world / "tokenizer")
    build_mixture(dataclasses.replace(cfg, clean_tokens=3000), 10, 1, world / "sources", world / "tokenizer",
                  root / "mixture")
    return root


@pytest.fixture
def smoke_job(tmp_path):
    from detox.config import JobConfig

    return JobConfig.from_dict(compose_job("experiment=smoke", f"root={tmp_path}"))
