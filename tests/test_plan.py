"""The plan as data: stages, keys and the job's identity, inspected without running anything."""

import dataclasses

import pytest

from conftest import compose_job
from detox import methods
from detox.config import JobConfig
from detox.pipeline import run_plan, setting_key, study_plan
from detox.core.plan import Plan, Stage
from detox.core.schema import in_interval

# Fields that must not change a job's result: how it runs, where it writes, and what it does not read.
# iti., redteam. and search. count only when their method or switch is on (search: in the job's MLflow key)
NOT_RESULT = ("root", "task", "mlflow.", "toy.", "iti.", "data.files.", "data.corpora.", "redteam.", "search.",
              "trainer.num_threads", "trainer.checkpoint_every")


def job(*overrides):
    return JobConfig.from_dict(compose_job(*overrides))


def leaves(config, prefix=""):
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            yield from leaves(value, f"{prefix}{field.name}.")
        else:
            yield prefix + field.name, field, value


def changed(value, field):
    """Another valid value of a numeric field (within its declared interval)."""
    if isinstance(value, (list, tuple)):
        return type(value)(changed(v, field) for v in value)
    for candidate in (value + 1, value / 2, value - 1, value * 3):
        candidate = type(value)(candidate)
        if candidate != value and in_interval(candidate, field.metadata["interval"]):
            return candidate
    raise AssertionError(f"no other valid value for {field.name}={value}")


def test_default_plan_is_the_backbone():
    plan = study_plan(job())
    assert [s.name for s in plan.stages] == ["sources", "tokenizer", "mixture", "pretrain", "evaluate"]
    assert plan["evaluate"].inputs == ("sources", "pretrain")
    assert plan.key == plan.keys()["evaluate"]


def test_every_result_determining_value_changes_the_identity_and_nothing_else_does():
    base = job()
    base_key, checked = study_plan(base).key, []
    for path, field, value in leaves(base):
        if "interval" not in field.metadata:
            continue
        other = dataclasses.replace(base)
        target = other
        for name in path.split(".")[:-1]:  # copy the path down to the field, then change it
            setattr(target, name, dataclasses.replace(getattr(target, name)))
            target = getattr(target, name)
        setattr(target, path.split(".")[-1], changed(value, field))
        same = study_plan(other).key == base_key
        assert same == path.startswith(NOT_RESULT), f"{path}: identity {'kept' if same else 'changed'}"
        checked.append(path)
    assert {"ratio", "seed", "trainer.lr", "model.d_model", "data.world.clean.hostile_bias"} <= set(checked)


def test_a_changed_stage_changes_every_key_downstream_and_none_upstream():
    a, b = study_plan(job()).keys(), study_plan(job("ratio=10")).keys()
    assert [a[s] == b[s] for s in a] == [True, True, False, False, False]


def test_setting_ignores_only_the_seed():
    assert setting_key(job("seed=1")) == setting_key(job("seed=2")) != setting_key(job("ratio=10"))


def test_a_method_adds_its_own_stage(monkeypatch, tmp_path):
    """What a new method module does: register, add a stage, point the evaluation at its model."""
    def extend(plan: Plan, job: JobConfig) -> None:
        plan.add(Stage("polish", {"steps": 3}, lambda out, inputs: {"polished": 1.0}, inputs=("pretrain",)),
                 before="evaluate" if "evaluate" in [s.name for s in plan.stages] else None)
        plan.model = "polish"

    monkeypatch.setitem(methods._REGISTRY, "polish", methods.Method("polish", extend=extend, label=lambda j: "x"))
    polished = JobConfig.from_dict(compose_job("method.name=polish"))
    plan = study_plan(polished)
    assert [s.name for s in plan.stages][-2:] == ["polish", "evaluate"]
    assert plan["evaluate"].inputs == ("sources", "polish")
    base_keys = study_plan(job()).keys()
    assert {k: v for k, v in plan.keys().items() if k in ("sources", "tokenizer", "mixture", "pretrain")} == \
        {k: v for k, v in base_keys.items() if k != "evaluate"}  # the base model is shared
    assert plan.key != base_keys["evaluate"]


def test_a_build_may_not_read_what_its_key_does_not_cover(tmp_path):
    from detox.core.cache import StageCache

    plan = Plan([Stage("a", {}, lambda out, i: {}), Stage("b", {}, lambda out, i: {"x": float(i["a"].exists())})])
    with pytest.raises(KeyError, match="not upstream of its inputs"):
        run_plan(plan, StageCache(tmp_path), log=lambda _: None)


def test_iti_adds_probe_and_steer_and_shares_the_base_model():
    base, iti = study_plan(job()), study_plan(job("method=iti"))
    assert [s.name for s in iti.stages] == ["sources", "tokenizer", "mixture", "pretrain", "probe", "steer", "evaluate"]
    assert iti.keys()["pretrain"] == base.keys()["pretrain"]
    assert iti["evaluate"].inputs == ("sources", "pretrain", "steer")
    weak, strong = study_plan(job("method=iti", "iti=weak")).keys(), study_plan(job("method=iti", "iti=strong")).keys()
    assert weak["probe"] == strong["probe"] and weak["steer"] != strong["steer"] != weak["evaluate"]
    random = study_plan(job("method=iti", "iti.direction=random")).keys()
    assert random["probe"] == weak["probe"] and random["steer"] not in (weak["steer"], strong["steer"])


def test_iti_labels_name_the_strength_the_alpha_and_the_direction():
    from detox.methods.iti import PRESETS, label

    assert [label(job("method=iti", f"iti={s}")) for s in ("weak", "mid", "strong")] == ["weak", "mid", "strong"]
    assert {s: job("method=iti", f"iti={s}").iti.alpha for s in PRESETS} == PRESETS  # conf/iti agrees
    assert label(job("method=iti", "iti=mid", "iti.alpha=2")) == "alpha=2"
    assert label(job("method=iti", "iti.direction=random", "iti.random_scaling=matched_norm")) == \
        "mid random(matched_norm)"


def test_every_method_is_found_whichever_module_was_imported_first():
    import subprocess
    import sys

    code = "import detox.methods.sft; from detox import methods; print(' '.join(methods.names()))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert found == ["dpo", "inst", "iti", "meda", "none", "prompting", "sft"]


def test_the_random_controls_scaling_is_part_of_no_other_steerings_identity():
    mass_mean = [study_plan(job("method=iti", f"iti.random_scaling={s}")).key for s in ("sigma", "matched_norm")]
    random = [study_plan(job("method=iti", "iti.direction=random", f"iti.random_scaling={s}")).key
              for s in ("sigma", "matched_norm")]
    assert mass_mean[0] == mass_mean[1] and random[0] != random[1]
