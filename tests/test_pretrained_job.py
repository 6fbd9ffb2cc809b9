"""A pre-trained model as the study's base (model=pretrained): tiny local Llama and GPT-2 models, written
by benchmarks/tiny_pretrained.py with their data, classifier and a local lm-eval task, through the
pipeline: ITI (probe, steer, evaluate, capability with the hooks), SFT, the model's identity in the
keys, a hub id from a local hub cache, and the refusals before any stage."""

import importlib.util
import json
import shutil

import pytest
from helpers import REPO, compose_job, launch

from detox.core import families
from detox.core.artifacts import HF_MODEL, STAGE
from detox.core.cache import StageCache
from detox.core.models import load_model
from detox.core.schema import ConfigError
from detox.job import JobConfig
from detox.pipeline import job_params, run_job, run_name, study_plan


def _benchmark():
    spec = importlib.util.spec_from_file_location("tiny_pretrained", REPO / "benchmarks" / "tiny_pretrained.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """{"llama": folder, "gpt2": folder}, and the overrides of a study of them (root included)."""
    root = tmp_path_factory.mktemp("tiny_pretrained")
    (llama, gpt2), overrides = _benchmark().write_study(root, steps=3)
    return {"llama": llama, "gpt2": gpt2}, overrides


def job(study, *more: str) -> JobConfig:
    models, overrides = study
    return JobConfig.from_dict(compose_job(*overrides, *more))


@pytest.mark.slow  # end to end: probe, steer, evaluate, lm-eval twice (SFT: Lightning)
def test_iti_on_a_pretrained_gpt2_with_capability(study):
    models, _ = study
    j = job(study, f"model.path={models['gpt2']}", "method=iti")
    plan = study_plan(j)
    assert [s.name for s in plan.stages] == [STAGE.SOURCES, STAGE.PRETRAIN, "probe", "steer", STAGE.EVALUATE,
                                             STAGE.CAPABILITY_BASE, STAGE.CAPABILITY]
    result = run_job(j, StageCache(j.root + "/cache"), log=lambda _: None)
    m = result.metrics
    assert (m["base_layers"], m["base_heads"], m["base_head_dim"]) == (2, 4, 8)
    assert {"toxigen", "rtp_toxicity_probability", "ce_loss", "probe_best_accuracy", "iti_heads"} <= set(m)
    assert {"capability_base_civil_choice_acc", "capability_civil_choice_acc"} <= set(m)
    record = json.loads((result.artifacts[STAGE.PRETRAIN].path / "model.json").read_text())
    assert record["family"] == "gpt2" and "model.safetensors" in record["local"]["files"]
    params = job_params(j, plan)
    assert params["model"] == "tiny-gpt2" and params["base_model"] == plan.keys()[STAGE.PRETRAIN]
    assert run_name(j).startswith("model=tiny-gpt2 seed=1 method=iti")


@pytest.mark.slow  # end to end: probe, steer, evaluate, lm-eval twice (SFT: Lightning)
def test_sft_on_a_pretrained_llama_saves_a_llama(study):
    models, _ = study
    j = job(study, f"model.path={models['llama']}", "method=sft", "method.steps=2", "method.batch_size=4",
            "method.max_docs=16")
    result = run_job(j, StageCache(j.root + "/cache"), log=lambda _: None)
    assert result.metrics["sft_steps"] == 2 and "ce_loss" in result.metrics
    model, tokenizer = load_model(result.artifacts["sft"].path / HF_MODEL)
    assert families.family_of(model).name == "llama" and tokenizer.eos_token == "<|endoftext|>"


def test_the_models_content_is_its_identity(study, tmp_path):
    models, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(models["llama"], copy)
    key = lambda: study_plan(job(study, f"model.path={copy}")).keys()[STAGE.PRETRAIN]  # noqa: E731
    before = key()
    (copy / "config.json").touch()  # a new mtime, the same content
    assert key() == before
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))
    assert key() != before
    other = study_plan(job(study, f"model.path={models['gpt2']}")).keys()
    assert other[STAGE.PRETRAIN] != before and STAGE.MIXTURE not in other


def test_a_hub_model_resolves_to_a_commit_from_the_local_hub_cache(study, tmp_path, monkeypatch):
    """model.path=owner/name offline: the revision's commit read from the hub cache's refs, the snapshot of
    that commit linked as the model."""
    import huggingface_hub.constants

    models, _ = study
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-gpt2"
    shutil.copytree(models["gpt2"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    families.resolve_model_commit.cache_clear()
    j = job(study, "model.path=someone/tiny-gpt2")
    assert study_plan(j)[STAGE.PRETRAIN].spec == {"pretrained": {"hub": "someone/tiny-gpt2", "commit": commit}}
    result = run_job(j, StageCache(tmp_path / "cache"), log=lambda _: None)
    assert (result.artifacts[STAGE.PRETRAIN].path / HF_MODEL).resolve() == (repo / "snapshots" / commit).resolve()
    unresolved = study_plan(job(study, "model.path=someone/tiny-gpt2", "model.revision=v9"))[STAGE.PRETRAIN].spec
    assert unresolved == {"pretrained": {"hub": "someone/tiny-gpt2", "revision": "v9", "commit": "unresolved"}}


@pytest.mark.parametrize("override, message", [
    ("method=meda", "method=meda pre-trains its own model"),
    ("method=inst", "method=inst pre-trains its own model"),
    ("model.revision=main", "applies to hub ids only"),
])
def test_what_a_pretrained_base_cannot_do_is_refused_before_any_work(study, override, message):
    models, _ = study
    with pytest.raises(ConfigError, match=message):
        job(study, f"model.path={models['llama']}", override)


def test_the_embedded_world_is_not_a_pretrained_models_data(study):
    models, _ = study
    with pytest.raises(ConfigError, match="use data=files or data=paper"):
        JobConfig.from_dict(compose_job("model=pretrained", f"model.path={models['llama']}"))
    with pytest.raises(ConfigError, match="model.path"):
        JobConfig.from_dict(compose_job("model=pretrained"))  # no path given


def test_meda_on_a_pretrained_model_is_one_line_and_exit_2(study):
    models, overrides = study
    result = launch(*overrides, f"model.path={models['llama']}", "method=meda", timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    lines = [line for line in output.splitlines() if "invalid configuration" in line]
    assert len(lines) == 1 and "method=meda pre-trains its own model" in lines[0] and "Traceback" not in output


def test_the_papers_evaluation_sets_need_no_training_corpus_for_a_pretrained_model(study, tmp_path):
    models, _ = study
    (tmp_path / "prompts").mkdir()
    for name in ("owt.jsonl", "rtp.jsonl"):
        (tmp_path / name).write_text("")
    j = JobConfig.from_dict(compose_job(
        "model=pretrained", f"model.path={models['gpt2']}", "data=paper", "data.corpora.clean=null",
        "data.corpora.toxic=null", f"data.corpora.heldout.path={tmp_path / 'owt.jsonl'}",
        f"data.corpora.toxigen={tmp_path / 'prompts'}", "data.corpora.toxigen_groups=[]",
        f"data.corpora.rtp={tmp_path / 'rtp.jsonl'}"))  # data=paper's classifier, never loaded here
    assert [s.name for s in study_plan(j).stages] == [STAGE.SOURCES, STAGE.PRETRAIN, STAGE.EVALUATE]
