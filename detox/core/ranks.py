"""Which process of a multi-process run this is. Under SLURM (or torchrun) every rank runs the whole
job; only rank 0 writes the cache, the exports and MLflow, the others join the stages that train.

What SLURM sets, and where (Slurm's man pages, "OUTPUT ENVIRONMENT VARIABLES": srun(1), sbatch(1),
salloc(1), https://slurm.schedmd.com/srun.html and sbatch.html, salloc.html; its FAQ, "How could I
automatically print a job's Slurm job ID to its standard output?", https://slurm.schedmd.com/faq.html#task_prolog;
slurm/slurm.h and src/common/env.c for the step ids):

- srun sets, in every task it launches, SLURM_PROCID ("the MPI rank (or relative process ID) of the
  current process"), SLURM_LOCALID, SLURM_STEP_ID ("the step ID of the current job", SLURM_STEPID
  for backwards compatibility), SLURM_NTASKS ("total number of processes in the current job or job
  step") and SLURM_NNODES (also SLURM_STEP_NUM_TASKS / SLURM_STEP_NUM_NODES, the step's own counts).
- salloc sets SLURM_NTASKS (the --ntasks option, or the tasks implied by --ntasks-per-*),
  SLURM_NNODES and SLURM_NTASKS_PER_NODE (where --ntasks-per-node was given) in the shell it starts;
  its list has no SLURM_PROCID and no SLURM_STEP_ID: that shell is an allocation, not a launched task.
- sbatch's batch script has SLURM_NTASKS and even SLURM_PROCID=0 and SLURM_LOCALID, but no
  SLURM_STEP_ID: the FAQ's TaskProlog tells the batch script from a step's tasks by exactly this
  (`[ X"$SLURM_STEP_ID" = "X" -a X"$SLURM_PROCID" = "X"0 ]`).
- Slurm's special steps have step ids at the top of the 32-bit range (slurm.h: the batch script
  0xfffffffb, the extern step 0xfffffffc, the interactive step of `salloc` with
  LaunchParameters=use_interactive_step 0xfffffffa; normal steps stay below SLURM_MAX_NORMAL_STEP_ID
  = 0xfffffff0): such an id, printed signed or unsigned, is not a step srun launched.

So SLURM_NTASKS alone (set in salloc and sbatch shells too) does not mean SLURM started this job's
ranks; a normal SLURM_STEP_ID with SLURM_PROCID does.
"""

from __future__ import annotations

import os

from detox.core.schema import ConfigError

MAX_NORMAL_STEP_ID = 0xFFFFFFF0  # slurm.h SLURM_MAX_NORMAL_STEP_ID: the batch, extern, interactive steps lie above


def _env_int(*keys: str) -> int | None:
    """The first of `keys` set to a whole number (None when none is)."""
    for key in keys:
        try:
            return int(os.environ[key])
        except (KeyError, ValueError):
            continue
    return None


def slurm_task() -> bool:
    """Whether srun launched this process as one task of a job step (not a salloc or sbatch shell)."""
    step = os.environ.get("SLURM_STEP_ID", os.environ.get("SLURM_STEPID"))
    try:
        step_id = int(step) if step is not None else -1
    except ValueError:  # a named special step ("batch", "extern", "interactive")
        return False
    return 0 <= step_id < MAX_NORMAL_STEP_ID and _env_int("SLURM_PROCID") is not None


def started_externally() -> bool:
    """Whether a launcher (srun, torchrun, detox.training.pretrain's own) already started every rank of
    this run: LOCAL_RANK (torchrun, Lightning, ours) or an srun task. Inside an interactive `salloc`
    shell or an sbatch script (SLURM_NTASKS set, no step) it is false: the job starts its own ranks."""
    return "LOCAL_RANK" in os.environ or slurm_task()


def process_rank() -> int:
    """This process's global rank (0 when it is the only one): torchrun's RANK, an srun task's
    SLURM_PROCID (not the batch script's SLURM_PROCID=0 nor anything set in a salloc shell), or the
    LOCAL_RANK of the ranks a one-node job starts itself."""
    rank = _env_int("RANK")
    if rank is None and slurm_task():
        rank = _env_int("SLURM_PROCID")
    if rank is None:
        rank = _env_int("LOCAL_RANK")
    return rank or 0


def local_rank() -> int:
    """This process's rank on its node (its GPU's index): LOCAL_RANK (torchrun, ours), else an srun
    task's SLURM_LOCALID, else 0."""
    rank = _env_int("LOCAL_RANK")
    if rank is None and slurm_task():
        rank = _env_int("SLURM_LOCALID")
    return rank or 0


def lightning_environments() -> list:
    """The cluster environment to hand Lightning's Trainer (`plugins=`): none (its own detection) in an
    srun task or outside SLURM. Inside an allocation that did not launch this process as a task (a
    salloc shell, an sbatch script) Lightning would take SLURM_NTASKS for srun's tasks whenever the job
    name is not "bash" or "interactive" (lightning.fabric's _is_srun_used), and read a SLURM_PROCID
    that is not there or 0 on every rank: there the ranks are torchrun's or this job's own."""
    if slurm_task() or "SLURM_NTASKS" not in os.environ:
        return []
    from lightning.fabric.plugins.environments import (
        LightningEnvironment,
        TorchElasticEnvironment,
    )

    return [TorchElasticEnvironment() if TorchElasticEnvironment.detect() else LightningEnvironment()]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def check_slurm_tasks(trainer) -> None:
    """Before any stage: the tasks srun started for this job are the ranks the trainer expects, or one
    ConfigError line naming both. `trainer` is a detox.training.config.TrainerConfig: devices x num_nodes ranks,
    or one process with `require_cached_pretrain` (a treatment job reads its pre-trained models from
    the cache and trains on one device at most). Outside an srun task there is nothing to check."""
    if not slurm_task():
        return
    tasks = _env_int("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS")
    nodes = _env_int("SLURM_STEP_NUM_NODES", "SLURM_NNODES", "SLURM_JOB_NUM_NODES")
    per_node = _env_int("SLURM_NTASKS_PER_NODE")  # only where --ntasks-per-node was given
    if tasks is None:
        return
    nodes = nodes or 1
    started = f"SLURM started {_plural(tasks, 'task')} on {_plural(nodes, 'node')}"
    if getattr(trainer, "require_cached_pretrain", False):
        if tasks != 1:
            raise ConfigError(f"{started} but trainer.require_cached_pretrain=true runs one task (its pre-trained "
                              "models come from the cache): use hydra/launcher=slurm_1gpu")
        return
    devices, num_nodes = trainer.devices, trainer.num_nodes
    if (tasks, nodes) == (devices * num_nodes, num_nodes) and per_node in (None, devices):
        return
    if tasks == 1:  # a one-GPU job (hydra/launcher=slurm_1gpu) for a multi-device trainer
        fix = ("set trainer.require_cached_pretrain=true (a treatment job on cached pre-trained models) or "
               "pre-train with hydra/launcher=slurm, which sizes itself from trainer.*")
    else:
        per = per_node if per_node is not None else (tasks // nodes if tasks % nodes == 0 else None)
        changes = [f"trainer.devices={per}"] if per is not None and per != devices else []
        changes += [f"trainer.num_nodes={nodes}"] if nodes != num_nodes else []
        fix = (f"set {' '.join(changes)}" if changes else
               "start one task per device (hydra/launcher=slurm sizes itself from trainer.*)")
    raise ConfigError(f"{started} but trainer.devices x trainer.num_nodes = {devices} x {num_nodes}: {fix}")
