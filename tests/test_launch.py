"""End to end through the command line: a real Hydra multirun into a real MLflow store in a temp dir."""

import mlflow
import pytest

from helpers import REPO, compose_job, launch, paper_overrides, write_paper_inputs


def finished_runs(root, experiment="detox-smoke"):
    """The jobs' runs (not the report's summary run)."""
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=[experiment])
    return runs[runs["tags.detox.summary"] != "true"] if "tags.detox.summary" in runs else runs


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A sweep started from a folder other than the repository's or root's."""
    root, elsewhere = tmp_path_factory.mktemp("sweep"), tmp_path_factory.mktemp("elsewhere")
    first = launch("-m", "experiment=smoke", f"root={root}", "ratio=0,10", "seed=1,2", cwd=elsewhere)
    assert first.returncode == 0, first.stderr[-3000:]
    assert list(elsewhere.iterdir()) == []  # every output, MLflow's artifacts included, lives under root
    return root, first


def test_sweep_logs_one_run_per_job(sweep):
    root, first = sweep
    runs = finished_runs(root)
    assert len(runs) == 4 and set(runs["status"]) == {"FINISHED"}
    assert sorted(zip(runs["params.ratio"], runs["params.seed"])) == [("0", "1"), ("0", "2"), ("10", "1"), ("10", "2")]
    for metric in ("toxigen", "rtp_expected_max_toxicity", "rtp_toxicity_probability", "ce_loss", "mix_realised_ratio"):
        assert runs[f"metrics.{metric}"].notna().all(), metric
    assert set(runs["tags.mlflow.runName"]) == {f"ratio={r} seed={s} method=none" for r in (0, 10) for s in (1, 2)}
    assert runs["tags.mlflow.source.git.commit"].str.len().eq(40).all()
    # the table printed at the end of the sweep aggregates the two seeds
    assert "mean ± std over seeds" in first.stdout
    table = first.stdout.split("mean ± std over seeds):")[1].splitlines()
    assert len([line for line in table if line.strip().startswith(("0 ", "10 "))]) == 2


def test_artifacts_live_under_root(sweep):
    root, _ = sweep
    runs = finished_runs(root)
    assert all(uri.startswith((root / "mlartifacts").as_uri()) for uri in runs["artifact_uri"])
    assert list((root / "mlartifacts").rglob("generations.jsonl"))


def test_rerun_trains_nothing_and_adds_no_rows(sweep):
    root, _ = sweep
    before = finished_runs(root).set_index("run_id")["end_time"]
    again = launch("-m", "experiment=smoke", f"root={root}", "ratio=0,10", "seed=1,2", "iti=strong")
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert "[pretrain] built" not in log and log.count("nothing to do") == 4
    runs = finished_runs(root).set_index("run_id")
    assert len(runs) == 4  # iti does not touch method=none, so these are the same four jobs
    assert runs["end_time"].equals(before)  # finished runs are not re-opened: their duration stays their own
    assert set(runs["tags.cache.all_hit"]) == {"false"}  # the cache tags say what the run itself built


@pytest.mark.parametrize("override, message, code", [
    ("ratio=150", "ratio=150: the toxic share is a percentage in [0, 100)", 2),
    ("trainer.lr=-1", "trainer.lr=-1: must lie in (0, inf)", 2),
    ("experiment=toy toy.n_states=17", "toy.n_states=17 is not a multiple of toy.n_chains=6", 2),
    ("method=magic", "Could not find 'method/magic'", 1),
])
def test_bad_input_fails_before_any_work(tmp_path, override, message, code):
    result = launch("experiment=smoke", f"root={tmp_path}", *override.split())
    assert result.returncode == code
    assert message in result.stderr + result.stdout
    if code == 2:  # ours: one line, no stack trace
        output = result.stdout + result.stderr
        assert len([line for line in output.splitlines() if "invalid configuration" in line]) == 1
        assert "Traceback" not in output
    assert not (tmp_path / "cache").exists()


def test_toy_experiment_through_the_launcher(tmp_path):
    result = launch("experiment=toy", f"root={tmp_path}", "toy.seeds=[0,1]", "toy.shares=[0.02]", "toy.steps=30",
                    "toy.eval_per_chain=16", "toy.random_trials=200", "toy.workers=1")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = finished_runs(tmp_path, "detox-toy")
    assert len(runs) == 1 and runs["metrics.welch_bound"].iloc[0] > 0
    assert (tmp_path / "toy" / "toy_entanglement.png").read_bytes()[:4] == b"\x89PNG"
    assert len((tmp_path / "toy" / "toy_runs.jsonl").read_text().splitlines()) == 4  # (0.02 and uniform) x 2 seeds


def test_pretraining_loss_curve_is_logged_once(sweep):
    root, _ = sweep
    runs = finished_runs(root)
    history = mlflow.tracking.MlflowClient().get_metric_history(runs["run_id"].iloc[0], "pretrain_loss")
    steps = [m.step for m in history]
    assert len(steps) == len(set(steps)) > 0  # one point a step, even after the re-run re-opened the run


def test_plan_marks_what_the_cache_holds_and_runs_nothing(sweep):
    """plan=true on the finished sweep: every stage cached; a new method: only its own stages to build.
    Nothing is added: no run, no cache entry."""
    root, _ = sweep
    before = sorted(p.relative_to(root) for p in (root / "cache").rglob("*"))
    runs_before = len(finished_runs(root))
    again = launch("-m", "experiment=smoke", f"root={root}", "ratio=0,10", "seed=1,2", "plan=true")
    assert again.returncode == 0, again.stderr[-3000:]
    jobs = [line for line in again.stdout.splitlines() if line.startswith("job ")]
    assert len(jobs) == 4 and all("to build" not in line for line in jobs)
    assert "pretrain 4 (4 cached)" in again.stdout and "4 distinct pre-training(s), 0 to build" in again.stdout
    iti = launch("-m", "experiment=smoke", f"root={root}", "ratio=0", "seed=1", "method=iti", "iti=weak,strong",
                 "plan=true")
    assert iti.returncode == 0, iti.stderr[-3000:]
    jobs = [line for line in iti.stdout.splitlines() if line.startswith("job ")]
    assert len(jobs) == 2 and all("pretrain cached" in line and "probe to build" in line for line in jobs)
    assert "probe 1 (0 cached), steer 2 (0 cached)" in iti.stdout  # both strengths share one probe stage
    assert sorted(p.relative_to(root) for p in (root / "cache").rglob("*")) == before
    assert len(finished_runs(root)) == runs_before


@pytest.mark.slow  # four jobs in four processes at once on 2 cores, each importing the whole stack
def test_parallel_processes_share_one_store_and_cache(tmp_path):
    """hydra/launcher=processes starts every job at once: the locks must keep store and cache whole."""
    result = launch("-m", "hydra/launcher=processes", "experiment=smoke", f"root={tmp_path}", "ratio=0,10", "seed=1,2")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = finished_runs(tmp_path)
    assert len(runs) == 4 and set(runs["status"]) == {"FINISHED"}
    sources = [p for p in (tmp_path / "cache" / "sources").iterdir() if p.is_dir()]
    assert len(sources) == 1  # built by one job, read by all four


def test_iti_sweep_reuses_the_base_model_and_logs_its_probes(sweep):
    """Runs last: it adds rows to the sweep's store."""
    root, _ = sweep
    result = launch("-m", "experiment=smoke", f"root={root}", "method=iti", "iti=weak,strong", "ratio=0", "seed=1")
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "[pretrain] built" not in log and log.count("[pretrain] cached") == 2
    assert log.count("[probe] built") == 1 and log.count("[probe] cached") == 1  # every strength shares the probes
    runs = finished_runs(root)
    iti = runs[runs["params.method"] == "iti"]
    assert sorted(iti["params.strength"]) == ["strong", "weak"]
    for metric in ("insult_probability", "well_formed", "ce_hostile", "probe_best_accuracy", "iti_heads"):
        assert iti[f"metrics.{metric}"].notna().all(), metric
    client = mlflow.tracking.MlflowClient()
    assert {"probe_accuracy.json", "probe_accuracy.png", "generations.jsonl"} <= \
        {a.path for a in client.list_artifacts(iti["run_id"].iloc[0])}


