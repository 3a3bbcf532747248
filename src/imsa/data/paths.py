"""Where data lives: ``--data-dir``, else ``$IMSA_DATA``, else a per-user cache directory.

The layout under the data directory mirrors the upstream repositories' file names,
e.g. ``<root>/cmu-mosi/bc-lstm/audio/audio_test0.csv``, so a folder that already
holds those files (such as the project's ``../shared/datasets``) works as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "IMSA_DATA"


def default_cache_dir() -> Path:
    """The per-user cache: ``$XDG_CACHE_HOME/imsa`` or ``~/.cache/imsa``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imsa"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data root: the argument, else ``$IMSA_DATA``, else :func:`default_cache_dir`."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return default_cache_dir()
