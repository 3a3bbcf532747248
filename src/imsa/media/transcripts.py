"""Transcripts: SRT and WebVTT cues (which become utterance segments), or plain text.

A cue is ``start --> end`` followed by its text lines. SRT writes ``00:00:01,500``, WebVTT
``00:00:01.500`` (hours optional) after a ``WEBVTT`` header; cue settings after the end
time and markup tags (``<i>``, ``<v Speaker>``) are dropped. A plain-text file is one
segment spanning the whole media file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .decode import MediaError

TRANSCRIPT_SUFFIXES = (".srt", ".vtt", ".txt")
_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{2})[,.](\d{1,3})"
_CUE = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")
_TAG = re.compile(r"<[^>]*>")


@dataclass(frozen=True)
class Cue:
    """One transcript segment: seconds (None: the whole file) and its text."""

    start: float | None
    end: float | None
    text: str


def _seconds(hours, minutes, seconds, millis) -> float:
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(millis.ljust(3, "0")) / 1000


def read_transcript(path: str | os.PathLike) -> list[Cue]:
    """The cues of an SRT or WebVTT file, or one cue of a plain-text file.

    Raises
    ------
    MediaError
        For a file that is missing, not UTF-8 text, or a subtitle file without cues or
        with a cue that ends before it starts.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MediaError(f"{path}: transcript not found.") from None
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise MediaError(f"{path}: the transcript is not UTF-8 text (byte {e.start}); save it as UTF-8.") from None
    if "\x00" in content:
        raise MediaError(f"{path}: the transcript holds NUL bytes; it is not a text file.")
    if path.suffix.lower() not in (".srt", ".vtt"):
        return [Cue(None, None, " ".join(content.split()))]
    cues = []
    lines = content.splitlines()
    i = 0
    while i < len(lines):
        match = _CUE.match(lines[i])
        i += 1
        if not match:
            continue
        start, end = _seconds(*match.groups()[:4]), _seconds(*match.groups()[4:])
        if end <= start:
            raise MediaError(f"{path}: the cue at line {i} ends ({end:.3f} s) before it starts ({start:.3f} s).")
        text = []
        while i < len(lines) and lines[i].strip():
            text.append(_TAG.sub("", lines[i]).strip())
            i += 1
        cues.append(Cue(start, end, " ".join(t for t in text if t)))
    if not cues:
        raise MediaError(f"{path}: no cues (lines like '00:00:01,000 --> 00:00:03,500') in this {path.suffix[1:].upper()} file.")
    return cues


def transcript_beside(media: Path) -> Path | None:
    """The transcript with the media file's name (``clip.srt``, ``clip.vtt``, ``clip.txt``), if one exists."""
    for suffix in TRANSCRIPT_SUFFIXES:
        candidate = media.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None
