"""A job's plan as data: the stages it runs, what each reads, and the key that identifies each output.

A stage's key is the hash of its name, its spec (exactly the config values that determine its
output), its version (the code's: bumped when what the stage produces for the same spec changes) and
the keys of the stages it reads, so a key changes exactly when something upstream that matters
changes. The job's identity (its MLflow run) is the key of its last stage: the cache and
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


VERSION = "version"  # where a stage's version (when above 1) goes in its keyed spec (and its spec.json)

Build = Callable[[Path, Inputs], "dict[str, float] | None"]


@dataclass
class Stage:
    name: str
    spec: dict[str, Any]  # the config values that determine the output (JSON-serialisable)
    build: Build  # writes the artifact into the given folder, returns metrics to log
    inputs: tuple[str, ...] = ()  # earlier stages whose keys enter this key (and whose artifacts it reads)
    logged: tuple[str, ...] = ()  # files of its artifact to attach to the job's MLflow run
    distributed: bool = False  # every rank of a multi-process run takes part in its build (pre-training)
    # The version of what the build produces: bump it when a code change makes the same spec give a
    # different artifact (another packing order, a new file), so no job re-uses the old output. The
    # stage fingerprints (tests/test_stage_versions.py) fail when a study stage's output changes while
    # its version did not. Version 1 stays out of the key (see `Plan.keyed_spec`).
    version: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.version, int) or self.version < 1:
            raise ValueError(f"stage {self.name!r}: version={self.version!r}, expected an integer of at least 1")


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

    def remove(self, name: str) -> None:
        """Drop the stage named `name`, if the plan has it (a stage no other one reads any more)."""
        self.stages = [stage for stage in self.stages if stage.name != name]

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
        """The stage's spec with the keys of its inputs and its version: what its key is made from."""
        spec = {**stage.spec, **{name: keys[name] for name in stage.inputs}}
        if stage.version != 1:
            # Only a version above 1 enters the key: a stage that never bumped its version keeps the key
            # it had before stages had versions, so every existing cache stays valid.
            if VERSION in spec:
                raise ValueError(f"stage {stage.name!r}: {VERSION!r} is reserved for the stage's version, "
                                 "not a spec field or an input's name")
            spec[VERSION] = stage.version
        return spec

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
