"""The plan as data: stages, keys and the job's identity, inspected without running anything."""

import dataclasses

import pytest
from helpers import REPO, compose_job

from detox.core import methods
from detox.core.plan import Plan, Stage
from detox.core.schema import in_interval
from detox.job import JobConfig
from detox.pipeline import run_plan, setting_key, study_plan

# Fields that must not change a job's result: how it runs, where it writes, and what it does not read.
# iti., redteam., tamper. and search. count only when their method or switch is on (search: in the job's MLflow key)
NOT_RESULT = ("root", "task", "plan", "stop_after", "device_memory_gb", "mlflow.", "toy.", "iti.", "data.files.", "data.corpora.",
              "redteam.", "search.", "tamper.",
              "trainer.num_threads", "trainer.checkpoint_every", "trainer.checkpoint_minutes", "trainer.deterministic", "scorer.do_not_store",
              "scorer.cache", "trainer.require_cached_pretrain",
              # how fast the same computation runs (detox.training.config.TrainerConfig.result_spec)
              "trainer.compile", "trainer.loss_chunk", "trainer.log_every", "trainer.hsdp", "trainer.loader_workers",
              "model.revision", "capability.",  # read only with a hub model.path / with capability.tasks (own tests)
              # read only by scorer=classifier, whose identity they enter (tests/evaluation/test_classifier_scorer.py)
              "scorer.revision", "scorer.activation", "scorer.calibration")
# What the plan's shape depends on, checked by the tests of methods and source kinds instead: another
# method, source kind or an added red-team stage is another plan, not one value of it.
SHAPE = ("method.name", "data.source", "redteam.enabled", "tamper.enabled", "model.path")  # model.path: tests/test_pretrained_job.py


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
    """Another valid value of any field: a number within its declared interval, another of its choices,
    a flipped switch, another string, a list with each element changed."""
    if isinstance(value, (list, tuple)):
        return type(value)(changed(v, field) for v in value)
    if isinstance(value, bool):
        return not value
    if "choices" in field.metadata:
        return next(option for option in field.metadata["choices"] if option != value)
    if isinstance(value, str) or (value is None and "str" in str(field.type)):
        return (value or "") + "-changed"
    for candidate in (value + 1, value / 2, value - 1, value * 3, (value + 1) / 2):  # the last: 0 in [0, 1)
        candidate = type(value)(candidate)
        if candidate != value and in_interval(candidate, field.metadata["interval"]):
            return candidate
    raise AssertionError(f"no other valid value for {field.name}={value}")


def with_value(config, path: str, value):
    """A copy of the dataclass tree `config` with the field at the dotted `path` set to `value`."""
    head, _, rest = path.partition(".")
    return dataclasses.replace(config, **{head: with_value(getattr(config, head), rest, value) if rest else value})


def assert_identity_follows_the_result(base: JobConfig, not_result: tuple[str, ...]) -> list[str]:
    """Change every field of `base`, one at a time: the job's identity must change exactly when the
    field determines the result. Returns the paths checked."""
    base_key, checked = study_plan(base).key, []
    for path, field, value in leaves(base):
        if path in SHAPE or (value is None and "str" not in str(field.type)):
            continue  # an optional section (e.g. a corpus spec) left out: nothing to change
        same = study_plan(with_value(base, path, changed(value, field))).key == base_key
        assert same == path.startswith(not_result), f"{path}: identity {'kept' if same else 'changed'}"
        checked.append(path)
    return checked


def test_default_plan_is_the_backbone():
    plan = study_plan(job())
    assert [s.name for s in plan.stages] == ["sources", "tokenizer", "mixture", "pretrain", "evaluate"]
    assert plan["evaluate"].inputs == ("sources", "pretrain")
    assert plan.key == plan.keys()["evaluate"]


