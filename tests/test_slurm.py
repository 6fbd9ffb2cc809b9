"""SLURM without a cluster: the launcher sized from trainer.*, the tasks SLURM started checked against
the trainer before any stage, a salloc or sbatch shell told from a task srun launched, and the
two-phase recipe's guard (a phase-2 job never pre-trains). The SLURM environments are the variables
srun(1), salloc(1) and sbatch(1) document (see detox/core/ranks.py); `fake_slurm` stands in for
sbatch, srun and sacct, so a real `launch.py -m hydra/launcher=slurm` sweep submits through submitit
and its jobs run as SLURM's tasks would."""

import os
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import REPO, compose_job, launch
from hydra import compose, initialize_config_dir

from detox import pipeline
from detox.core import ranks
from detox.core.cache import StageCache
from detox.core.schema import ConfigError
from detox.job import JobConfig
from detox.jobs import require_cached_pretrain
from detox.training.config import TrainerConfig

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "TORCHELASTIC_RUN_ID")


@pytest.fixture(autouse=True)
def no_launcher_environment(monkeypatch):
    """Each test starts outside any SLURM job or torchrun (as if CI itself ran under one)."""
    for key in list(os.environ):
        if key.startswith(("SLURM_", "SBATCH_", "SALLOC_")) or key in RANK_VARIABLES:
            monkeypatch.delenv(key)


