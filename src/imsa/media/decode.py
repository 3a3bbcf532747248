"""Decoding a media file once: its audio as 16 kHz mono samples, its video as frames sampled at a fixed rate.

PyAV (which bundles FFmpeg) reads every container FFmpeg reads. Extraction needs far fewer
pictures than a video holds, so only the frames nearest to ``k / frame_rate`` seconds are
converted, and they are scaled down to ``width`` pixels on the way (face detection and
landmarks need no more); every frame is still decoded, as inter-coded video requires.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

SAMPLE_RATE = 16000  # what the voice-activity and speech models expect


class MediaError(DataError):
    """A media file or transcript that cannot be used; the message names the file and the reason."""


@dataclass
class Media:
    """One decoded file.

    Attributes
    ----------
    path : Path
    duration : float
        Seconds (the longest stream).
    audio : ndarray or None
        ``(samples,)`` float32 mono at :data:`SAMPLE_RATE`; None without an audio stream.
    frames : ndarray or None
        ``(K, H, W, 3)`` uint8 RGB frames; None without a video stream.
    frame_times : ndarray
        ``(K,)`` seconds of each kept frame.
    """

    path: Path
    duration: float
    audio: np.ndarray | None
    frames: np.ndarray | None
    frame_times: np.ndarray

    def audio_between(self, start: float, end: float) -> np.ndarray | None:
        if self.audio is None:
            return None
        return self.audio[int(round(start * SAMPLE_RATE)) : int(round(end * SAMPLE_RATE))]

    def frames_between(self, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
        """The kept frames in ``[start, end)`` and their times."""
        if self.frames is None:
            return np.zeros((0, 1, 1, 3), np.uint8), np.zeros(0)
        chosen = (self.frame_times >= start) & (self.frame_times < end)
        return self.frames[chosen], self.frame_times[chosen]


def decode(path: str | os.PathLike, *, frame_rate: float = 5.0, width: int = 320) -> Media:
    """Decode ``path``: all of its first audio stream and the video frames at ``frame_rate``.

    Raises
    ------
    MediaError
        For a missing, empty, corrupt or stream-less file.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: media file not found.")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: the file is empty (0 bytes).")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"{path}: not a media file FFmpeg can read ({e}).") from None
    with container:
        has_audio = bool(container.streams.audio)
        has_video = bool(container.streams.video)
        if not has_audio and not has_video:
            raise MediaError(f"{path}: the file has neither an audio nor a video stream.")
        try:
            audio = _decode_audio(container) if has_audio else None
            frames, times, video_end = _decode_video(container, path, frame_rate, width) if has_video else (None, np.zeros(0), 0.0)
        except av.error.FFmpegError as e:
            raise MediaError(f"{path}: decoding failed ({e}); the file is corrupt or truncated.") from None
    audio_end = 0.0 if audio is None else len(audio) / SAMPLE_RATE
    duration = max(audio_end, video_end)
    if duration <= 0:
        raise MediaError(f"{path}: the streams hold no samples (zero length).")
    return Media(path, duration, audio, frames, times)


def _decode_audio(container) -> np.ndarray:
    import av

    container.seek(0)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks = []
    for frame in container.decode(audio=0):
        for out in resampler.resample(frame):
            chunks.append(out.to_ndarray().reshape(-1))
    for out in resampler.resample(None):  # what the resampler still holds
        chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def _decode_video(container, path: Path, frame_rate: float, width: int) -> tuple[np.ndarray | None, np.ndarray, float]:
    container.seek(0)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    kept, times = [], []
    next_time, last_time = 0.0, 0.0
    step = 1.0 / frame_rate
    for frame in container.decode(video=0):
        if frame.time is None:
            continue
        last_time = max(last_time, frame.time + (float(stream.average_rate and 1 / stream.average_rate) or 0.0))
        if frame.time + 1e-6 < next_time:
            continue
        height = max(2, int(round(frame.height * width / frame.width / 2)) * 2)
        kept.append(frame.reformat(width=width, height=height, format="rgb24").to_ndarray())
        times.append(frame.time)
        next_time = (np.floor(frame.time / step + 1e-6) + 1) * step
    if not kept:
        return None, np.zeros(0), 0.0
    return np.stack(kept), np.asarray(times), last_time
