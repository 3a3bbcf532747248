"""What makes two runs the same experiment, computed in one place.

Every artefact that may be resumed (a run directory, a grid store, a shared
complete-data phase, a resume checkpoint, a tuning study) is matched against the
request by :func:`fingerprint` or :func:`differences` of its identity: the resolved
settings that decide its numbers. Both first bring the settings to their canonical
form (:func:`canonical`), so that an upgrade does not strand a user's runs:

* A key added after a release, whose value reproduces the behaviour before it, is left
  out where it has that value (:data:`ADDED_KEYS`, the migration table; each entry has
  a test). An artefact written before the key existed keeps its identity; one that
  sets the key to another value has another identity, as it should.
* A method's config class declares its own migrations: ``RENAMED`` (a key's old name,
  to which the identity keeps referring, so artefacts written under it stay the same
  experiment) and ``ADDED`` (a key it gained, with the value that reproduces its old
  behaviour); :func:`canonical` applies them where it is given the class.
* Tuples and lists are the same (YAML and JSON turn one into the other).
* Where a release changes what a value means, :data:`SCHEMA` goes up. Every artefact
  records the imsa version and schema that wrote it (:func:`stamp`, under
  ``written_by``, never part of an identity); one written under a newer schema than
  this release knows is refused (:func:`check_schema`), never misread.
"""

from __future__ import annotations

import hashlib
import json

from . import __version__
from .errors import ConfigError

SCHEMA = 1  # the config schema this release reads and writes
META_KEY = "written_by"  # {"imsa": version, "schema": SCHEMA}: provenance, not identity

# The migration table: (section, key) -> (the value that reproduces the behaviour from
# before the key existed, the release that added it). ``section`` names the mapping the
# key lives in: "protocol", "config" (a method's config, any method), "dataset_options",
# or "" for the top level of an experiment.
ADDED_KEYS: dict[tuple[str, str], tuple[object, str]] = {
    ("protocol", "frames"): (0.0, "0.3.0"),  # frame-level missing inside fixed / random
    ("protocol", "rates"): ([], "0.3.0"),  # several frame rates scored by one model
    ("", "search"): ({}, "0.3.0"),  # the tuning budget behind a config
}


def _plain(value):
    """JSON's view of a value: tuples as lists, mappings with string keys."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def canonical(identity: dict, config_class=None) -> dict:
    """``identity`` without its ``written_by`` stamp and without added keys at their old-behaviour value.

    ``config_class`` (the method's config dataclass) brings the method's own migrations:
    its ``RENAMED`` keys go back to the names artefacts were first written with, and its
    ``ADDED`` keys at their old-behaviour value are left out, in the ``config`` section.

    >>> canonical({"protocol": {"kind": "fixed", "rate": 0.0, "frames": 0.0}, "written_by": {"imsa": "0.5.0"}})
    {'protocol': {'kind': 'fixed', 'rate': 0.0}}
    """
    data = _plain({k: v for k, v in identity.items() if k != META_KEY})
    for (section, key), (neutral, _) in ADDED_KEYS.items():
        where = data if not section else data.get(section)
        if isinstance(where, dict) and key in where and where[key] == _plain(neutral):
            del where[key]
    config = data.get("config")
    if config_class is not None and isinstance(config, dict):
        for old, new in getattr(config_class, "RENAMED", {}).items():
            if new in config and old not in config:
                config[old] = config.pop(new)
        for key, neutral in getattr(config_class, "ADDED", {}).items():
            if key in config and config[key] == _plain(neutral):
                del config[key]
    return data


def fingerprint(identity: dict, config_class=None) -> str:
    """sha256 of the canonical identity (keys sorted): equal for the same experiment across releases."""
    return hashlib.sha256(json.dumps(canonical(identity, config_class), sort_keys=True, default=str).encode()).hexdigest()


def differences(previous: dict, current: dict, config_class=None) -> list[str]:
    """The keys in which two identities differ, each as ``key (A before, B now)``, nested keys dotted."""
    found = []

    def walk(a, b, prefix):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key, "(absent)"), b.get(key, "(absent)"), f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix[:-1]} ({a!r} before, {b!r} now)")

    walk(canonical(previous or {}, config_class), canonical(current, config_class), "")
    return found


def stamp() -> dict:
    """The ``written_by`` record of an artefact written now."""
    return {"imsa": __version__, "schema": SCHEMA}


def check_schema(document: dict, where) -> None:
    """Refuse an artefact written under a newer config schema than this release reads."""
    written = (document or {}).get(META_KEY) or {}
    schema = written.get("schema", 1)
    if not isinstance(schema, int) or schema > SCHEMA:
        raise ConfigError(
            f"{where}: written by imsa {written.get('imsa', '?')} (config schema {schema}); this imsa {__version__} reads schema {SCHEMA} "
            "and older. Upgrade imsa (pip install -U imsa) to resume or read it."
        )
