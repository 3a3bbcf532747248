"""Configs: dataclasses with the papers' defaults, overridden by YAML files and ``--set key=value``.

Resolution order, later wins: the method's dataclass defaults, one packaged file
``configs/<method>/<name>.yaml`` (named explicitly, e.g. ``--config momke/mosei``, else the
one named after the dataset, else the one named after its family: see
:func:`packaged_config`), a user YAML file, ``--set`` pairs.
An unknown key is an error that names it and lists the valid ones. A resolved config
is a frozen dataclass: nothing mutates it afterwards.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from .errors import ConfigError, did_you_mean

logger = logging.getLogger("imsa")


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


@dataclass(frozen=True)
class Interval:
    """The domain of a numeric config value: ``low``/``high`` bounds (None: unbounded), open or closed."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def __str__(self) -> str:
        if self.high is None:
            return f"{'greater than' if self.low_open else 'at least'} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


COUNT = Interval(1)  # epochs, sizes, widths: at least 1
POSITIVE = Interval(0, low_open=True)
NON_NEGATIVE = Interval(0)
PROBABILITY = Interval(0, 1, high_open=True)  # dropout rates


def check_domains(config) -> None:
    """Refuse a config value outside the domain its class declares in ``DOMAINS`` (None passes where allowed)."""
    owner = type(config).__qualname__
    for name, domain in getattr(config, "DOMAINS", {}).items():
        value = getattr(config, name)
        if value is not None and value not in domain:
            raise ConfigError(f"The {name!r} parameter of {owner} must be {domain}. Got {value!r} instead.")


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


_WARNED: set = set()


def _warn_renamed(owner: str, old: str, new: str) -> None:
    if (owner, old) not in _WARNED:
        _WARNED.add((owner, old))
        logger.warning("Config key %r of %s is now %r; the old name is read until the next release.", old, owner, new)


def build_config(cls, *layers: dict | None):
    """Instantiate dataclass ``cls`` from its defaults updated by each dict in ``layers``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    renamed = getattr(cls, "RENAMED", {})
    for layer in layers:
        for key, value in (layer or {}).items():
            if key in renamed and renamed[key] in fields:  # an old name: still read, for one release
                _warn_renamed(cls.__qualname__, key, renamed[key])
                key = renamed[key]
            if key not in fields:
                raise ConfigError(f"Unknown config key {key!r} for {cls.__qualname__}.{did_you_mean(key, fields)} Valid keys: {', '.join(fields)}.")
            values[key] = _coerce(value, hints[key], key, cls.__qualname__)
    return cls(**values)


@dataclass(frozen=True)
class PackagedConfig:
    """The packaged config file that applies to a run, if any.

    Attributes
    ----------
    name : str or None
        ``"<method>/<file stem>"`` (e.g. ``"momke/mosei"``); None when none applies.
    values : dict
    reason : str
        Why it applies (or why none does), for the line a run prints.
    """

    name: str | None
    values: dict
    reason: str


def packaged_names(method: str) -> list[str]:
    """The stems of the packaged config files of ``method`` (``["iemocap4", "mosei", ...]``)."""
    folder = resources.files("imsa") / "configs" / method
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def packaged_config(method: str, dataset: str = "", *, family: str = "", name: str | None = None) -> PackagedConfig:
    """The packaged config of ``method`` for a dataset: named, or by dataset name, or by family.

    Parameters
    ----------
    method : str
    dataset : str
        Registry name (a packaged file of that name wins over the family's).
    family : str
        The dataset's family (``mosi``, ``mosei``, ``iemocap4``, ...).
    name : str, optional
        An explicit choice, ``"momke/mosei"`` or ``"mosei"``; it must exist.
    """
    available = packaged_names(method)
    if name is not None:
        stem = name.split("/", 1)[1] if name.startswith(f"{method}/") else name
        if "/" in stem or stem not in available:
            listed = ", ".join(f"{method}/{n}" for n in available) or "none"
            raise ConfigError(f"No packaged config {name!r} for method {method}. Packaged configs of {method}: {listed}.")
        reason = "named explicitly"
    elif dataset in available:
        stem, reason = dataset, f"for dataset {dataset}"
    elif family and family in available:
        stem, reason = family, f"for the {family} family of dataset {dataset}"
    else:
        what = f"family {family}" if family else "an unknown family"
        return PackagedConfig(None, {}, f"no packaged config of {method} for dataset {dataset} ({what})")
    path = resources.files("imsa") / "configs" / method / f"{stem}.yaml"
    return PackagedConfig(f"{method}/{stem}", yaml.safe_load(path.read_text()) or {}, reason)


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


def config_source(value: str | os.PathLike | dict | None, method: str) -> tuple[dict, str | None]:
    """What ``--config`` names: (config values, packaged config name or None).

    A dict is taken as config values; a path or ``*.yaml`` is read as a YAML file of config
    values; anything else names a packaged config (``momke/mosei``), checked now.
    """
    if not value:
        return {}, None
    if isinstance(value, dict):
        return dict(value), None
    if os.path.lexists(value) or str(value).endswith((".yaml", ".yml")):
        return read_yaml(value), None
    packaged_config(method, name=str(value))  # an unknown name fails here, listing the packaged ones
    return {}, str(value)


def split_assignments(values: dict) -> tuple[dict, dict]:
    """``--set`` values: ``data.KEY`` go to the dataset loader, the rest to the method config."""
    data = {k[len("data.") :]: v for k, v in values.items() if k.startswith("data.")}
    method = {k: v for k, v in values.items() if not k.startswith("data.")}
    return method, data