def test_every_result_determining_value_changes_the_identity_and_nothing_else_does():
    checked = assert_identity_follows_the_result(job(), NOT_RESULT)
    # every kind of field: numbers, a pair, nested sections, strings, choices, switches, an unset path
    assert {"ratio", "seed", "trainer.lr", "trainer.betas", "model.d_model", "data.world.clean.hostile_bias",
            "model.name", "trainer.precision", "trainer.accelerator", "scorer.model", "data.tokenizer.path",
            "scorer.do_not_store"} <= set(checked)


def test_with_iti_and_red_teaming_their_settings_count_too():
    """The ITI settings and the red-team options enter the identity once the job uses them (the
    random control's scaling only for the random direction; how many texts go through the model at
    once never)."""
    not_result = tuple(p for p in NOT_RESULT if p not in ("iti.", "redteam.")) + ("iti.batch_size",
                                                                                   "iti.random_scaling")
    checked = assert_identity_follows_the_result(job("method=iti", "redteam.enabled=true"), not_result)
    assert {"iti.alpha", "iti.top_k_heads", "iti.direction", "iti.val_fraction", "iti.solver",
            "redteam.target", "redteam.num_steps"} <= set(checked)
    attacked = job("tamper.enabled=true", "tamper.steps=4", "tamper.eval_at=[0,2,4]")
    checked = assert_identity_follows_the_result(attacked, tuple(p for p in NOT_RESULT if p != "tamper."))
    assert {"tamper.steps", "tamper.eval_at", "tamper.docs", "tamper.lr", "tamper.batch_size", "tamper.max_tokens"} <= set(checked)
    random = job("method=iti", "iti.direction=random")
    scaling = [f for f in dataclasses.fields(random.iti) if f.name == "random_scaling"][0]
    assert study_plan(with_value(random, "iti.random_scaling", changed(random.iti.random_scaling, scaling))).key \
        != study_plan(random).key


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
    from detox.methods.iti import label

    assert [label(job("method=iti", f"iti={s}")) for s in ("weak", "mid", "strong")] == ["weak", "mid", "strong"]
    assert label(job("method=iti", "iti=strong")) == "strong"  # alpha 12: the paper's strong
    assert label(job("method=iti", "iti=mid", "iti.alpha=2")) == "alpha=2"
    assert label(job("method=iti", "iti=strong", "iti.alpha=6")) == "alpha=6"  # the label follows alpha, not the preset
    assert label(job("method=iti", "iti=strong", "iti.alpha=8")) == "mid"
    assert label(job("method=iti", "iti.direction=random", "iti.random_scaling=matched_norm")) == \
        "mid random(matched_norm)"
    assert label(job("method=iti", "iti=weak", "iti.direction=probe")) == "weak probe"


def test_the_steer_spec_is_exactly_what_makes_the_shifts_and_the_probe_spec_stays():
    plan = study_plan(job("method=iti", "iti=strong"))
    assert plan["steer"].spec == {"alpha": 12.0, "top_k_heads": 4, "direction": "mass_mean", "seed": 1}
    random = study_plan(job("method=iti", "iti.direction=random", "iti.random_scaling=matched_norm"))
    assert random["steer"].spec == {"alpha": 8.0, "top_k_heads": 4, "direction": "random",
                                    "random_scaling": "matched_norm", "seed": 1}
    # the probe caches of earlier versions stay valid: this spec (and so its key) must not change
    assert plan["probe"].spec == {"seed": 1, "val_fraction": 0.2, "solver": "auto", "entanglement": "whitened"}
    mid = study_plan(job("method=iti")).keys()
    assert study_plan(job("method=iti", "iti.batch_size=8")).keys() == mid  # how fast, not what
    assert study_plan(job("method=iti", "iti.val_fraction=0.3")).keys()["probe"] != mid["probe"]


def test_every_method_is_found_whichever_module_was_imported_first():
    import subprocess
    import sys

    code = "import detox.methods.sft; from detox.core import methods; print(' '.join(methods.names()))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    modules = sorted(path.stem for path in (REPO / "detox" / "methods").glob("*.py") if not path.stem.startswith("_"))
    assert found == modules and {"iti", "iti_curve", "none"} <= set(found)


