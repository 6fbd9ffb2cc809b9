"""The processes of one node. Lightning starts the other ranks of a multi-device run by re-running the
calling script. That suits a training script, not a sweep job: a re-run `launch.py -m` would start the
whole sweep again. So a job that trains on several local devices starts its other ranks itself, each
running only this stage (`python -m detox.training.pretrain ARGS.json`, the package's `__main__`);
Lightning then takes the processes as given (the LOCAL_RANK environment variable), as under torchrun or
SLURM.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from detox.core.ranks import started_externally
from detox.core.schema import ConfigError
from detox.training.config import ModelConfig, TrainerConfig
from detox.training.pretrain.stage import pretrain


def pretrain_on_local_ranks(model_cfg: ModelConfig, trainer_cfg: TrainerConfig, seq_len: int, seed: int,
                            mixture: Path, tokenizer_dir: Path, out: Path) -> dict:
    """`pretrain` with every rank of one node: this process is rank 0, the others are started here."""
    import socket
    import subprocess
    import sys

    ranks = trainer_cfg.devices
    if (ranks == 1 and trainer_cfg.num_nodes == 1) or started_externally():
        return pretrain(model_cfg, trainer_cfg, seq_len, seed, mixture, tokenizer_dir, out)
    if trainer_cfg.num_nodes > 1:
        raise ConfigError(f"trainer.num_nodes={trainer_cfg.num_nodes} needs a launcher that starts every node's "
                          "processes: hydra/launcher=slurm")
    with socket.socket() as s:  # a free port for the process group's rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = out / "ranks.json"
    spec.write_text(json.dumps({"model": vars(model_cfg), "trainer": vars(trainer_cfg), "seq_len": seq_len,
                                "seed": seed, "mixture": str(mixture), "tokenizer": str(tokenizer_dir), "out": str(out)}))
    shared = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(ranks), "NODE_RANK": "0"}
    children = [subprocess.Popen([sys.executable, "-m", "detox.training.pretrain", str(spec)],
                                 env={**os.environ, **shared, "LOCAL_RANK": str(rank)}) for rank in range(1, ranks)]
    previous = {key: os.environ.get(key) for key in (*shared, "LOCAL_RANK")}
    os.environ.update({**shared, "LOCAL_RANK": "0"})
    try:
        metrics = pretrain(model_cfg, trainer_cfg, seq_len, seed, mixture, tokenizer_dir, out)
    except BaseException:
        for child in children:  # rank 0 failed: the other ranks would wait for it forever
            child.kill()
        raise
    finally:
        for key, value in previous.items():
            os.environ.pop(key, None) if value is None else os.environ.update({key: value})
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # this process may run the next job of a sweep (Hydra's basic launcher): its pre-training needs a
            # process group of its own, not this one, whose other ranks are gone
            torch.distributed.destroy_process_group()
        failed = [child.args for child in children if child.wait() != 0]
    if failed:
        raise RuntimeError(f"pre-training ranks failed: {failed}")
    spec.unlink()
    return metrics


def run_rank(spec_path: str) -> None:
    """One of the other ranks: `pretrain` with the arguments rank 0 wrote to `spec_path`."""
    spec = json.loads(Path(spec_path).read_text())
    trainer = spec["trainer"]
    trainer["betas"] = tuple(trainer["betas"])
    pretrain(ModelConfig(**spec["model"]), TrainerConfig(**trainer), spec["seq_len"], spec["seed"],
             Path(spec["mixture"]), Path(spec["tokenizer"]), Path(spec["out"]))
