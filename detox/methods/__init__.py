"""The post-training methods, one module each in this package, found by name.

A method module declares, in one `register(Method(...))` call:
  * `options`: the dataclass of its options (`conf/method/<name>.yaml` sets them; `name` is the key);
  * `extend(plan, job)`: the stages it adds to the study plan or replaces in it (a post-training
    stage, a probe stage, an annotated mixture), the model the evaluation reads, a prompt prefix, an
    intervention during generation (see `detox.core.plan.Plan`);
  * `label(job)`: its entry in the table's strength column (e.g. ITI's weak / mid / strong);
  * `validate(job)`: checks that span its options and the rest of the job, before any work;
  * `pretrains`: whether it pre-trains its own model (then it cannot treat a pre-trained `model.path`).
Adding a method touches only its own module here and its conf/method/<name>.yaml.

This package stays light (no torch at import): a method's heavy work is imported inside the stage
functions it adds, so a bad config is rejected before the torch stack loads.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable

from detox.core.plan import Plan
from detox.core.schema import ConfigError

Job = Any  # a detox.config.JobConfig; not imported, since detox.config reads this registry


@dataclass
class MethodOptions:
    """Options every method has; a method with options of its own subclasses this."""

    name: str = "none"  # which method (a module of detox.methods)


def _nothing(*_) -> None:
    return None


@dataclass(frozen=True)
class Method:
    name: str
    options: type[MethodOptions] = MethodOptions
    extend: Callable[[Plan, Job], None] = _nothing
    label: Callable[[Job], str] = lambda job: "-"
    validate: Callable[[Job], None] = _nothing
    pretrains: bool = False  # it pre-trains a model of its own (MEDA, INST): refused for a pre-trained model.path


_REGISTRY: dict[str, Method] = {}
_discovered = False  # whether every module of this package has been imported (some may be imported alone)


def register(method: Method) -> Method:
    if method.name in _REGISTRY:
        raise ValueError(f"two methods are called {method.name!r}")
    _REGISTRY[method.name] = method
    return method


def names() -> list[str]:
    global _discovered
    if not _discovered:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
        _discovered = True
    return sorted(_REGISTRY)


def get(name: str) -> Method:
    if name not in names():
        raise ConfigError(f"method={name!r} is unknown; implemented: {', '.join(names())}")
    return _REGISTRY[name]
