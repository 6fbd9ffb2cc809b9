"""One source of defaults: each group's default option file (the one conf/config.yaml picks) and every
method's option file state the dataclass defaults of what they configure, except where a line says
otherwise with the marker `(dataclass: <the dataclass's value>)` in its comment, the reason beside it.

So a `TrainerConfig()` built in a test or a benchmark differs from the default job's trainer exactly
where conf/trainer/cpu.yaml says so, and a default changed in one place but not the other fails here.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from detox.core import methods
from detox.data.config import DataConfig
from detox.evaluation.config import CapabilityConfig, EvaluateConfig, RedteamConfig, ScorerConfig
from detox.job import SearchConfig
from detox.methods.iti import ItiOptions
from detox.toy.config import ToyConfig
from detox.training.config import ModelConfig, TrainerConfig

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = {"data": DataConfig, "model": ModelConfig, "trainer": TrainerConfig, "iti": ItiOptions,
          "scorer": ScorerConfig, "evaluate": EvaluateConfig, "redteam": RedteamConfig, "search": SearchConfig,
          "capability": CapabilityConfig, "toy": ToyConfig}
MARKER = re.compile(r"#\s*\(dataclass: ([^)]*)\)")


def default_options() -> dict[str, str]:
    """Each group's default option, as conf/config.yaml's defaults list names it."""
    top = yaml.safe_load((CONF / "config.yaml").read_text())
    return {group: option for entry in top["defaults"] if isinstance(entry, dict) for group, option in entry.items()}


def option_files() -> list[tuple[Path, type]]:
    defaults = default_options()
    files = [(CONF / group / f"{defaults[group]}.yaml", schema) for group, schema in GROUPS.items()]
    return files + [(path, methods.get(path.stem).options) for path in sorted((CONF / "method").glob("*.yaml"))]


def plain(value):
    """A value as YAML writes it: tuples as lists, whole floats as ints (1.0 == 1)."""
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def differences(written: dict, defaults: dict, prefix: str = ""):
    """(key, written value, dataclass value) for every key of the file that differs from the dataclass."""
    for key, value in written.items():
        if key == "defaults" or (isinstance(value, str) and value.startswith("${")):  # Hydra's list, interpolations
            continue
        assert key in defaults, f"{prefix}{key}: not a field of the dataclass"
        if isinstance(value, dict) and isinstance(defaults[key], dict):
            yield from differences(value, defaults[key], f"{prefix}{key}.")
        elif plain(value) != plain(defaults[key]):
            yield f"{prefix}{key}", value, defaults[key]


def marked(path: Path) -> dict[str, str]:
    """key (its last part) -> the dataclass value its line's marker states."""
    found = {}
    for line in path.read_text().splitlines():
        key, marker = re.match(r"\s*(\w+):", line), MARKER.search(line)
        if key and marker:
            found[key[1]] = marker[1]
    return found


@pytest.mark.parametrize("path, schema", option_files(), ids=lambda x: str(x.relative_to(CONF)) if isinstance(x, Path) else "")
def test_an_option_file_differs_from_its_dataclass_only_where_it_says_so(path, schema):
    written = yaml.safe_load(path.read_text()) or {}
    if path.parent.name == "method":  # a method's file names it: the registry's name, whatever the dataclass's
        assert written.pop("name") == path.stem
    differing = {key.rpartition(".")[2]: default for key, _, default in
                 differences(written, dataclasses.asdict(schema()))}
    marks = marked(path)
    assert set(differing) == set(marks), (f"{path}: keys that differ from {schema.__name__}'s "
                                          f"defaults {sorted(differing)}, keys marked (dataclass: ...) {sorted(marks)}")
    for key, default in differing.items():
        assert yaml.safe_load(marks[key]) == plain(default), f"{key}: the marker says {marks[key]}, the dataclass {default}"


def test_the_check_catches_an_unmarked_difference(tmp_path):
    changed = tmp_path / "cpu.yaml"
    changed.write_text((CONF / "trainer" / "cpu.yaml").read_text().replace("lr: 0.01 ", "lr: 0.02 "))
    with pytest.raises(AssertionError, match="lr"):
        test_an_option_file_differs_from_its_dataclass_only_where_it_says_so(changed, TrainerConfig)
