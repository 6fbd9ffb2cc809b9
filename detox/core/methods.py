"""The method registry: every post-training method is a module of `detox.methods`, found by name.

A method module declares, in one `register(Method(...))` call:
  * `options`: the dataclass of its options, a subclass of `MethodOptions` defined in its own module
    (`conf/method/<name>.yaml` sets them; `name` is the key);
  * `extend(plan, job)`: the stages it adds to the study plan or replaces in it (a post-training
    stage, a probe stage, an annotated mixture), the model the evaluation reads, a prompt prefix, an
    intervention during generation (see `detox.core.plan.Plan`);
  * `label(job)`: its entry in the table's strength column (e.g. ITI's weak / mid / strong);
  * `params(job)`: MLflow params of its own beyond the contract's common ones (ITI: alpha, direction, ...);
  * `validate(job)`: checks that span its options and the rest of the job, before any work;
  * `pretrains`: whether it pre-trains its own model (then it cannot treat a pre-trained `model.path`);
  * `scored_documents(job)`: about how many training documents it has the job's scorer score (MEDA's and
    INST's annotation, SFT's filter), for plan mode's estimate of the scoring's time and requests.
`job` is always the whole job's config (`detox.job.JobConfig`), passed down, never imported here: the
job's config is composed of the methods' options, so it sits above them.
Adding a method touches only its own module and its conf/method/<name>.yaml: nothing else names it.

The registry imports no method: `names()` imports every module of `detox.methods` the first time it
is asked (discovery by name, not an import edge). Everything here is light (no torch), so a bad
config is rejected before the torch stack loads.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable

from detox.core.plan import Plan
from detox.core.schema import ConfigError

PACKAGE = "detox.methods"  # where the method modules live


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
    extend: Callable[[Plan, Any], None] = _nothing
    label: Callable[[Any], str] = lambda job: "-"
    params: Callable[[Any], dict[str, str]] = lambda job: {}
    validate: Callable[[Any], None] = _nothing
    pretrains: bool = False  # it pre-trains a model of its own (MEDA, INST): refused for a pre-trained model.path
    scored_documents: Callable[[Any], int] = lambda job: 0  # training documents the job's scorer scores (an estimate)


_REGISTRY: dict[str, Method] = {}
_discovered = False  # whether every module of detox.methods has been imported (some may be imported alone)


def register(method: Method) -> Method:
    if method.name in _REGISTRY:
        raise ValueError(f"two methods are called {method.name!r}")
    _REGISTRY[method.name] = method
    return method


def names() -> list[str]:
    global _discovered
    if not _discovered:
        package = importlib.import_module(PACKAGE)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):  # a helper that methods share (e.g. _annotated) registers nothing
                importlib.import_module(f"{PACKAGE}.{module.name}")
        _discovered = True
    return sorted(_REGISTRY)


def get(name: str) -> Method:
    if name not in names():
        raise ConfigError(f"method={name!r} is unknown; implemented: {', '.join(names())}")
    return _REGISTRY[name]
