"""How config fields declare their valid values, and the one check that enforces them.

Types and unknown keys are checked by OmegaConf (the dataclasses are its structured-config schemas,
see `detox.job.JobConfig.from_dict`); what a type cannot say, the field says beside its default:

    lr: float = number(1e-2, "(0, inf)")           # an interval, open or closed at each end
    betas: tuple[float, float] = number((0.9, 0.95), "[0, 1)")   # applies to every element
    name: str = choice("oracle", "oracle", "classifier")

`check_fields` walks a dataclass tree and names the first value out of its range. This module
imports nothing heavy, so a bad override fails before torch is loaded.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any


class ConfigError(ValueError):
    """A configuration value that cannot run; the message names the key and the value."""


_INTERVAL = re.compile(r"^([\[(])\s*(\S+)\s*,\s*(\S+)\s*([\])])$")


def _default(value: Any) -> dict:
    if isinstance(value, (list, dict)):
        return {"default_factory": lambda: type(value)(value)}
    return {"default": value}


def number(default: Any, interval: str, meaning: str = "must lie") -> Any:
    """A numeric field (or a list/tuple of numbers) whose values must lie in `interval`, e.g. "[0, 100)".

    `meaning` words the error: "<key>=<value>: <meaning> in <interval>"."""
    if not _INTERVAL.match(interval):
        raise ValueError(f"malformed interval {interval!r}")
    return dataclasses.field(**_default(default), metadata={"interval": interval, "meaning": meaning})


def choice(default: str, *options: str) -> Any:
    """A string field that must be one of `options`."""
    return dataclasses.field(default=default, metadata={"choices": options})


def in_interval(value: float, interval: str) -> bool:
    """Whether `value` lies in `interval` ("[a, b)" etc.; "inf" is allowed as a bound). NaN never does."""
    left, low, high, right = _INTERVAL.match(interval).groups()
    low, high = float(low), float(high)
    if math.isnan(value):
        return False
    above = value >= low if left == "[" else value > low
    below = value <= high if right == "]" else value < high
    return above and below


def check_fields(config: Any, prefix: str = "") -> None:
    """Raise ConfigError for the first field of the dataclass tree `config` outside its declared range."""
    for field in dataclasses.fields(config):
        value, key = getattr(config, field.name), prefix + field.name
        if dataclasses.is_dataclass(value):
            check_fields(value, key + ".")
            continue
        if "interval" in field.metadata:
            interval = field.metadata["interval"]
            for item in value if isinstance(value, (list, tuple)) else [] if value is None else [value]:  # None: unset
                if not in_interval(float(item), interval):
                    shown = f"{item:g}" if isinstance(item, float) else repr(item)
                    raise ConfigError(f"{key}={shown}: {field.metadata['meaning']} in {interval}")
        if "choices" in field.metadata and value not in field.metadata["choices"]:
            raise ConfigError(f"{key}={value!r}: expected one of {', '.join(field.metadata['choices'])}")
