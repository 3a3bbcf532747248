"""Fetching the public data files, pinned by commit and checked by sha256.

Every file the loaders read is published in a public GitHub repository. Each
:class:`RemoteFile` names its place under the data root (the layout of
:mod:`imsa.data.paths`), its raw address at a fixed commit, and its sha256.
:func:`download` fetches a file set, writing each file only once its checksum
matches; :func:`verify` re-hashes what is on disk; :func:`require_files` is the
cheap presence check that loaders call before reading.

A mirror (``mirror=`` or ``$IMSA_MIRROR``) is any base URL that serves a folder
laid out like the data root, e.g. an internal web server or ``file:///srv/imsa``.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataError, unknown_name
from ..files import atomic_write, atomic_write_text, sha256_file
from .paths import ENV_VAR, default_cache_dir, resolve_data_dir

MIRROR_ENV_VAR = "IMSA_MIRROR"
TIMEOUT_S = 60.0
_CHUNK = 1 << 20

# Upstream repositories, pinned to a commit; each dataset lists its files where it is registered.
GCNET_RAW = "https://raw.githubusercontent.com/zeroQiaoba/GCNet/8cce4a0c9a50172abfa79971e77c71c40c1d733d"
BCLSTM_RAW = "https://raw.githubusercontent.com/declare-lab/contextual-utterance-level-multimodal-sentiment-analysis/3874cf25a7fbda75df27ee65b297afa781d7f32c"


@dataclass(frozen=True)
class RemoteFile:
    """One published data file.

    Attributes
    ----------
    path : str
        Relative path under the data root, with ``/`` separators.
    url : str
        Upstream raw address, pinned to a full commit.
    sha256 : str
        Expected sha256 of the file, as lowercase hex.
    """

    path: str
    url: str
    sha256: str


ProgressCallback = Callable[[str, int, "int | None"], None]


def remote_files(name: str) -> tuple[RemoteFile, ...]:
    """Return the files a registered dataset declares.

    Raises
    ------
    ConfigError
        If no dataset of that name has remote files; the message lists those that do.
    """
    from .registry import DATASETS

    downloadable = [entry.name for entry in DATASETS.entries() if entry.files]
    if name not in downloadable:
        raise unknown_name("downloadable dataset", name, downloadable)
    return DATASETS[name].files


def _root(root: str | os.PathLike | None) -> Path:
    return resolve_data_dir(root).absolute()


def file_status(root: str | os.PathLike | None, remote: RemoteFile) -> str:
    """Check one file under the data root.

    Parameters
    ----------
    root : str, path-like or None
        The data root (None: :func:`imsa.data.paths.resolve_data_dir`).
    remote : RemoteFile
        The file to check.

    Returns
    -------
    str
        ``"ok"``, ``"missing"``, or ``"corrupted"`` (present, wrong sha256).
    """
    target = _root(root) / remote.path
    if not target.is_file():
        return "missing"
    return "ok" if sha256_file(target) == remote.sha256 else "corrupted"


def verify(name: str, root: str | os.PathLike | None = None) -> dict[str, str]:
    """Hash every file of a dataset or file set and report its status.

    Parameters
    ----------
    name : str
        Dataset or file-set name.
    root : str, path-like or None
        The data root (None: ``$IMSA_DATA`` or the user cache).

    Returns
    -------
    dict of str to str
        Relative path -> ``"ok"``, ``"missing"`` or ``"corrupted"``.
    """
    return {remote.path: file_status(root, remote) for remote in remote_files(name)}


def require_files(name: str, root: str | os.PathLike | None = None) -> dict[str, Path]:
    """Return the absolute paths of a dataset's files, which must be present and intact.

    Every file's sha256 is checked against its pinned value, so a file changed after
    its download is refused rather than read. A verified file is remembered by its
    path, size and modification time (:func:`verified_cache`), so a second load hashes
    nothing unless the file changed.

    Parameters
    ----------
    name : str
        Dataset or file-set name.
    root : str, path-like or None
        The data root (None: ``$IMSA_DATA`` or the user cache).

    Returns
    -------
    dict of str to Path
        Relative path -> absolute path.

    Raises
    ------
    DataError
        If a file is missing or modified; the message names it and how to fetch it.
    """
    base = _root(root)
    if base.exists() and not base.is_dir():
        raise DataError(f"{base}: not a folder; the data root (--data-dir, ${ENV_VAR}) must be the folder that holds the data.")
    remotes = remote_files(name)
    paths = {remote.path: base / remote.path for remote in remotes}
    missing = [rel for rel, path in paths.items() if not path.is_file()]
    if missing:
        raise DataError(
            f"Data file {missing[0]!r} of {name!r} is missing under the data root {base} "
            f"({len(missing)} of {len(paths)} files missing). "
            f"Fetch it with `imsa data download {name} --data-dir {base}`, "
            f"or set {ENV_VAR} to a folder that already holds the files."
        )
    cache = verified_cache()
    known = cache.read()
    for remote in remotes:
        path = paths[remote.path]
        stat = path.stat()
        key = str(path.resolve())
        if known.get(key) == [stat.st_size, stat.st_mtime_ns, remote.sha256]:
            continue
        if sha256_file(path) != remote.sha256:
            raise DataError(
                f"{path}: modified since it was downloaded (its sha256 is not the pinned {remote.sha256[:12]}...); "
                f"imsa will not read it. Fetch an intact copy with `imsa data download {name} --force --data-dir {base}`."
            )
        known[key] = [stat.st_size, stat.st_mtime_ns, remote.sha256]
    cache.write(known)
    return paths


def pinned_sha256(name: str) -> dict[str, str]:
    """``{relative path: sha256}`` of a dataset's files: their checksums once
    :func:`require_files` has verified them, so a loader need not hash them again."""
    return {remote.path: remote.sha256 for remote in remote_files(name)}


@dataclass(frozen=True)
class VerifiedCache:
    """Files whose sha256 matched, by absolute path: ``[size, mtime_ns, sha256]``.

    Kept in the user cache (never in the data folder, which may be shared or read-only);
    a cache that cannot be read or written only costs a re-hash.
    """

    path: Path

    def read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write(self, data: dict) -> None:
        try:
            atomic_write_text(self.path, json.dumps(data))
        except OSError:
            pass  # read-only cache: the next load hashes again


def verified_cache() -> VerifiedCache:
    return VerifiedCache(default_cache_dir() / "verified-files.json")


def _source_url(remote: RemoteFile, mirror: str | None) -> str:
    if not mirror:
        return remote.url
    return mirror.rstrip("/") + "/" + urllib.parse.quote(remote.path)


def _check_mirror(mirror: str) -> None:
    # Caught up front: urllib would otherwise fail on the first file with a bare ValueError.
    if urllib.parse.urlsplit(mirror).scheme not in ("http", "https", "file", "ftp"):
        raise ConfigError(f"Invalid mirror {mirror!r}: expected a base URL such as https://host/imsa-data or file:///srv/imsa-data.")


def _stream(remote: RemoteFile, url: str, out, progress: ProgressCallback | None) -> str:
    """Copy ``url`` into the open file ``out``; return the sha256 of what was received."""
    import http.client  # here: `imsa --help` and the listings should not load the HTTP stack
    import urllib.error
    import urllib.request

    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "imsa-downloader"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            if progress:
                progress(remote.path, done, total)
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(remote.path, done, total)
    except urllib.error.HTTPError as exc:
        raise DataError(f"Could not download {remote.path!r} from {url}: HTTP {exc.code} {exc.reason}.") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DataError(
            f"Could not download {remote.path!r} from {url}: {reason}. "
            f"Check the network connection, or point --mirror / {MIRROR_ENV_VAR} at a reachable mirror."
        ) from exc
    return digest.hexdigest()


def _fetch(remote: RemoteFile, target: Path, url: str, progress: ProgressCallback | None) -> None:
    """Download into a temp file beside ``target``; replace ``target`` only if the sha256 matches."""

    def write(out) -> None:
        received = _stream(remote, url, out, progress)
        if received != remote.sha256:  # raising here leaves target untouched
            raise DataError(
                f"Checksum mismatch for {remote.path!r} downloaded from {url}: "
                f"expected sha256 {remote.sha256}, received {received}. "
                "Nothing was written (any existing copy is untouched). Retry the download; if it "
                "fails again, the source serves a different file: use another mirror or the upstream address."
            )

    atomic_write(target, write)


def download(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    mirror: str | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, str]:
    """Fetch the files of a dataset or file set into the data root.

    A file already present with the right checksum is kept unless ``force``.
    Each file is streamed into a temporary file in its target directory and
    moved onto its final name only once its sha256 matches, so an interrupted
    or corrupted download never leaves a partial or wrong file behind.

    Parameters
    ----------
    name : str
        Dataset or file-set name.
    root : str, path-like or None
        The data root (None: ``$IMSA_DATA`` or the user cache).
    mirror : str or None
        Base URL serving a folder laid out like the data root; each file is
        fetched from ``mirror + '/' + path``. None: ``$IMSA_MIRROR`` if set,
        else the pinned upstream addresses.
    force : bool
        Download even files that are present and intact.
    progress : callable or None
        Called as ``progress(relative_path, bytes_done, bytes_total_or_None)``
        while a file streams.

    Returns
    -------
    dict of str to str
        Relative path -> ``"ok"`` (already there) or ``"downloaded"``.

    Raises
    ------
    DataError
        On a network error (naming the URL) or a checksum mismatch.
    ConfigError
        If the name is unknown or the mirror is not a URL.
    """
    files = remote_files(name)
    base = _root(root)
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV_VAR) or None
    if mirror:
        _check_mirror(mirror)
    status = {}
    for remote in files:
        if not force and file_status(base, remote) == "ok":
            status[remote.path] = "ok"
            continue
        _fetch(remote, base / remote.path, _source_url(remote, mirror), progress)
        status[remote.path] = "downloaded"
    return status


def list_status(root: str | os.PathLike | None = None) -> list[dict]:
    """Summarise, per dataset, how many of its files are present (no hashing).

    Parameters
    ----------
    root : str, path-like or None
        The data root (None: ``$IMSA_DATA`` or the user cache).

    Returns
    -------
    list of dict
        One row per registered dataset with remote files, with keys ``dataset``,
        ``files`` (count), ``present`` (count) and ``root`` (str).
    """
    from .registry import DATASETS

    base = _root(root)
    rows = []
    for dataset, files in ((e.name, e.files) for e in DATASETS.entries() if e.files):
        present = sum((base / remote.path).is_file() for remote in files)
        rows.append({"dataset": dataset, "files": len(files), "present": present, "root": str(base)})
    return rows
