"""Transcripts: SRT and WebVTT cues (which become utterance segments), or plain text.

A cue is ``start --> end`` followed by its text lines. SRT writes ``00:00:01,500``, WebVTT
``00:00:01.500`` (hours optional) after a ``WEBVTT`` header; cue settings after the end
time and markup tags (``<i>``, ``<v Speaker>``) are dropped. A plain-text file is one
segment spanning the whole media file.

Word timings: WebVTT's inline timestamps (``Hello <00:00:01.200>world``, as karaoke-style
captions and speech recognisers write them) mark when the words after them start; the
words between two timestamps share that span equally. A cue with such timestamps gets
``words``, and extraction then aligns the sequences to them.
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
_INLINE = re.compile(r"<((?:\d+:)?\d{1,2}:\d{2}\.\d{3})>")


@dataclass(frozen=True)
class Cue:
    """One transcript segment: seconds (None: the whole file), its text, and its words'
    ``(start, end, word)`` where the transcript times them (else empty)."""

    start: float | None
    end: float | None
    text: str
    words: tuple = ()


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
        raw = []
        while i < len(lines) and lines[i].strip():
            raw.append(lines[i].strip())
            i += 1
        text = " ".join(t for t in (_TAG.sub("", line).strip() for line in raw) if t)
        cues.append(Cue(start, end, text, timed_words(" ".join(raw), start, end)))
    if not cues:
        raise MediaError(f"{path}: no cues (lines like '00:00:01,000 --> 00:00:03,500') in this {path.suffix[1:].upper()} file.")
    return cues


def _clock(stamp: str) -> float:
    parts = stamp.replace(",", ".").split(":")
    return sum(float(p) * 60**k for k, p in enumerate(reversed(parts)))


def timed_words(raw: str, start: float, end: float) -> tuple:
    """``(start, end, word)`` of a cue's words from its inline timestamps; empty without any."""
    pieces = _INLINE.split(raw)
    if len(pieces) == 1:
        return ()
    words = []
    times = [start] + [min(max(_clock(t), start), end) for t in pieces[1::2]] + [end]
    for k, chunk in enumerate(pieces[0::2]):
        tokens = _TAG.sub("", chunk).split()
        span = (times[k + 1] - times[k]) / max(len(tokens), 1)
        words += [(round(times[k] + j * span, 3), round(times[k] + (j + 1) * span, 3), w) for j, w in enumerate(tokens)]
    return tuple(words)


def transcript_beside(media: Path) -> Path | None:
    """The transcript with the media file's name (``clip.srt``, ``clip.vtt``, ``clip.txt``), if one exists."""
    for suffix in TRANSCRIPT_SUFFIXES:
        candidate = media.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None
