"""The paper's rivals as methods: their plans (what each adds, what each shares), their refusals (one line,
in plan mode too), and a tiny end-to-end run of each on the embedded world."""

import json

import pytest
from helpers import REPO, compose_job

from detox.core.artifacts import STAGE
from detox.core.cache import StageCache
from detox.core.schema import ConfigError
from detox.job import JobConfig
from detox.pipeline import run_job, study_plan


def job(*overrides: str) -> JobConfig:
    return JobConfig.from_dict(compose_job("experiment=smoke", *overrides))


def test_the_steering_rivals_share_one_residual_stage_and_the_base_model():
    caa, ablate, none = study_plan(job("method=caa")), study_plan(job("method=ablate")), study_plan(job())
    assert [s.name for s in caa.stages][-4:] == ["residual", "caa_curve", "caa_curve_summary", STAGE.EVALUATE]
    assert [s.name for s in ablate.stages][-2:] == ["residual", STAGE.EVALUATE]
    assert caa.keys()["residual"] == ablate.keys()["residual"]
    assert caa.keys()[STAGE.PRETRAIN] == ablate.keys()[STAGE.PRETRAIN] == none.keys()[STAGE.PRETRAIN]
    stronger = study_plan(job("method=caa", "method.alpha=2"))
    assert stronger.keys()["caa_curve"] == caa.keys()["caa_curve"]  # the fixed strength re-reads the same curve
    assert stronger.keys()[STAGE.EVALUATE] != caa.keys()[STAGE.EVALUATE]


def test_the_rivals_study_reuses_the_cpu_studys_base_models_and_curves_and_the_dynamics_keep_their_own():
    point = ("method=iti_curve", "iti.alpha=1", "iti.direction=mass_mean", "ratio=10", "seed=3")  # one sweep point

    def keys(experiment: str) -> dict:
        return study_plan(JobConfig.from_dict(compose_job(f"experiment={experiment}", *point))).keys()

    study, rivals, dynamics = keys("cpu_study"), keys("rivals"), keys("rivals_dynamics")
    for stage in (STAGE.PRETRAIN, "probe", "curve", "curve_summary", STAGE.EVALUATE):
        assert rivals[stage] == study[stage], stage
    assert "tamper" in rivals and "tamper" not in dynamics
    assert dynamics[STAGE.PRETRAIN] != study[STAGE.PRETRAIN] and "dynamics" in dynamics


def test_the_data_rivals_pre_train_their_own_model_and_leave_the_study_keys_alone():
    plans = {m: study_plan(job(f"method={m}")) for m in ("none", "filter", "loss_mask", "meda")}
    base = {m: p.keys()[STAGE.PRETRAIN] for m, p in plans.items()}
    assert len(set(base.values())) == 4
    for m in ("filter", "loss_mask"):
        assert plans[m].keys()[STAGE.TOKENIZER] == plans["none"].keys()[STAGE.TOKENIZER]
    assert study_plan(job("method=loss_mask", "method.unlikelihood=1")).keys()[STAGE.MIXTURE] != \
        plans["loss_mask"].keys()[STAGE.MIXTURE]


@pytest.mark.parametrize("overrides, message", [
    (("method=caa", "method.layers=[5]"), r"method.layers=\[5\]: the model has 1 layers"),
    (("method=ablate", "method.layers=[0,0]"), "a layer repeats"),
    (("method=caa", "method.alphas=[0.5,1]"), "needs 0 first"),
    (("method=caa", "method.alpha=9"), "lies beyond method.alphas"),
    (("method=filter", "method.threshold=2"), r"method.threshold=2"),
])
def test_bad_settings_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        job(*overrides)


@pytest.mark.parametrize("method", ["filter", "loss_mask"])
def test_data_rivals_are_refused_for_a_pretrained_model_in_plan_mode(method, capsys, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("launch_module", REPO / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for part in ("clean", "toxic", "heldout", "toxigen", "rtp"):
        (tmp_path / f"{part}.jsonl").write_text('{"text": "a"}\n' if part != "toxigen" else '{"prompt": "a"}\n')
    code = module.plan_command([f"method={method}", "model=pretrained", f"model.path={tmp_path}", "data=files", "scorer=perspective",
                                *(f"data.files.{part}={tmp_path / part}.jsonl" for part in ("clean", "toxic", "heldout",
                                                                                           "toxigen", "rtp")),
                                f"root={tmp_path / 'root'}", "plan=true"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err[-1].endswith(f"method={method} pre-trains its own model: it cannot treat the "
                                          f"pre-trained model.path={tmp_path}")


@pytest.mark.slow  # four tiny pre-trainings and evaluations, ~1 min on 2 cores
def test_each_rival_runs_end_to_end_on_the_embedded_world(tmp_path):
    cache = StageCache(tmp_path / "cache")
    results = {m: run_job(job(f"method={m}", f"root={tmp_path}", "ratio=25", *extra), cache, log=lambda _: None)
               for m, *extra in (("filter",), ("loss_mask", "method.unlikelihood=1"), ("caa", "method.alphas=[0,1]"),
                                 ("ablate",))}
    assert results["filter"].metrics["filter_toxic_dropped_share"] > 0.3
    assert results["filter"].metrics["mix_dropped_toxic_docs"] > 0
    assert results["loss_mask"].metrics["mix_masked_tokens"] > 0
    curve = json.loads((results["caa"].artifacts["caa_curve"].path / "curve.json").read_text())
    assert [p["alpha"] for p in curve["points"]] == [0, 1]
    assert "curve_toxigen_at_budget" in results["caa"].metrics
    for result in results.values():
        assert "insult_probability" in result.metrics and "ce_loss" in result.metrics
    assert results["caa"].artifacts[STAGE.PRETRAIN].path == results["ablate"].artifacts[STAGE.PRETRAIN].path


@pytest.mark.slow  # a tiny pre-training, evaluation and a 4-step attack, ~30 s on 2 cores
def test_the_attack_follows_a_treatment_with_its_intervention_on(tmp_path):
    overrides = (f"root={tmp_path}", "method=ablate", "tamper.enabled=true", "tamper.steps=4", "tamper.eval_at=[0,2,4]",
                 "tamper.docs=16")
    plan = study_plan(job(*overrides))
    assert plan.stages[-1].name == STAGE.TAMPER and "residual" in plan[STAGE.TAMPER].inputs
    result = run_job(job(*overrides), StageCache(tmp_path / "cache"), log=lambda _: None)
    points = json.loads((result.artifacts[STAGE.TAMPER].path / "tamper.json").read_text())["points"]
    assert [p["step"] for p in points] == [0, 2, 4]
    # step 0 is the treated model as the evaluation measured it: the intervention is on
    assert points[0]["insult_probability"] == pytest.approx(result.metrics["insult_probability"])
    assert result.metrics["tamper_insult_probability_step_4"] == points[-1]["insult_probability"]
    assert study_plan(job(f"root={tmp_path}", "method=ablate")).key == plan.keys()[STAGE.EVALUATE]  # off: unchanged