def salloc_shell(tasks=8, nodes=1, job_name="zsh") -> dict:
    """The shell `salloc -N <nodes> --ntasks-per-node <tasks/nodes>` starts: an allocation, no task."""
    return {"SLURM_JOB_ID": "77", "SLURM_JOB_NAME": job_name, "SLURM_NTASKS": str(tasks), "SLURM_NPROCS": str(tasks),
            "SLURM_NNODES": str(nodes), "SLURM_JOB_NUM_NODES": str(nodes), "SLURM_NTASKS_PER_NODE": str(tasks // nodes)}


def sbatch_script(tasks=8, nodes=1) -> dict:
    """The batch script's environment: SLURM_PROCID=0 and SLURM_LOCALID too, but no SLURM_STEP_ID."""
    return {**salloc_shell(tasks, nodes, "train.sh"), "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}


def srun_task(tasks=8, nodes=1, rank=0) -> dict:
    """One task of `srun` inside such an allocation (step 0)."""
    per_node = tasks // nodes
    return {**salloc_shell(tasks, nodes, "launch"), "SLURM_STEP_ID": "0", "SLURM_STEPID": "0",
            "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(rank % per_node), "SLURM_NODEID": str(rank // per_node),
            "SLURM_STEP_NUM_TASKS": str(tasks), "SLURM_STEP_NUM_NODES": str(nodes)}


def set_env(monkeypatch, env: dict) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)


# ------------------------------------------------------------------------------- the launcher's sizes

def launcher_config(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    return cfg.hydra.launcher  # its interpolations resolve against the job's config on access


@pytest.mark.parametrize("overrides, sizes", [
    (("trainer=fsdp",), (1, 8, 8)),
    (("trainer=fsdp", "trainer.num_nodes=2"), (2, 8, 8)),
    (("trainer=ddp", "trainer.devices=4", "trainer.num_nodes=3"), (3, 4, 4)),
    (("trainer=gpu",), (1, 1, 1)),
])
def test_the_launcher_is_sized_from_the_trainer(overrides, sizes):
    launcher = launcher_config("hydra/launcher=slurm", *overrides)
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == sizes
    assert launcher.max_num_timeout > 0  # a job killed at its time limit is requeued


def test_the_treatment_launcher_is_one_gpu_whatever_the_trainer():
    launcher = launcher_config("hydra/launcher=slurm_1gpu", "trainer=fsdp", "trainer.num_nodes=2")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (1, 1, 1)
    assert launcher.max_num_timeout > 0
    assert launcher._target_.endswith("SlurmLauncher")


# ------------------------------------------------------------------------------- which process is this

@pytest.mark.parametrize("env", [
    salloc_shell(), salloc_shell(job_name="bash"), sbatch_script(),
    {**sbatch_script(), "SLURM_STEP_ID": "4294967291"},  # the batch step, as an unsigned id
    {**salloc_shell(), "SLURM_STEP_ID": "4294967290", "SLURM_PROCID": "0"},  # salloc's interactive step
    {**salloc_shell(), "SLURM_STEP_ID": "-4", "SLURM_PROCID": "0"},  # the extern step, printed signed
    {**salloc_shell(), "SLURM_STEP_ID": "extern", "SLURM_PROCID": "0"},
], ids=["salloc", "salloc-bash", "sbatch", "batch-step", "interactive-step", "extern-step", "named-step"])
def test_an_allocation_shell_is_not_a_launched_job(monkeypatch, env):
    set_env(monkeypatch, env)
    assert not ranks.slurm_task() and not ranks.started_externally()
    assert ranks.process_rank() == 0
    ranks.check_slurm_tasks(TrainerConfig(devices=2, strategy="ddp"))  # nothing to check: the job starts its ranks
    # the job's own ranks there are not SLURM's tasks, whatever the job name says to Lightning
    assert [type(e).__name__ for e in ranks.lightning_environments()] == ["LightningEnvironment"]


def test_a_task_srun_launched_is_a_launched_job(monkeypatch):
    set_env(monkeypatch, srun_task(tasks=16, nodes=2, rank=11))
    assert ranks.slurm_task() and ranks.started_externally()
    assert ranks.process_rank() == 11
    assert ranks.lightning_environments() == []  # Lightning's own SLURM environment


def test_torchrun_ranks_are_launched_ones(monkeypatch):
    set_env(monkeypatch, {"LOCAL_RANK": "1", "RANK": "5", "WORLD_SIZE": "8"})
    assert ranks.started_externally() and ranks.process_rank() == 5
    set_env(monkeypatch, {**sbatch_script(), "TORCHELASTIC_RUN_ID": "x"})  # torchrun inside an sbatch script
    assert ranks.process_rank() == 5
    assert [type(e).__name__ for e in ranks.lightning_environments()] == ["TorchElasticEnvironment"]


def test_outside_slurm_nothing_changes():
    assert not ranks.started_externally() and ranks.process_rank() == 0 and ranks.lightning_environments() == []


# ------------------------------------------------------------------------------- SLURM's tasks against the trainer

@pytest.mark.parametrize("env, trainer, message", [
    (srun_task(16, 2), TrainerConfig(devices=8, num_nodes=1, strategy="ddp"),
     "SLURM started 16 tasks on 2 nodes but trainer.devices x trainer.num_nodes = 8 x 1: set trainer.num_nodes=2"),
    (srun_task(16, 2), TrainerConfig(devices=16, num_nodes=1, strategy="ddp"),
     "SLURM started 16 tasks on 2 nodes but trainer.devices x trainer.num_nodes = 16 x 1: "
     "set trainer.devices=8 trainer.num_nodes=2"),
    (srun_task(8, 1), TrainerConfig(devices=4, num_nodes=2, strategy="ddp"),
     "SLURM started 8 tasks on 1 node but trainer.devices x trainer.num_nodes = 4 x 2: "
     "set trainer.devices=8 trainer.num_nodes=1"),
    (srun_task(1, 1), TrainerConfig(devices=8, num_nodes=2, strategy="fsdp"),
     "SLURM started 1 task on 1 node but trainer.devices x trainer.num_nodes = 8 x 2: set "
     "trainer.require_cached_pretrain=true"),
    (srun_task(16, 2), TrainerConfig(devices=8, num_nodes=2, strategy="fsdp", require_cached_pretrain=True),
     "SLURM started 16 tasks on 2 nodes but trainer.require_cached_pretrain=true runs one task"),
])
def test_a_task_layout_that_differs_from_the_trainer_is_one_line(monkeypatch, env, trainer, message):
    set_env(monkeypatch, env)
    with pytest.raises(ConfigError) as error:
        ranks.check_slurm_tasks(trainer)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize("env, trainer", [
    (srun_task(16, 2, rank=3), TrainerConfig(devices=8, num_nodes=2, strategy="fsdp")),
    (srun_task(1, 1), TrainerConfig()),
    (srun_task(1, 1), TrainerConfig(devices=8, num_nodes=2, strategy="fsdp", require_cached_pretrain=True)),
])
def test_a_matching_task_layout_passes(monkeypatch, env, trainer):
    set_env(monkeypatch, env)
    ranks.check_slurm_tasks(trainer)


def test_srun_with_the_wrong_task_count_stops_launch_before_any_stage(monkeypatch, tmp_path):
    """`srun -N 2 --ntasks-per-node 1 python launch.py ...` for a one-device trainer: exit code 2, one line."""
    set_env(monkeypatch, srun_task(tasks=2, nodes=2, rank=0))
    result = launch("experiment=smoke", f"root={tmp_path}")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    lines = [line for line in output.splitlines() if "invalid configuration" in line]
    assert len(lines) == 1 and lines[0].endswith(
        "SLURM started 2 tasks on 2 nodes but trainer.devices x trainer.num_nodes = 1 x 1: set trainer.num_nodes=2")
    assert "Traceback" not in output
    assert not (tmp_path / "cache").exists()  # no stage ran, not even the sources


# ------------------------------------------------------------------------------- phase 2's guard

def smoke(*overrides: str, root: Path) -> JobConfig:
    return JobConfig.from_dict(compose_job("experiment=smoke", f"root={root}", *overrides))


def test_the_guard_changes_no_cache_key(tmp_path):
    for method in ("none", "iti", "meda"):
        off = smoke(f"method={method}", root=tmp_path)
        on = smoke(f"method={method}", "trainer.require_cached_pretrain=true", root=tmp_path)
        assert pipeline.study_plan(off).keys() == pipeline.study_plan(on).keys()


def test_the_guard_names_the_missing_model_and_the_phase_one_command(tmp_path):
    cache = StageCache(tmp_path / "cache")
    job = smoke("method=prompting", "ratio=10", "seed=2", "trainer.require_cached_pretrain=true", root=tmp_path)
    base = pipeline.study_plan(job).keys()["pretrain"]
    with pytest.raises(ConfigError) as error:
        require_cached_pretrain(job, pipeline.study_plan(job), cache)
    assert str(error.value) == (
        f"trainer.require_cached_pretrain=true but the pre-trained model of ratio=10 seed=2 method=none (pretrain key "
        f"{base}) is not in {cache.root}: pre-train it first (phase 1): python launch.py -m hydra/launcher=slurm "
        "ratio=10 seed=2 method=none with this job's data, model and trainer overrides")
    cache.path("pretrain", base).mkdir(parents=True)  # the base model, cached
    require_cached_pretrain(job, pipeline.study_plan(job), cache)
    meda = replace(job, method=smoke("method=meda", root=tmp_path).method)  # MEDA pre-trains its own model
    with pytest.raises(ConfigError, match="the pre-trained model of ratio=10 seed=2 method=meda"):
        require_cached_pretrain(meda, pipeline.study_plan(meda), cache)


def test_phase_two_on_an_empty_cache_stops_before_any_stage(tmp_path):
    result = launch("experiment=smoke", f"root={tmp_path}", "method=prompting", "trainer.require_cached_pretrain=true")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    lines = [line for line in output.splitlines() if "invalid configuration" in line]
    assert len(lines) == 1 and "the pre-trained model of ratio=0 seed=1 method=none (pretrain key " in lines[0]
    assert "python launch.py -m hydra/launcher=slurm ratio=0 seed=1 method=none" in lines[0]
    assert "Traceback" not in output and not (tmp_path / "cache").exists()


def test_phase_two_runs_on_the_cached_base_model(tmp_path):  # about 15 s: two smoke jobs
    first = launch("experiment=smoke", f"root={tmp_path}", "method=none")  # phase 1: builds the base model
    assert first.returncode == 0, first.stderr[-3000:]
    second = launch("experiment=smoke", f"root={tmp_path}", "method=prompting", "trainer.require_cached_pretrain=true")
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-3000:]
    assert "[pretrain] cached" in log and "[pretrain] building" not in log


# ------------------------------------------------------------------------------- through submitit

FAKE_SBATCH = """
    # sbatch: keeps the script; with FAKE_SLURM_RUN=1 answers with a new job id and runs the job in the
    # background (submitit moves the job's pickle into its folder once it has the id), else refuses it
    import os, re, subprocess, sys
    from pathlib import Path
    state = Path(os.environ["FAKE_SLURM"])
    script = Path(sys.argv[-1]).read_text()
    (state / "sbatch.sh").write_text(script)
    if os.environ.get("FAKE_SLURM_RUN") != "1":
        sys.exit("sbatch: error: a fake SLURM that runs nothing")
    counter = state / "last_job_id"
    job = int(counter.read_text()) + 1 if counter.exists() else 4242
    counter.write_text(str(job))
    array = re.search(r"^#SBATCH --array=(\\d+)-(\\d+)", script, re.M)  # several jobs: an array
    (state / "jobs").mkdir(exist_ok=True)
    for job_id in [f"{job}_{i}" for i in range(int(array[1]), int(array[2]) + 1)] if array else [str(job)]:
        (state / "jobs" / job_id).write_text("PENDING")
    subprocess.Popen([sys.executable, str(state / "bin" / "fake_array"), str(job)], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"Submitted batch job {job}")
"""
FAKE_ARRAY = """
    # the job (or the array's jobs, one after the other): its batch script in the batch step's environment
    import os, re, subprocess, sys
    from pathlib import Path
    state, job = Path(os.environ["FAKE_SLURM"]), sys.argv[1]
    script = (state / "sbatch.sh").read_text()
    opts = dict(re.findall(r"^#SBATCH --([\\w-]+)=(\\S+)$", script, re.M))
    array = re.match(r"(\\d+)-(\\d+)", opts.get("array", ""))
    nodes, per_node = int(opts.get("nodes", 1)), int(opts.get("ntasks-per-node", 1))
    for index in range(int(array[1]), int(array[2]) + 1) if array else [None]:
        job_id = job if index is None else f"{job}_{index}"
        (state / "jobs" / job_id).write_text("RUNNING")
        env = {**os.environ, "SLURM_JOB_ID": job if index is None else f"{job}{index}",
               "SLURM_JOB_NAME": opts.get("job-name", "x"),
               "SLURM_NNODES": str(nodes), "SLURM_JOB_NUM_NODES": str(nodes), "SLURM_NTASKS": str(nodes * per_node),
               "SLURM_NTASKS_PER_NODE": str(per_node), "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
        if index is not None:
            env.update(SLURM_ARRAY_JOB_ID=job, SLURM_ARRAY_TASK_ID=str(index))
        code = subprocess.run(["bash", str(state / "sbatch.sh")], env=env).returncode
        (state / "jobs" / job_id).write_text("COMPLETED" if code == 0 else "FAILED")
"""
FAKE_SRUN = """
    # srun: every task of the step at once, each with the step's environment, its output where asked
    import os, subprocess, sys
    args = sys.argv[1:]
    files = {}
    while args[0].startswith("--"):
        option = args.pop(0)
        if option in ("--output", "--error"):
            files[option] = args.pop(0)
    tasks, nodes = int(os.environ["SLURM_NTASKS"]), int(os.environ["SLURM_NNODES"])
    per_node = int(os.environ.get("SLURM_NTASKS_PER_NODE", tasks))
    def path(pattern, rank):
        return (pattern.replace("%A", os.environ.get("SLURM_ARRAY_JOB_ID", "")).replace("%t", str(rank))
                .replace("%a", os.environ.get("SLURM_ARRAY_TASK_ID", "")).replace("%j", os.environ["SLURM_JOB_ID"]))
    children = []
    for rank in range(tasks):
        env = {**os.environ, "SLURM_STEP_ID": "0", "SLURM_STEPID": "0", "SLURM_PROCID": str(rank),
               "SLURM_LOCALID": str(rank % per_node), "SLURM_NODEID": str(rank // per_node),
               "SLURM_STEP_NUM_TASKS": str(tasks), "SLURM_STEP_NUM_NODES": str(nodes)}
        out, err = path(files["--output"], rank), path(files["--error"], rank)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        children.append(subprocess.Popen(args, env=env, stdout=open(out, "a"), stderr=open(err, "a")))
    sys.exit(max(child.wait() for child in children))
"""
FAKE_SACCT = """
    # sacct -o JobID,State,NodeList --parsable2 -j ...: the states the fake array wrote
    import os
    from pathlib import Path
    jobs = Path(os.environ["FAKE_SLURM"]) / "jobs"
    print("JobID|State|NodeList")
    for job in sorted(jobs.iterdir()) if jobs.is_dir() else []:
        print(f"{job.name}|{job.read_text()}|node1")
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """sbatch, srun and sacct on PATH, as small Python scripts; returns their state folder."""
    state = tmp_path / "slurm"
    bin_dir = state / "bin"
    bin_dir.mkdir(parents=True)
    for name, body in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN), ("sacct", FAKE_SACCT), ("fake_array", FAKE_ARRAY)):
        script = bin_dir / name
        script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(state))
    return state


def task_logs(root: Path) -> str:
    return "".join(p.read_text() for p in sorted(root.glob("multirun/*/*/.submitit/*/*_log.*")))


def test_a_sweep_asks_slurm_for_the_trainers_ranks(fake_slurm, tmp_path):
    """What submitit hands sbatch for a pre-training sweep: nodes, tasks and GPUs from trainer.*, the
    warning signal before the time limit, and the number of requeues the job may use."""
    from submitit.core.utils import DelayedSubmission

    root = tmp_path / "root"
    result = launch("-m", "hydra/launcher=slurm", "trainer=fsdp", "trainer.devices=8", "trainer.num_nodes=2",
                    "ratio=0", f"root={root}", timeout=120)
    assert "a fake SLURM that runs nothing" in result.stderr, result.stderr[-3000:]
    script = (fake_slurm / "sbatch.sh").read_text()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --signal=USR2@300", "#SBATCH --time=720"):
        assert line in script.splitlines(), script
    [submitted] = root.glob("multirun/*/*/.submitit/*.pkl")  # the job's pickle, before sbatch gave it an id
    assert DelayedSubmission.load(submitted)._timeout_countdown == 10  # requeues left on timeout


@pytest.mark.slow
def test_a_launcher_sized_by_hand_stops_every_task_before_any_stage(fake_slurm, tmp_path, monkeypatch):
    """The issue's case: hydra.launcher.nodes=2 without trainer.num_nodes=2 (here a one-device trainer)."""
    monkeypatch.setenv("FAKE_SLURM_RUN", "1")
    root = tmp_path / "root"
    result = launch("-m", "hydra/launcher=slurm", "hydra.launcher.nodes=2", "experiment=smoke", f"root={root}",
                    timeout=300)
    assert result.returncode != 0  # the launcher reports the failed job
    logs = task_logs(root)
    message = ("SLURM started 2 tasks on 2 nodes but trainer.devices x trainer.num_nodes = 1 x 1: "
               "set trainer.num_nodes=2")
    lines = [line for line in logs.splitlines() if "invalid configuration" in line]
    assert len(lines) == 2 and all(line.endswith(message) for line in lines), logs  # one line from each task
    assert "Traceback" not in logs and not (root / "cache").exists()


@pytest.mark.slow
def test_a_trainer_sized_sweep_trains_on_slurms_tasks(fake_slurm, tmp_path, monkeypatch):
    """Two DDP ranks on CPUs as two srun tasks: each is started externally (Lightning's SLURM
    environment), rank 1 trains beside rank 0 and rank 0 alone records the run."""
    monkeypatch.setenv("FAKE_SLURM_RUN", "1")
    root = tmp_path / "root"
    result = launch("-m", "hydra/launcher=slurm", "experiment=smoke", "trainer=ddp", "trainer.accelerator=cpu",
                    "trainer.precision=32-true", "trainer.devices=2", "trainer.micro_batch_size=4", f"root={root}",
                    timeout=600)
    assert result.returncode == 0, (result.stderr + task_logs(root))[-3000:]
    assert "#SBATCH --ntasks-per-node=2" in (fake_slurm / "sbatch.sh").read_text()
    [rank0], [rank1] = (list(root.glob(f"multirun/*/*/.submitit/*/*_{rank}_log.out")) for rank in (0, 1))
    assert "[pretrain] built" in rank0.read_text() and "MLflow run" in rank0.read_text()
    assert "Job completed successfully" in rank1.read_text() and "MLflow run" not in rank1.read_text()


@pytest.mark.slow
def test_two_phases_through_slurm(fake_slurm, tmp_path, monkeypatch):
    """Phase 1 pre-trains on the trainer-sized launcher; phase 2 runs a treatment on one GPU from the
    cache; phase 2 on a root without phase 1 stops before any stage."""
    monkeypatch.setenv("FAKE_SLURM_RUN", "1")
    root = tmp_path / "root"
    phase1 = launch("-m", "hydra/launcher=slurm", "experiment=smoke", "treatment=none", f"root={root}", timeout=600)
    assert phase1.returncode == 0, (phase1.stderr + task_logs(root))[-3000:]
    phase2 = launch("-m", "hydra/launcher=slurm_1gpu", "trainer.require_cached_pretrain=true", "experiment=smoke",
                    "treatment=prompting", f"root={root}", timeout=600)
    logs = task_logs(root)
    assert phase2.returncode == 0, (phase2.stderr + logs)[-3000:]
    assert "#SBATCH --ntasks-per-node=1" in (fake_slurm / "sbatch.sh").read_text()
    assert "[pretrain] cached" in logs and logs.count("[pretrain] building") == 1  # phase 1's only

    empty = tmp_path / "empty"
    refused = launch("-m", "hydra/launcher=slurm_1gpu", "trainer.require_cached_pretrain=true", "experiment=smoke",
                     "treatment=prompting", f"root={empty}", timeout=600)
    assert refused.returncode != 0
    assert "the pre-trained model of ratio=0 seed=1 method=none" in task_logs(empty)
    assert not (empty / "cache").exists()
