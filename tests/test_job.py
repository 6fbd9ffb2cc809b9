from pathlib import Path

import pytest
from helpers import REPO, compose_job
from hydra.errors import MissingConfigException

from detox.core.schema import ConfigError
from detox.job import JobConfig


def test_default_config_composes_into_a_valid_job():
    job = JobConfig.from_dict(compose_job())
    assert (job.task, job.ratio, job.seed, job.method.name) == ("study", 0.0, 1, "none")
    assert job.model.d_model % job.model.n_heads == 0


# experiment_method is chosen by the experiment and the method, not on its own (tests/test_launch.py covers it)
@pytest.mark.parametrize("group", sorted(p.name for p in (REPO / "conf").iterdir()
                                         if p.is_dir() and p.name not in ("hydra", "experiment_method")))
def test_every_option_of_every_group_composes(group):
    for option in sorted((REPO / "conf" / group).glob("*.yaml")):
        values = compose_job(f"{group}={option.stem}")
        mandatory = {("data", "files"): "data.files.clean is required",
                     ("data", "paper"): "data.corpora.toxic.path", ("experiment", "paper_olmo1b"): "data.corpora.toxic.path",
                     ("model", "pretrained"): "model=pretrained needs model.path"}
        if (group, option.stem) in mandatory:
            with pytest.raises(ConfigError, match=mandatory[group, option.stem]):
                JobConfig.from_dict(values)
        else:
            JobConfig.from_dict(values)


def test_iti_strengths_are_the_papers_alphas():
    assert [JobConfig.from_dict(compose_job(f"iti={s}")).iti.alpha for s in ("weak", "mid", "strong")] == [4, 8, 12]
    assert JobConfig.from_dict(compose_job("iti=strong", "iti.alpha=6")).iti.alpha == 6


@pytest.mark.parametrize("override, message", [
    ("ratio=150", "ratio=150: the toxic share is a percentage in \\[0, 100\\)"),
    ("ratio=-1", "ratio=-1"),
    ("ratio=100", "ratio=100"),
    ("ratio=abc", "ratio='abc': expected a number"),
    ("ratio=nan", "ratio=nan"),
    ("seed=1.5", "seed=1.5: expected a whole number"),
    ("model.n_heads=5", "not divisible"),
    ("+model.colour=red", "unknown key\\(s\\) model.colour"),
    ("method.name=magic", "method='magic' is unknown"),
    ("data.tokenizer.path=/no/such/tokenizer.json", "data.tokenizer.path"),
    ("trainer.lr=-1", "trainer.lr=-1: must lie in \\(0, inf\\)"),
    ("trainer.strategy=zero3", "trainer.strategy='zero3': expected one of auto, ddp, fsdp"),
    ("trainer.global_batch_tokens=100", "trainer.global_batch_tokens=100 is not a multiple"),
    ("trainer.devices=2", "needs trainer.strategy=ddp or fsdp"),
    ("method=iti iti.alpha=-1", "iti.alpha=-1: must lie in"),
    ("method=iti iti.alpha=nan", "iti.alpha=nan: must lie in"),
    ("method=iti iti.top_k_heads=0", "iti.top_k_heads=0: must lie in"),
    ("method=iti iti.top_k_heads=17", "iti.top_k_heads=17 exceeds the model's 16 heads"),
    ("method=iti iti.direction=sideways", "iti.direction='sideways': expected one of mass_mean, probe, random"),
])
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        JobConfig.from_dict(compose_job(*override.split()))


def test_unknown_group_option_is_refused_by_hydra():
    with pytest.raises(MissingConfigException, match="method"):
        compose_job("method=magic")


def test_files_data_needs_existing_paths(tmp_path):
    paths = {part: tmp_path / f"{part}.jsonl" for part in ("clean", "toxic", "heldout", "toxigen", "rtp")}
    for path in paths.values():
        path.write_text('{"text": "x", "prompt": "x"}\n')
    overrides = ["data=files", *(f"data.files.{p}={path}" for p, path in paths.items())]
    with pytest.raises(ConfigError, match="data.files.clean='/no/such.jsonl': no such file"):
        JobConfig.from_dict(compose_job(*overrides, "data.files.clean=/no/such.jsonl"))
    with pytest.raises(ConfigError, match="scorer=oracle only knows the synthetic world"):
        JobConfig.from_dict(compose_job(*overrides))
    job = JobConfig.from_dict(compose_job(*overrides, "scorer=classifier"))  # its default model, never loaded here
    assert job.data.files.toxic == str(paths["toxic"])


def test_tracking_uri_defaults_under_root(tmp_path):
    job = JobConfig.from_dict(compose_job(f"root={tmp_path}"))
    assert job.tracking_uri == f"sqlite:///{Path(tmp_path).resolve()}/mlflow.db"


def test_every_scorer_the_readme_names_composes():
    for name in ("oracle", "classifier", "perspective"):
        assert compose_job(f"scorer={name}")["scorer"]["name"] == name
