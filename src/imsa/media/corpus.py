"""A corpus of media files to a dataset folder: ``imsa extract`` and :func:`imsa.media.extract`.

Files are extracted in worker processes (``workers`` of them) or on a Ray cluster (``backend="ray"``),
each through the per-file cache of :mod:`imsa.media.pipeline`; a file that fails is
reported with its reason and the rest go on. Text is encoded last, in one batch pass. The
folder's files are each written atomically, ``extraction.json`` last: a write that is
interrupted leaves a folder without it, which is not read as a dataset until the command
runs again, and that run takes every file already extracted from the cache.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..data.extracted import EXTRACTION_FILE, FEATURES_FILE, MISSINGNESS_COLUMNS, MISSINGNESS_FILE, UTTERANCE_COLUMNS, UTTERANCES_FILE
from ..errors import ConfigError, DataError
from ..files import LOCK_FILE, atomic_write, atomic_write_text, locked
from .pipeline import ExtractionConfig, FileResult, build_extractors, cached_extract, default_media_cache
from .sources import Job, apply_labels, source_jobs

BACKENDS = ("process", "ray")
FORMAT_VERSION = 1


@dataclass
class Extraction:
    """What :func:`extract` did.

    Attributes
    ----------
    out : Path
        The dataset folder (None when nothing could be written).
    rows : list of dict
        One per segment: ids, times, text, flags, reasons.
    failures : list of (str, str)
        Media files that failed, with the reason.
    """

    out: Path | None
    rows: list[dict] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def reasons(self) -> Counter:
        """Segments per reason a modality is missing (``present`` for segments with all three)."""
        counts: Counter = Counter()
        for row in self.rows:
            counts.update(row["reason"].split(";") if row["reason"] else ["present"])
        return counts


def run_jobs(
    jobs: list[Job], config: ExtractionConfig, *, workers: int = 1, backend: str = "process", cache_dir=None, progress: Callable[[int, int], None] | None = None
) -> tuple[list[FileResult | None], list[tuple[str, str]]]:
    """Extract every job; results in job order (None for a failed file) and the failures."""
    if backend not in BACKENDS:
        raise ConfigError(f"Unknown backend {backend!r}. Valid backends: {', '.join(BACKENDS)}.")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer of at least 1; got {workers!r}.")
    if not jobs:
        return [], []
    cache = str(default_media_cache(cache_dir))
    data = config.to_dict()
    results: list[FileResult | None] = [None] * len(jobs)
    failures: list[tuple[str, str]] = []

    def record(index: int, outcome: tuple[str, object]) -> None:
        status, value = outcome
        if status == "ok":
            results[index] = value
        else:
            failures.append((str(jobs[index].media), str(value)))
        if progress:
            progress(sum(r is not None for r in results) + len(failures), len(jobs))

    if backend == "ray":
        import ray

        if not ray.is_initialized():
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        remote = ray.remote(cached_extract)
        pending = {remote.remote(job, data, cache): k for k, job in enumerate(jobs)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except ray.exceptions.RayError as e:  # the task's worker died: that file failed
                outcome = ("failed", f"{jobs[index].media}: the extractor process crashed ({type(e).__name__})")
            record(index, outcome)
    else:
        pool = _pool(workers)
        futures = {pool.submit(cached_extract, job, data, cache): k for k, job in enumerate(jobs)}
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except BrokenProcessPool:
                _POOLS.pop(workers, None)
                outcome = ("failed", f"{jobs[futures[future]].media}: the extractor process crashed (a corrupt file, or out of memory)")
            record(futures[future], outcome)
    failures.sort()
    return results, failures


_POOLS: dict[int, ProcessPoolExecutor] = {}


def _pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes, kept for the next extraction in this process (their extractors stay loaded).

    Worker processes even for one worker: the native libraries' log lines stay out of the
    terminal, and a decoder that crashes takes down a worker, not the extraction. spawn:
    the decoders and detectors keep threads that a forked child must not inherit.
    """
    if workers not in _POOLS:
        _POOLS[workers] = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_quiet_native_logs)
    return _POOLS[workers]


