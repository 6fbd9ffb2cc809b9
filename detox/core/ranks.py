"""Which process of a multi-process run this is. Under SLURM (or torchrun) every rank runs the whole
job; only rank 0 writes the cache, the exports and MLflow, the others join the stages that train."""

import os


def started_externally() -> bool:
    """Whether a launcher (SLURM, torchrun, detox.training.pretrain's own) already started every rank of this run."""
    return "LOCAL_RANK" in os.environ or "SLURM_NTASKS" in os.environ


def process_rank() -> int:
    """This process's global rank (0 when it is the only one)."""
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if key in os.environ:
            return int(os.environ[key])
    return 0
