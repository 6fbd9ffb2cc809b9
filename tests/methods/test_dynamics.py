"""Training dynamics without re-training: a pre-training that keeps snapshots (trainer.snapshots), and
iti_curve's probe and curve on each of them and on the final model."""

import json

import pytest
from helpers import compose_job

from detox.core.cache import StageCache
from detox.job import JobConfig
from detox.pipeline import run_job, study_plan
from detox.training.pretrain.callbacks import snapshot_steps


def job(*overrides):
    return JobConfig.from_dict(compose_job("experiment=smoke", "method=iti_curve", "iti.alpha=1",
                                           "method.alphas=[0,1,2]", *overrides))


def test_snapshot_steps_are_spread_before_the_end():
    assert snapshot_steps(30, 2) == [10, 20]
    assert snapshot_steps(3, 5) == [1, 2]  # no step twice, never the last


def test_snapshots_add_the_dynamics_stage_and_move_no_key_without_them():
    plain, kept = study_plan(job()), study_plan(job("trainer.snapshots=2"))
    assert "dynamics" not in [s.name for s in plain.stages] and "dynamics" in [s.name for s in kept.stages]
    assert plain.keys()["pretrain"] != kept.keys()["pretrain"]
    assert study_plan(job("trainer.snapshots=0")).key == plain.key


@pytest.mark.slow  # a tiny pre-training with snapshots, 3 probes and 3 short curves, ~40 s on 2 cores
def test_dynamics_reads_the_snapshots_without_re_training(tmp_path):
    j = job(f"root={tmp_path}", "trainer.snapshots=2", "trainer.epochs=3")
    result = run_job(j, StageCache(tmp_path / "cache"), log=lambda _: None)
    rows = json.loads((result.artifacts["dynamics"].path / "dynamics.json").read_text())
    steps = result.metrics["pretrain_steps"]
    tokens = [row["tokens_seen"] for row in rows]
    assert tokens == [s * j.trainer.global_batch_tokens for s in snapshot_steps(steps, 2)] + \
        [result.metrics["pretrain_tokens_seen"]]
    assert all(0 <= row["probe_best_accuracy"] <= 100 and "curve_insult_probability_drop_at_budget" in row for row in rows)
    final = rows[-1]
    assert final["probe_best_accuracy"] == pytest.approx(result.metrics["probe_best_accuracy"])  # the probe stage's own