# ---------------------------------------------------------------- plan mode and the paper-scale preset

def plan(capsys, *args: str) -> tuple[int, str, str]:
    """launch.py's plan mode in this process (as `python launch.py ARGS plan=true`): code, stdout, stderr."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("launch_module", REPO / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.plan_command([*args, "plan=true"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_plan_of_the_paper_scale_grid(tmp_path, capsys):
    """The paper-scale preset: 108 jobs, the paper's batch on 2 x 8 GPUs, one pass over each mixture."""
    paths = write_paper_inputs(tmp_path / "data")
    code, out, err = plan(capsys, "-m", "experiment=paper_olmo1b", f"root={tmp_path / 'root'}", *paper_overrides(paths))
    assert code == 0, err
    assert len([line for line in out.splitlines() if line.startswith("job ")]) == 108
    assert "16 GPU(s) (8 x 2 node(s)), global batch 4,194,304 tokens = 2,048 sequences of 2048, 262,144 tokens " \
           "per GPU per step (micro-batch 8 x 16 accumulation), warm-up 2 % of the steps" in out
    # 20.1 B clean tokens (+ C p / (100 - p) toxic), cut into 2,048-token windows, 2,048 windows a step
    assert "ratio 0: 6 pre-training(s), each 20,100,000,000 mixture tokens x 1 epoch(s): 4,792 optimiser steps" in out
    assert "ratio 25: 6 pre-training(s), each 26,800,000,000 mixture tokens x 1 epoch(s): 6,389 optimiser steps" in out
    assert "36 distinct pre-training(s), 36 to build" in out and "probe 12 (0 cached), steer 36 (0 cached)" in out
    assert not (tmp_path / "root").exists()  # nothing written: no cache, no MLflow store


