"""Writing files so that nothing a user produced is ever half-written or lost.

Every file imsa writes (run records, models, checkpoints, summaries, reports, caches,
downloads, exports) goes through :func:`atomic_write`: the content goes to a temporary
file with a unique name beside the target, which then replaces the target in one
rename. A crash leaves either the old file or the new one, never a torn one, and two
processes writing the same file never share a temporary file.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import ConfigError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_CHUNK = 1 << 20  # bytes read at a time when hashing a file

# mkstemp creates 0600 files; written files get the permissions a plain open() would give them.
_FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Create or replace ``path`` with what ``write(file)`` writes, atomically.

    If ``write`` raises (a failed checksum, Ctrl-C), the temporary file is removed and
    ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target, so os.replace is a rename, never a cross-device copy.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Create or replace a UTF-8 text file atomically."""
    return atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically."""
    import torch  # here, not at the top: the CLI's help and listings must not wait for torch

    return atomic_write(path, lambda file: torch.save(obj, file))


def load_tensors_only(path: str | os.PathLike):
    """``torch.load`` that accepts tensors and plain containers only (``weights_only``), never runs code.

    Raises ``pickle.UnpicklingError`` for anything more; torch's warnings about the pickle
    protocol of such a file are silenced (the caller reports the refusal in one line).
    """
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def sha256_file(path: str | os.PathLike) -> str:
    """Return the sha256 of a file as lowercase hex, reading it in chunks.

    Parameters
    ----------
    path : str or path-like
        The file to hash.

    Returns
    -------
    str
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


LOCK_FILE = ".lock"


@contextmanager
def locked(directory: str | os.PathLike):
    """Hold ``directory`` for this process: a second imsa process on it is refused at once.

    An advisory lock (``flock``) on ``directory/.lock``, released when the process ends
    however it ends, so a killed run never leaves a stale lock behind.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} is a file; --out needs a directory. Choose another --out.")
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(f"{directory} is in use by another imsa process; wait for it to finish (its results are kept), or choose another --out.") from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
