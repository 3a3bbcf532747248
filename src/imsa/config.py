"""Configs: dataclasses with the papers' defaults, overridden by YAML files and ``--set key=value``.

Resolution order, later wins: the method's dataclass defaults, the packaged
``configs/<method>/<dataset>.yaml`` if there is one, a user YAML file, ``--set`` pairs.
An unknown key is an error that names it and lists the valid ones. A resolved config
is a frozen dataclass: nothing mutates it afterwards.
"""

from __future__ import annotations

import dataclasses
import typing
from importlib import resources
from pathlib import Path

import yaml

from .errors import ConfigError


def parse_assignments(pairs: list[str]) -> dict:
    """``["lr=1e-3", "patience=none"]`` -> ``{"lr": 0.001, "patience": None}`` (values read as YAML)."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {pair!r}.")
        out[key.strip()] = _parse_value(value.strip())
    return out


def _parse_value(text: str):
    """A number as a number (YAML reads ``1e-3`` as a string), ``none`` as None, the rest as YAML."""
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    parsed = yaml.safe_load(text) if text else ""
    return None if isinstance(parsed, str) and parsed.lower() == "none" else parsed


def _coerce(value, annotation, key: str, owner: str):
    """Check ``value`` against a field annotation, converting ints to floats where asked."""
    origin = typing.get_origin(annotation)
    options = typing.get_args(annotation) if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) else (annotation,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"The {key!r} parameter of {owner} must not be None.")
    for option in options:
        if option is type(None):
            continue
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is bool and isinstance(value, bool):
            return value
        if option is str and isinstance(value, str):
            return value
        if typing.get_origin(option) in (tuple, list) and isinstance(value, (list, tuple)):
            return tuple(value)
        if typing.get_origin(option) is dict and isinstance(value, dict):
            return dict(value)
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"The {key!r} parameter of {owner} must be {names}. Got {value!r} instead.")


def build_config(cls, *layers: dict | None):
    """Instantiate dataclass ``cls`` from its defaults updated by each dict in ``layers``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if key not in fields:
                raise ConfigError(f"Unknown config key {key!r} for {cls.__qualname__}. Valid keys: {', '.join(fields)}.")
            values[key] = _coerce(value, hints[key], key, cls.__qualname__)
    return cls(**values)


def packaged_config(method: str, dataset: str) -> dict:
    """The packaged defaults for ``method`` on ``dataset`` (empty when there are none)."""
    path = resources.files("imsa") / "configs" / method / f"{dataset}.yaml"
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from a user file, with errors that name the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e}).") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}.")
    return data