def test_the_random_controls_scaling_is_part_of_no_other_steerings_identity():
    mass_mean = [study_plan(job("method=iti", f"iti.random_scaling={s}")).key for s in ("sigma", "matched_norm")]
    random = [study_plan(job("method=iti", "iti.direction=random", f"iti.random_scaling={s}")).key
              for s in ("sigma", "matched_norm")]
    assert mass_mean[0] == mass_mean[1] and random[0] != random[1]


def test_an_iti_jobs_params_are_the_contracts_names_with_plain_values():
    from detox.core import contract
    from detox.pipeline import job_params

    strong = job("method=iti", "iti=strong")
    params = job_params(strong)
    assert set(params) == set(contract.STUDY_PARAMS) | {contract.ITI_ALPHA, contract.ITI_DIRECTION,
                                                         contract.ITI_TOP_K_HEADS}
    assert (params["iti_alpha"], params["iti_direction"], params["iti_top_k_heads"]) == ("12", "mass_mean", "4")
    assert (params["ratio"], params["seed"], params["method"], params["strength"]) == ("0", "1", "iti", "strong")
    assert params["base_model"] == study_plan(strong).keys()["pretrain"] == job_params(job())["base_model"]
    assert params["setting"] == setting_key(strong)
    six = job_params(job("method=iti", "iti.alpha=6"))
    assert (six["strength"], six["iti_alpha"]) == ("alpha=6", "6")
    random = job_params(job("method=iti", "iti.alpha=2.5", "iti.direction=random", "iti.random_scaling=matched_norm"))
    assert (random["iti_alpha"], random["iti_direction"], random["iti_random_scaling"]) == ("2.5", "random", "matched_norm")
    assert random["strength"] == "alpha=2.5 random(matched_norm)"  # for display; the report never parses it
    assert not set(contract.ITI_PARAMS) & set(job_params(job()))  # method=none: no ITI params
    assert job_params(job("ratio=10", "method=meda"))["base_model"] != job_params(job("ratio=10"))["base_model"]


def test_a_phase_runs_its_stages_with_their_keys():
    """stop_after=data: the CPU stages before any training (the preparation phase); stop_after=pretrain: up to
    the last pre-training (phase 1, no evaluation on its GPUs); each stage keeps the whole job's key."""
    from detox.pipeline import phase_plan

    plan = study_plan(job("method=iti"))
    names = lambda p: [s.name for s in p.stages]  # noqa: E731
    assert names(phase_plan(plan, "data")) == ["sources", "tokenizer", "mixture"]
    assert names(phase_plan(plan, "pretrain")) == ["sources", "tokenizer", "mixture", "pretrain"]
    assert names(phase_plan(plan, "none")) == names(plan) and "evaluate" in names(plan)
    assert phase_plan(plan, "pretrain").keys() == {k: v for k, v in plan.keys().items() if k in names(
        phase_plan(plan, "pretrain"))}
    assert study_plan(job("method=iti", "stop_after=pretrain")).key == plan.key  # the job's identity stands


def test_only_rank_0_builds_a_shared_stage_the_others_wait(tmp_path, monkeypatch):
    """A helper rank never takes a stage's lock (file locks may not hold across nodes): it waits until rank 0's
    artifact is in the cache, then reads it."""
    import threading

    from detox import pipeline
    from detox.core.cache import StageCache

    built = []
    plan = Plan([Stage("a", {"x": 1}, lambda out, i: built.append("helper"))])
    cache = StageCache(tmp_path)
    monkeypatch.setattr(pipeline, "process_rank", lambda: 1)
    monkeypatch.setattr(pipeline, "WAIT_SECONDS", 0.05)

    def rank_0(work):
        built.append("rank 0")
        (work / "metrics.json").write_text('{"x": 1.0}')

    threading.Timer(0.5, lambda: cache.get_or_build("a", plan.keyed_spec(plan.stages[0], plan.keys()), rank_0)).start()
    assert pipeline.run_plan(plan, cache).metrics == {"x": 1.0}
    assert built == ["rank 0"]
