"""What to extract: a media file, a folder of them, or a CSV manifest, turned into jobs of segments.

* A **media file**: its transcript (``--transcript``, else ``clip.srt``/``.vtt``/``.txt``
  beside it) gives the segments: one per SRT/WebVTT cue, or the whole file for plain text
  or no transcript.
* A **folder**: every media file in it, each with the transcript beside it.
* A **CSV manifest** with column ``media`` (paths relative to the CSV's folder) and optional
  ``start``, ``end`` (seconds), ``text``, ``label``, ``video_id``, ``utterance_id``,
  ``split`` and ``transcript`` (a subtitle file that cuts the row's media into segments).

Utterance ids are ``<video_id>_<n>`` (n counts a file's segments from 1, as SRT numbers
its cues) unless given; the video id is the media file's name without suffix. Labels come
from the manifest's ``label`` column or from ``--labels`` (a CSV of ``utterance_id,label``
and optionally ``split``).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

from .decode import MediaError
from .transcripts import read_transcript, transcript_beside

MEDIA_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus")
MANIFEST_COLUMNS = ("media", "start", "end", "text", "label", "video_id", "utterance_id", "split", "transcript")


@dataclass(frozen=True)
class Segment:
    """One utterance to extract: seconds (None: the whole file), its text (None: no transcript),
    label, split, and its words' ``(start, end, word)`` in seconds of the file where timed."""

    utterance_id: str
    video_id: str
    start: float | None
    end: float | None
    text: str | None = None
    label: str | None = None
    split: str | None = None
    words: tuple = ()


@dataclass(frozen=True)
class Job:
    """One media file and its segments (none: the whole file, or speech recognition's cues)."""

    media: Path
    video_id: str
    segments: tuple[Segment, ...]


def _segments_from_transcript(video_id: str, transcript: Path | None) -> tuple[Segment, ...]:
    if transcript is None:
        return (Segment(f"{video_id}_1", video_id, None, None),)
    cues = read_transcript(transcript)
    return tuple(Segment(f"{video_id}_{k}", video_id, c.start, c.end, c.text, words=c.words) for k, c in enumerate(cues, 1))


def file_job(media: str | os.PathLike, transcript: str | os.PathLike | None = None) -> Job:
    """The job of one media file, cut by its transcript."""
    media = Path(media)
    if not media.is_file():
        raise MediaError(f"{media}: media file not found.")
    video_id = media.stem
    transcript = Path(transcript) if transcript else transcript_beside(media)
    return Job(media, video_id, _segments_from_transcript(video_id, transcript))


def _seconds(value: str, where: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise MediaError(f"{where}: {value!r} is not a time in seconds.") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise MediaError(f"{where}: {value!r} is not a time in seconds (a number of at least 0).")
    return seconds


def manifest_jobs(path: str | os.PathLike) -> list[Job]:
    """The jobs of a CSV manifest (rows of one media file form one job, in row order)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
            columns = rows[0].keys() if rows else ()
    except UnicodeDecodeError:
        raise MediaError(f"{path}: the manifest is not UTF-8 text.") from None
    if not rows:
        raise MediaError(f"{path}: the manifest has no rows (a header with a 'media' column, then one row per utterance or file).")
    if "media" not in columns:
        raise MediaError(f"{path}: the manifest has no 'media' column; its columns are {', '.join(columns)}. Valid columns: {', '.join(MANIFEST_COLUMNS)}.")
    unknown = [c for c in columns if c not in MANIFEST_COLUMNS]
    if unknown:
        raise MediaError(f"{path}: unknown column(s) {', '.join(unknown)}. Valid columns: {', '.join(MANIFEST_COLUMNS)}.")
    jobs: dict[Path, list[Segment]] = {}
    ids: dict[Path, str] = {}
    for line, row in enumerate(rows, 2):
        where = f"{path}, line {line}"
        media = (path.parent / row["media"]).resolve() if row.get("media") else None
        if media is None:
            raise MediaError(f"{where}: empty 'media' cell.")
        video_id = (row.get("video_id") or "").strip() or ids.get(media) or media.stem
        ids[media] = video_id
        start, end = _seconds(row.get("start"), where), _seconds(row.get("end"), where)
        if (start is None) != (end is None) or (start is not None and end <= start):
            raise MediaError(f"{where}: give both 'start' and 'end' with end > start (or neither, for the whole file).")
        label = (row.get("label") or "").strip() or None
        split = (row.get("split") or "").strip() or None
        segments = jobs.setdefault(media, [])
        if (row.get("transcript") or "").strip():
            for cue in _segments_from_transcript(video_id, path.parent / row["transcript"].strip()):
                segments.append(replace(cue, utterance_id=f"{video_id}_{len(segments) + 1}", label=label, split=split))
            continue
        text = row.get("text")
        utterance = (row.get("utterance_id") or "").strip() or f"{video_id}_{len(segments) + 1}"
        segments.append(Segment(utterance, video_id, start, end, text if text is None or text.strip() else "", label, split))
    return [Job(media, ids[media], tuple(segments)) for media, segments in jobs.items()]


def source_jobs(source: str | os.PathLike, transcript: str | os.PathLike | None = None) -> tuple[list[Job], list[tuple[str, str]]]:
    """The jobs of SOURCE (a media file, a folder of media files, or a CSV manifest), and the
    files of a folder whose transcript cannot be used, with the reason (the others go on)."""
    source = Path(source)
    if not source.exists():
        raise MediaError(f"{source}: no such media file, folder or manifest.")
    if transcript and (source.is_dir() or source.suffix.lower() == ".csv"):
        raise MediaError(f"{source}: --transcript belongs to a single media file; a folder's transcripts lie beside its files, a manifest names them.")
    failures = []
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
        if not files:
            raise MediaError(f"{source}: no media files ({', '.join(MEDIA_SUFFIXES)}) in this folder.")
        jobs = []
        for path in files:
            try:
                jobs.append(file_job(path))
            except MediaError as e:
                failures.append((str(path), str(e)))
    elif source.suffix.lower() == ".csv":
        jobs = manifest_jobs(source)
    else:
        jobs = [file_job(source, transcript)]
    seen: dict[str, Path] = {}
    for job in jobs:
        for segment in job.segments:
            if segment.utterance_id in seen:
                raise MediaError(
                    f"utterance id {segment.utterance_id!r} occurs twice (in {seen[segment.utterance_id]} and {job.media}); give unique utterance_id values."
                )
            seen[segment.utterance_id] = job.media
    return jobs, failures


def apply_labels(jobs: list[Job], path: str | os.PathLike) -> list[Job]:
    """The jobs with labels (and splits) from a CSV of ``utterance_id,label[,split]``."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise MediaError(f"{path}: labels file not found.") from None
    if not rows or not {"utterance_id", "label"} <= set(rows[0]):
        raise MediaError(f"{path}: a labels file needs the columns utterance_id and label (and optionally split).")
    labels = {r["utterance_id"].strip(): (r["label"].strip(), (r.get("split") or "").strip() or None) for r in rows}
    known = {s.utterance_id for j in jobs for s in j.segments}
    unknown = sorted(set(labels) - known)
    if unknown:
        raise MediaError(
            f"{path}: {len(unknown)} utterance id(s) not among the extracted segments, e.g. {', '.join(unknown[:3])} (segments are named <video>_<cue number>)."
        )
    out = []
    for job in jobs:
        segments = tuple(
            replace(s, label=labels[s.utterance_id][0], split=labels[s.utterance_id][1] or s.split) if s.utterance_id in labels else s for s in job.segments
        )
        out.append(replace(job, segments=segments))
    return out
