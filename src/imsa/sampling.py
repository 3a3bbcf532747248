"""Argument checks shared by the samplers of missing modalities (:mod:`imsa.missing`)
and of missing frames (:mod:`imsa.frames`): modality codes, counts, random generators."""

from __future__ import annotations

import numpy as np

from .errors import invalid_parameter


def check_code(code, owner: str) -> str:
    if not isinstance(code, str) or not code or any(ch == "," or ch.isspace() for ch in code):
        raise invalid_parameter("modality code", owner, "a non-empty string without commas or spaces", code)
    return code


def check_modalities(modalities, owner: str) -> tuple[str, ...]:
    """Validate a dataset's modality order: a non-empty tuple of distinct codes."""
    if isinstance(modalities, str) or not isinstance(modalities, (tuple, list)):
        raise invalid_parameter("modalities", owner, "a tuple of modality codes such as ('l', 'a', 'v')", modalities)
    modalities = tuple(check_code(code, owner) for code in modalities)
    if not modalities or len(set(modalities)) != len(modalities):
        raise invalid_parameter("modalities", owner, "a non-empty tuple of distinct modality codes", modalities)
    return modalities


def check_count(n, owner: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise invalid_parameter("n", owner, "a non-negative integer", n)
    return int(n)


def as_generator(rng, owner: str) -> np.random.Generator:
    """A numpy Generator, or one seeded from an int; no implicit global randomness."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise invalid_parameter("rng", owner, "a numpy Generator or an int seed", rng)