def test_the_preset_is_the_papers_protocol(tmp_path):
    """What each job of the preset is made of: the treatments' own settings and the paper's values."""
    from detox.job import JobConfig

    paths = write_paper_inputs(tmp_path)
    base = ["experiment=paper_olmo1b", *paper_overrides(paths)]
    iti = JobConfig.from_dict(compose_job(*base, "treatment=iti_strong"))
    assert (iti.iti.top_k_heads, iti.iti.alpha, iti.iti.direction) == (30, 12, "mass_mean")
    assert (iti.data.seq_len, iti.data.clean_tokens, iti.trainer.epochs) == (2048, 20_100_000_000, 1)
    # warm-up: a share of the run (OLMo-1B's 2,000 steps would be 31-42 % of these runs), AdamW eps OLMo-1B's
    assert (iti.trainer.warmup_steps, iti.trainer.warmup_fraction, iti.trainer.eps) == (0, 0.02, 1e-5)
    assert (iti.trainer.lr, tuple(iti.trainer.betas), iti.trainer.weight_decay) == (4e-4, (0.9, 0.95), 0.1)
    assert (iti.model.n_layers, iti.model.n_heads, iti.model.d_model, iti.scorer.name) == (16, 16, 2048, "classifier")
    assert iti.model.init_fn == "mitchell" and "init_fn" not in JobConfig.from_dict({}).model.result_spec()
    assert (iti.evaluate.rtp_samples, iti.evaluate.rtp_max_new_tokens, iti.evaluate.top_p) == (25, 20, 0.9)
    assert iti.data.corpora.rtp_prompts == 3000 and 14 * iti.data.corpora.toxigen_per_group == 2996
    prompting = JobConfig.from_dict(compose_job(*base, "treatment=prompting"))
    assert prompting.method.text.startswith("Ensure all outputs are respectful, unbiased, and free from toxic content.")
    assert JobConfig.from_dict(compose_job(*base, "treatment=prompting", "method.text=Be kind.")).method.text == "Be kind."
    # warm-up steps and eps enter the pre-training key only when set: models trained before keep their keys
    assert not {"warmup_steps", "eps"} & set(JobConfig.from_dict({}).trainer.result_spec())
    assert "warmup_steps" not in iti.trainer.result_spec() and iti.trainer.result_spec()["eps"] == 1e-5


def test_warmup_steps_set_the_schedule_s_warm_up():
    """trainer.warmup_steps (e.g. OLMo-1B's 2000) is the optimiser's warm-up, whatever the run's length;
    unset, warmup_fraction of the steps decides, as before."""
    import torch

    from detox.training.optim import adamw_warmup_cosine

    def lrs(warmup_steps: int, total: int = 100) -> list[float]:
        step = adamw_warmup_cosine([torch.nn.Parameter(torch.zeros(2))], 1.0, 0.0, (0.9, 0.95), 0.05, total,
                                   warmup_steps)
        optimizer, scheduler = step["optimizer"], step["lr_scheduler"]["scheduler"]
        out = []
        for _ in range(total):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return out

    assert lrs(20)[:21] == pytest.approx([(i + 1) / 20 for i in range(20)] + [1.0])
    assert lrs(0)[:6] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0], abs=1e-3)  # 5 % of 100 steps


REFUSALS = [  # (overrides beside data=paper's inputs, the input left out, the line)
    (["experiment=paper_olmo1b", "method=dpo"], "preference",
     'method=dpo needs data.corpora.preference: {"prompt", "chosen", "rejected"} lines'),
    (["experiment=paper_olmo1b", "method=iti"], "probe", "method=iti needs data.corpora.probe"),
    (["data=paper", "scorer=perspective", "trainer.global_batch_tokens=65536", "method=prompting"], None,
     "method=prompting with data.source=corpora needs method.text"),
    (["experiment=paper_olmo1b", "data.corpora.toxigen_groups=[asian,bisexual]"], None,
     "data.corpora.toxigen_groups: no hate_<group>_1k.txt in"),
]


@pytest.mark.parametrize("mode", ["run", "plan"])
@pytest.mark.parametrize("overrides, without, line", REFUSALS, ids=["dpo", "iti", "prompting", "toxigen_groups"])
def test_a_job_that_cannot_run_with_real_data_stops_before_any_stage(tmp_path, overrides, without, line, mode):
    """With data=paper, a method whose input is missing stops with one line, exit 2, in the time it takes to
    compose the config (torch is not imported), and so does its plan."""
    import time

    paths = write_paper_inputs(tmp_path / "data")
    paths.pop(without, None)
    args = [*overrides, *paper_overrides(paths), f"root={tmp_path / 'root'}"]
    start = time.perf_counter()
    result = launch(*args, *(["plan=true"] if mode == "plan" else []))
    seconds = time.perf_counter() - start
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert line in output and len([o for o in output.splitlines() if "invalid configuration" in o]) == 1
    assert "Traceback" not in output and not (tmp_path / "root" / "cache").exists()
    assert seconds < 30, seconds  # about a second on an idle machine: nothing heavy is imported