def _quiet_native_logs() -> None:
    """In a worker: native stderr (MediaPipe's and TensorFlow Lite's C++ logs) to /dev/null; a
    worker reports everything else through its return value."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def _csv(columns, rows) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _pad(rows: list[np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.asarray([max(1, len(r)) for r in rows], np.int64)
    out = np.zeros((len(rows), int(lengths.max(initial=1)), dim), np.float32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out, lengths


def assemble(jobs: list[Job], results: list[FileResult | None], config: ExtractionConfig, text_extractor=None) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Every segment's row and the arrays of the segments with something present (text encoded here).

    The sequences are word-aligned (one step per word, in all three modalities) when every
    such segment has timed words; otherwise audio and visual have one step per ``1 / rate``
    seconds and text one per token.
    """
    rows, a_vec, v_vec, by_rate, by_word = [], [], [], [], []
    for job, result in zip(jobs, results):
        if result is None:
            continue
        for info, rated, worded, av, vv in zip(result.segments, result.sequences(), result.sequences(words=True), result.audio_vectors, result.visual_vectors):
            rows.append({**info, "media": str(job.media)})
            a_vec.append(av)
            v_vec.append(vv)
            by_rate.append(rated)
            by_word.append(worded)
    present = np.asarray([[r["has_text"], r["audio"], r["visual"]] for r in rows], bool).reshape(-1, 3)
    keep = present.any(axis=1)
    text_extractor = text_extractor or build_extractors(config, roles=("text",))["text"]
    chosen = [i for i in range(len(rows)) if keep[i]]
    aligned = bool(chosen) and all(rows[i]["words"] for i in chosen)
    with_text = [i for i in chosen if present[i, 0]]
    encoded = text_extractor.encode([rows[i]["text"] for i in with_text]) if with_text else None
    dim = encoded["vectors"].shape[1] if encoded else int(text_extractor.encode(["x"])["vectors"].shape[1])
    l_vec = np.zeros((len(chosen), dim), np.float32)
    l_rows = [np.zeros((len(rows[i]["words"]) if aligned else 1, dim), np.float32) for i in chosen]
    position = {i: k for k, i in enumerate(chosen)}
    per_word = text_extractor.encode_words([[w for _, _, w in rows[i]["words"]] for i in with_text]) if aligned and with_text else None
    for j, i in enumerate(with_text):
        l_vec[position[i]] = encoded["vectors"][j]
        l_rows[position[i]] = per_word[j] if aligned else encoded["tokens"][j, : encoded["lengths"][j]]
    steps = [(by_word if aligned else by_rate)[i] for i in chosen]
    l_seq, l_len = _pad(l_rows, dim)
    a_pad, av_len = _pad([a for a, _ in steps], by_rate[0][0].shape[1] if rows else 1)
    v_pad, _ = _pad([v for _, v in steps], by_rate[0][1].shape[1] if rows else 1)
    arrays = {
        "utterance_ids": np.asarray([rows[i]["utterance_id"] for i in chosen], dtype=str),
        "video_ids": np.asarray([rows[i]["video_id"] for i in chosen], dtype=str),
        "present": present[keep],
        "vectors_l": l_vec,
        "vectors_a": np.asarray([a_vec[i] for i in chosen], np.float32).reshape(len(chosen), -1),
        "vectors_v": np.asarray([v_vec[i] for i in chosen], np.float32).reshape(len(chosen), -1),
        "sequence_l": l_seq,
        "lengths_l": l_len,
        "sequence_a": a_pad,
        "sequence_v": v_pad,
        "lengths_av": av_len,
        "aligned": np.asarray(aligned),
    }
    return rows, arrays


def _claim(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is a file; --out names the dataset folder to write.")
    others = out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir())
    if others and not (out / EXTRACTION_FILE).exists() and not (out / FEATURES_FILE).exists():
        raise DataError(f"{out}: the folder holds other files and no earlier extraction; choose an empty or new folder for --out.")


