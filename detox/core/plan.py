"""A job's plan as data: the stages it runs, what each reads, and the key that identifies each output.

A stage's key is the hash of its name, its spec (exactly the config values that determine its
output) and the keys of the stages it reads, so a key changes exactly when something upstream that
matters changes. The job's identity (its MLflow run) is the key of its last stage: the cache and
MLflow cannot drift apart. Methods change the plan (add or replace stages, choose the evaluated
model, a prompt prefix, an intervention during generation) before it runs; a test can inspect a
plan without running it. Nothing here imports torch.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from detox.core.artifacts import STAGE
from detox.core.cache import stage_key


class Inputs:
    """The artifact folders a build may read: its declared inputs and everything upstream of them."""

    def __init__(self, paths: dict[str, Path], allowed: set[str], stage: str):
        self._paths, self._allowed, self._stage = paths, allowed, stage

    def __getitem__(self, name: str) -> Path:
        if name not in self._allowed:
            raise KeyError(f"stage {self._stage!r} reads {name!r}, which is not upstream of its inputs")
        return self._paths[name]


Build = Callable[[Path, Inputs], "dict[str, float] | None"]


@dataclass
class Stage:
    name: str
    spec: dict[str, Any]  # the config values that determine the output (JSON-serialisable)
    build: Build  # writes the artifact into the given folder, returns metrics to log
    inputs: tuple[str, ...] = ()  # earlier stages whose keys enter this key (and whose artifacts it reads)
    logged: tuple[str, ...] = ()  # files of its artifact to attach to the job's MLflow run
    distributed: bool = False  # every rank of a multi-process run takes part in its build (pre-training)


@dataclass
class Intervention:
    """Something switched on around generation and scoring (e.g. ITI's hooks), made from artifacts."""

    spec: dict[str, Any]
    inputs: tuple[str, ...]
    make: Callable[[Any, Inputs], AbstractContextManager]  # (model, artifacts) -> context manager


@dataclass
class Plan:
    stages: list[Stage] = field(default_factory=list)
    model: str = STAGE.PRETRAIN  # the stage whose exported model (`hf/`) is evaluated
    prompt_prefix: str = ""  # text placed before every evaluation prompt
    intervention: Intervention | None = None

    def __getitem__(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"the plan has no stage {name!r}: it has {', '.join(s.name for s in self.stages)}")

    def add(self, stage: Stage, before: str | None = None) -> None:
        """Append `stage`, or insert it before the stage named `before`."""
        at = len(self.stages) if before is None else self.stages.index(self[before])
        self.stages.insert(at, stage)

    def replace(self, stage: Stage) -> None:
        """Put `stage` where the stage of the same name was."""
        self.stages[self.stages.index(self[stage.name])] = stage

    def keys(self) -> dict[str, str]:
        """Each stage's cache key, chained from the keys of its inputs."""
        keys: dict[str, str] = {}
        for stage in self.stages:
            missing = [name for name in stage.inputs if name not in keys]
            if missing:
                raise ValueError(f"stage {stage.name!r} reads {missing}, which no earlier stage makes")
            keys[stage.name] = stage_key(stage.name, self.keyed_spec(stage, keys))
        return keys

    @staticmethod
    def keyed_spec(stage: Stage, keys: dict[str, str]) -> dict:
        """The stage's spec with the keys of its inputs: what its key is made from."""
        return {**stage.spec, **{name: keys[name] for name in stage.inputs}}

    def upstream(self, names: tuple[str, ...]) -> set[str]:
        """`names` and every stage they depend on."""
        seen, todo = set(), list(names)
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(self[name].inputs)
        return seen

    @property
    def key(self) -> str:
        """The job's identity: the key of its last stage."""
        return self.keys()[self.stages[-1].name]
