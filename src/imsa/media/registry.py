"""The media extractors: one file each under :mod:`imsa.media.extractors`, behind one registry.

An extractor has a *role* in the pipeline:

* ``vad``: ``speech(audio) -> fraction`` of a segment's audio that is voice;
* ``audio``: ``extract(audio) -> (vector, frames)``, utterance functionals and per-frame
  descriptors at ``frame_rate`` Hz;
* ``face``: ``detect(frames) -> (found, boxes)`` per sampled frame;
* ``visual``: ``extract(frames, boxes, found) -> (K, dim)`` features per sampled frame;
* ``text``: ``encode(texts) -> {"vectors", "tokens", "lengths"}``;
* ``asr``: ``transcribe(audio) -> list of Cue`` (optional speech recognition).

Each file registers a class with :func:`register_extractor`, naming the PyPI packages it
needs (for ``imsa extractors`` and the install hint) and its licence. Its constructor's
keyword-only arguments are its options. Heavy packages are imported when an extractor
is built, never when it is listed. A file outside imsa registers the same way
(``$IMSA_PLUGINS``, see :mod:`imsa.registry`).
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

from ..errors import ConfigError, did_you_mean
from ..registry import Registry
from .decode import MediaError

ROLES = ("vad", "audio", "face", "visual", "text", "asr")
# The default set: eGeMAPS is the field's audio standard; no speech recognition unless asked.
DEFAULTS = {"vad": "silero", "audio": "egemaps", "face": "haar", "visual": "facemesh", "text": "minilm", "asr": None}


@dataclass(frozen=True)
class ExtractorEntry:
    """One extractor.

    Attributes
    ----------
    name, role : str
    factory : callable
        ``factory(**options)`` builds the extractor.
    packages : tuple of str
        PyPI distributions it needs (``name`` or ``name==version`` hints are not used: the
        constraints file pins versions).
    modules : tuple of str
        The import names of those packages, to tell whether they are installed.
    licence : str
    description : str
    install : str
        How to install its packages where the ``media`` extra does not (default: the extra).
    """

    name: str
    role: str
    factory: Callable[..., object]
    packages: tuple[str, ...]
    modules: tuple[str, ...]
    licence: str
    description: str
    install: str = ""

    @property
    def options(self) -> dict:
        """Keyword options with their defaults."""
        params = inspect.signature(self.factory).parameters
        return {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY}

    def versions(self) -> dict[str, str | None]:
        """Installed version of each package (None: not installed)."""
        found = {}
        for package in self.packages:
            try:
                found[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                found[package] = None
        return found

    @property
    def installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)

    def build(self, **options):
        """The extractor with ``options``; a clear error if a package is missing or an option unknown."""
        for key in options:
            if key not in self.options:
                raise ConfigError(
                    f"Unknown option {key!r} of extractor {self.name}.{did_you_mean(key, self.options)} Valid options: {', '.join(self.options) or 'none'}."
                )
        if not self.installed:
            missing = [p for p, m in zip(self.packages, self.modules) if importlib.util.find_spec(m) is None]
            raise MediaError(
                f"The {self.role} extractor {self.name!r} needs {', '.join(missing)}: pip install 'imsa[media]' (or pip install {' '.join(missing)})."
            )
        return self.factory(**options)


EXTRACTORS: Registry[ExtractorEntry] = Registry("extractor", "imsa.media.extractors")


def register_extractor(name: str, *, role: str, packages: tuple[str, ...], modules: tuple[str, ...], licence: str, description: str, install: str = ""):
    """Register a class (or factory) as extractor ``name`` of ``role`` (see :class:`ExtractorEntry`)."""
    if role not in ROLES:
        raise RuntimeError(f"extractor {name!r}: unknown role {role!r}")

    def decorate(factory):
        EXTRACTORS.add(name, ExtractorEntry(name, role, factory, tuple(packages), tuple(modules), licence, description, install))
        return factory

    return decorate


def list_extractors(role: str | None = None) -> list[ExtractorEntry]:
    """The registered extractors (of ``role``), sorted by role order then name."""
    entries = [e for e in EXTRACTORS.entries() if role is None or e.role == role]
    return sorted(entries, key=lambda e: (ROLES.index(e.role), e.name))


def extractor_entry(role: str, name: str) -> ExtractorEntry:
    """The extractor ``name``, checked to have ``role``."""
    entry = EXTRACTORS[name]
    if entry.role != role:
        valid = [e.name for e in list_extractors(role)]
        raise ConfigError(f"{name!r} is a {entry.role} extractor, not a {role} one. {role} extractors: {', '.join(valid)}.")
    return entry