def write_dataset(out: Path, rows: list[dict], arrays: dict[str, np.ndarray], config: ExtractionConfig, failures: list) -> None:
    """Write the dataset folder (``extraction.json`` last: its presence marks a complete folder)."""
    from .. import __version__

    out.mkdir(parents=True, exist_ok=True)
    (out / EXTRACTION_FILE).unlink(missing_ok=True)  # the folder is incomplete until it is written again
    kept = set(arrays["utterance_ids"].tolist())
    utterances = [{**r, "label": r.get("label") or "", "split": r.get("split") or ""} for r in rows if r["utterance_id"] in kept]
    atomic_write(out / FEATURES_FILE, lambda f: np.savez(f, **arrays))
    atomic_write_text(out / UTTERANCES_FILE, _csv(UTTERANCE_COLUMNS, utterances))
    flags = [{**r, "text": r["has_text"]} for r in rows]
    atomic_write_text(out / MISSINGNESS_FILE, _csv(MISSINGNESS_COLUMNS, flags))
    info = {
        "format": "imsa-extraction",
        "format_version": FORMAT_VERSION,
        "written_by": __version__,
        "config": config.to_dict(),
        "versions": config.versions(),
        "dims": {m: int(arrays[f"vectors_{m}"].shape[1]) for m in ("l", "a", "v")},
        "frame_dims": {m: int(arrays[f"sequence_{m}"].shape[2]) for m in ("l", "a", "v")},
        "alignment": "words" if arrays["aligned"] else f"{config.rate:g} steps per second (text: tokens)",
        "segments": len(rows),
        "utterances": len(utterances),
        "failures": [{"media": m, "reason": r} for m, r in failures],
    }
    atomic_write_text(out / EXTRACTION_FILE, json.dumps(info, indent=2) + "\n")


def extract(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    transcript: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
    config: ExtractionConfig | None = None,
    workers: int = 1,
    backend: str = "process",
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Extraction:
    """Extract features from media into a dataset folder that ``imsa run --dataset OUT`` reads.

    Parameters
    ----------
    source : path
        A media file (video or audio), a folder of media files, or a CSV manifest (see
        :mod:`imsa.media.sources`).
    out : path
        The dataset folder to write (created; an earlier extraction there is replaced).
    transcript : path, optional
        SRT, WebVTT or plain text of a single media file (default: the file beside it).
    labels : path, optional
        CSV of ``utterance_id,label[,split]``.
    config : ExtractionConfig, optional
        Extractors, options, rate and thresholds (default: the default set).
    workers : int
        Processes (or Ray CPUs) extracting files in parallel.
    backend : {"process", "ray"}
    cache_dir : path, optional
        The per-file cache (default ``$IMSA_CACHE/media`` or the user cache).
    progress : callable, optional
        ``progress(files_done, files_total)`` after each file.

    Returns
    -------
    Extraction
        Rows per segment and the files that failed (their segments are not in the folder).

    Raises
    ------
    MediaError
        For a source, transcript or labels file that cannot be used at all.
    DataError
        When no file could be extracted, or ``out`` is an unrelated folder.
    """
    config = config or ExtractionConfig()
    out = Path(out)
    _claim(out)
    jobs, unreadable = source_jobs(source, transcript)
    if labels:
        jobs = apply_labels(jobs, labels)
    with locked(out):  # a second imsa extract into the same folder is refused, not interleaved
        results, failures = run_jobs(jobs, config, workers=workers, backend=backend, cache_dir=cache_dir, progress=progress)
        failures = sorted(unreadable + failures)
        if all(r is None for r in results):
            return Extraction(None, [], failures)
        rows, arrays = assemble(jobs, results, config)
        if len(arrays["utterance_ids"]) == 0:
            raise DataError(f"{source}: no segment has any modality present (see the reasons); nothing to write.")
        write_dataset(out, rows, arrays, config, failures)
    return Extraction(out, rows, failures)
