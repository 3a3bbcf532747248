"""Extraction of one media file: decode once, then per segment decide what is present and extract it.

Per segment (utterance) and modality:

* **audio** is missing without an audio stream (``no_audio_stream``) or when the voice
  activity detector finds speech in less than ``min_speech`` of its audio (``no_speech``);
* **visual** is missing without a video stream (``no_video_stream``) or when the face
  detector finds a face in less than ``min_face`` of the frames sampled at ``rate`` per
  second (``no_face``);
* **text** is missing without a transcript and without a speech recogniser
  (``no_transcript``), or when the text is empty (``empty_text``).

Features: the audio extractor's utterance vector and its frames averaged into steps of
``1 / rate`` seconds; the visual features of each sampled frame (one per step) and their
mean over the frames with a face. Where the transcript times its words (WebVTT inline
timestamps, or the speech recogniser), also one step per word: the audio frames and face
features inside the word's span. A missing modality's features are zeros.

Results are cached per file, keyed by the file's content hash, the segments and the
configuration (extractor names, options and package versions), so a second run or a run
after a crash extracts only what is not done.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..files import atomic_write, sha256_file
from .decode import Media, MediaError, decode
from .registry import DEFAULTS, ROLES, extractor_entry
from .sources import Job, Segment

CACHE_VERSION = 2  # 2: word-aligned sequences
RESULT_ARRAYS = ("audio_vectors", "visual_vectors", "audio_steps", "visual_steps", "steps", "audio_words", "visual_words", "word_steps")
END_TOLERANCE = 0.5  # seconds a segment may end past the media's end (container rounding)
A_V_ROLES = ("vad", "audio", "face", "visual", "asr")


@dataclass(frozen=True)
class ExtractionConfig:
    """How media become features, recorded in the dataset and in every model trained on it.

    Parameters
    ----------
    extractors : dict
        Role -> extractor name (``None`` for no speech recogniser); defaults in
        :data:`imsa.media.registry.DEFAULTS`.
    options : dict
        Extractor name -> its options.
    rate : float
        Steps per second of the audio and visual sequences, and frames sampled per second.
    width : int
        Width in pixels the sampled frames are scaled to.
    min_speech : float
        Least fraction of a segment's audio the voice detector must call speech.
    min_face : float
        Least fraction of a segment's sampled frames that must show a face.
    """

    extractors: dict = field(default_factory=lambda: dict(DEFAULTS))
    options: dict = field(default_factory=dict)
    rate: float = 5.0
    width: int = 320
    min_speech: float = 0.1
    min_face: float = 0.5

    def __post_init__(self):
        extractors = {**DEFAULTS, **self.extractors}
        unknown = sorted(set(extractors) - set(ROLES))
        if unknown:
            raise ConfigError(f"Unknown extractor role(s) {', '.join(unknown)}. Roles: {', '.join(ROLES)}.")
        for role, name in extractors.items():
            if name is None and role != "asr":
                raise ConfigError(f"The {role} extractor cannot be none; only speech recognition (asr) is optional.")
            if name is not None:
                extractor_entry(role, name)
        object.__setattr__(self, "extractors", extractors)
        unused = sorted(set(self.options) - set(extractors.values()))
        if unused:
            chosen = ", ".join(n for n in extractors.values() if n)
            raise ConfigError(
                f"Options given for {', '.join(unused)}, which is not among the chosen extractors ({chosen}); choose it with --extractor ROLE=NAME."
            )
        for name, value in (("min_speech", self.min_speech), ("min_face", self.min_face)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be a fraction in [0, 1]; got {value!r}.")
        if not self.rate > 0 or self.width < 32:
            raise ConfigError(f"rate must be positive and width at least 32 pixels; got rate {self.rate!r}, width {self.width!r}.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ExtractionConfig":
        known = {k: data[k] for k in ("extractors", "options", "rate", "width", "min_speech", "min_face") if k in data}
        return cls(**known)

    def versions(self) -> dict[str, str | None]:
        """Installed versions of the packages of the chosen extractors."""
        found = {}
        for role, name in self.extractors.items():
            if name is not None:
                found.update(extractor_entry(role, name).versions())
        return dict(sorted(found.items()))

    def fingerprint(self, roles=A_V_ROLES) -> str:
        chosen = {r: self.extractors[r] for r in roles}
        data = {"config": {**self.to_dict(), "extractors": chosen}, "versions": self.versions(), "cache": CACHE_VERSION}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


_BUILT: dict[str, dict] = {}  # extractors per configuration, built once per process


def build_extractors(config: ExtractionConfig, roles=A_V_ROLES) -> dict:
    """The extractor objects of ``roles`` (None for an unused speech recogniser)."""
    key = json.dumps([config.to_dict(), list(roles)], sort_keys=True)
    if key not in _BUILT:
        built = {}
        for role in roles:
            name = config.extractors[role]
            built[role] = None if name is None else extractor_entry(role, name).build(**config.options.get(name, {}))
        _BUILT[key] = built
    return _BUILT[key]


@dataclass
class FileResult:
    """The extracted segments of one file, in order: vectors have one row per segment, the
    sequences at the fixed rate (``steps`` per segment) and per timed word (``word_steps``,
    0 for a segment without word timings) are concatenated over segments."""

    media: str
    segments: list[dict]
    audio_vectors: np.ndarray
    visual_vectors: np.ndarray
    audio_steps: np.ndarray
    visual_steps: np.ndarray
    steps: np.ndarray
    audio_words: np.ndarray
    visual_words: np.ndarray
    word_steps: np.ndarray

    def sequences(self, words: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per segment, its audio and visual steps (at the fixed rate, or per word)."""
        counts, audio, visual = (self.word_steps, self.audio_words, self.visual_words) if words else (self.steps, self.audio_steps, self.visual_steps)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        return [(audio[a:b], visual[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def _bin_means(values: np.ndarray, positions: np.ndarray, steps: int) -> np.ndarray:
    """Mean of the rows of ``values`` per step (``positions``: each row's step); zeros for an empty step."""
    out = np.zeros((steps, values.shape[1]), np.float32)
    if len(values):
        positions = np.clip(positions, 0, steps - 1)
        counts = np.bincount(positions, minlength=steps)
        np.add.at(out, positions, values)
        out[counts > 0] /= counts[counts > 0, None]
    return out


def _word_means(values: np.ndarray, times: np.ndarray, words: list) -> np.ndarray:
    """Mean of the rows of ``values`` (taken at ``times``) inside each word's span; a word
    between two rows (shorter than the sampling step) takes the nearest row."""
    out = np.zeros((len(words), values.shape[1]), np.float32)
    if not len(values):
        return out
    for k, (start, end, _) in enumerate(words):
        inside = (times >= start) & (times < end)
        out[k] = values[inside].mean(0) if inside.any() else values[np.abs(times - (start + end) / 2).argmin()]
    return out


def _segment_features(media: Media, segment: Segment, start: float, end: float, config: ExtractionConfig, extractors: dict):
    steps = max(1, math.ceil((end - start) * config.rate - 1e-6))
    reasons = []
    audio_extractor, visual_extractor = extractors["audio"], extractors["visual"]
    a_vec = np.zeros(audio_extractor.vector_dim, np.float32)
    v_vec = np.zeros(visual_extractor.dim, np.float32)
    a_frames, a_times = np.zeros((0, audio_extractor.frame_dim), np.float32), np.zeros(0)
    v_frames, v_times = np.zeros((0, visual_extractor.dim), np.float32), np.zeros(0)
    audio = media.audio_between(start, end)
    speech = 0.0
    if audio is None:
        reasons.append("no_audio_stream")
    else:
        speech = extractors["vad"].speech(audio)
        if speech < config.min_speech:
            reasons.append("no_speech")
        else:
            a_vec, a_frames = audio_extractor.extract(audio)
            a_times = start + np.arange(len(a_frames)) / audio_extractor.frame_rate
    text, words = segment.text, list(segment.words)
    if text is None and extractors.get("asr") is not None and audio is not None and "no_speech" not in reasons:
        cues = extractors["asr"].transcribe(audio)
        text = " ".join(c.text for c in cues).strip()
        words = [(start + a, start + b, w) for c in cues for a, b, w in c.words]  # the recogniser's times count from the segment's start
    if text is None:
        reasons.append("no_transcript")
    elif not text.strip():
        reasons.append("empty_text")
    face = 0.0
    if media.frames is None:
        reasons.append("no_video_stream")
    else:
        frames, times = media.frames_between(start, end)
        found, boxes = extractors["face"].detect(frames) if len(frames) else (np.zeros(0, bool), np.zeros((0, 4), np.int64))
        face = float(found.mean()) if len(found) else 0.0
        if face < config.min_face:
            reasons.append("no_face")
        else:
            v_frames, v_times = visual_extractor.extract(frames, boxes, found)[found], times[found]
            v_vec = v_frames.mean(0)
    a_seq = _bin_means(a_frames, ((a_times - start) * config.rate).astype(np.int64), steps)
    v_seq = _bin_means(v_frames, ((v_times - start) * config.rate).astype(np.int64), steps)
    info = {
        "utterance_id": segment.utterance_id,
        "video_id": segment.video_id,
        "start": round(start, 3),
        "end": round(end, 3),
        "text": text or "",
        "words": [list(w) for w in words] if text and text.strip() else [],
        "audio": int(not {"no_audio_stream", "no_speech"} & set(reasons)),
        "visual": int(not {"no_video_stream", "no_face"} & set(reasons)),
        "has_text": int(text is not None and bool(text.strip())),
        "reason": ";".join(reasons),
        "speech": round(speech, 4),
        "face": round(face, 4),
        "label": segment.label,
        "split": segment.split,
    }
    return info, (a_vec, v_vec), (a_seq, v_seq), (_word_means(a_frames, a_times, info["words"]), _word_means(v_frames, v_times, info["words"]))


def extract_file(job: Job, config: ExtractionConfig, extractors: dict | None = None) -> FileResult:
    """Decode ``job.media`` and extract each of its segments.

    Raises
    ------
    MediaError
        For a file that cannot be decoded, or a segment that lies past the file's end.
    """
    extractors = extractors or build_extractors(config)
    media = decode(job.media, frame_rate=config.rate, width=config.width)
    segments = list(job.segments)
    if len(segments) == 1 and segments[0].start is None and segments[0].text is None and extractors.get("asr") is not None and media.audio is not None:
        cues = extractors["asr"].transcribe(media.audio)  # no transcript: recognised speech cuts the file
        first = segments[0]
        segments = [
            Segment(f"{job.video_id}_{k}", job.video_id, c.start, c.end, c.text, first.label, first.split, c.words) for k, c in enumerate(cues, 1)
        ] or segments
    rows, vectors, sequences, aligned = [], [], [], []
    for segment in segments:
        start, end = (0.0, media.duration) if segment.start is None else (segment.start, min(segment.end, media.duration))
        if segment.start is not None and (segment.start >= media.duration or segment.end > media.duration + END_TOLERANCE):
            raise MediaError(
                f"{job.media}: segment {segment.utterance_id} ({segment.start:.2f}-{segment.end:.2f} s) lies past the end of the media ({media.duration:.2f} s); "
                "check the transcript's or manifest's times."
            )
        info, vector, sequence, words = _segment_features(media, segment, start, end, config, extractors)
        rows.append(info)
        vectors.append(vector)
        sequences.append(sequence)
        aligned.append(words)
    return FileResult(
        str(job.media),
        rows,
        np.stack([a for a, _ in vectors]).astype(np.float32),
        np.stack([v for _, v in vectors]).astype(np.float32),
        np.concatenate([a for a, _ in sequences]).astype(np.float32),
        np.concatenate([v for _, v in sequences]).astype(np.float32),
        np.asarray([len(a) for a, _ in sequences], np.int64),
        np.concatenate([a for a, _ in aligned]).astype(np.float32),
        np.concatenate([v for _, v in aligned]).astype(np.float32),
        np.asarray([len(a) for a, _ in aligned], np.int64),
    )


# The per-file cache ---------------------------------------------------------------------


def cache_key(job: Job, config: ExtractionConfig) -> str:
    """sha256 of the file's bytes, its segments and the configuration."""
    segments = [asdict(s) for s in job.segments]
    data = {"file": sha256_file(job.media), "segments": segments, "config": config.fingerprint()}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def save_result(path: Path, result: FileResult) -> None:
    segments = np.frombuffer(json.dumps(result.segments).encode(), np.uint8)
    atomic_write(path, lambda f: np.savez(f, segments=segments, **{k: getattr(result, k) for k in RESULT_ARRAYS}))


def load_result(path: Path, media: str) -> FileResult | None:
    """A cached result, or None when the file is absent or unreadable (it is then extracted again)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            segments = json.loads(bytes(data["segments"]).decode())
            return FileResult(media, segments, *(data[k] for k in RESULT_ARRAYS))
    except (OSError, ValueError, KeyError):
        return None


def cached_extract(job: Job, config_data: dict, cache_dir: str) -> tuple[str, FileResult | str]:
    """Extract ``job`` through the cache; ``("ok", result)`` or ``("failed", reason)``, never an exception
    (one bad file must not stop a corpus). Runs in worker processes, so it takes plain data."""
    config = ExtractionConfig.from_dict(config_data)
    try:
        key = cache_key(job, config)
        path = Path(cache_dir) / key[:2] / f"{key}.npz"
        result = load_result(path, str(job.media)) if path.exists() else None
        if result is None:
            result = extract_file(job, config)
            save_result(path, result)
        return "ok", result
    except MediaError as e:
        return "failed", str(e)
    except Exception as e:  # a decoder or extractor crash on one file is that file's failure
        return "failed", f"{job.media}: {type(e).__name__}: {e}"


def default_media_cache(cache_dir: str | os.PathLike | None = None) -> Path:
    """The per-file cache: the argument, else ``$IMSA_CACHE/media``, else ``<user cache>/imsa/media``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    from ..data.paths import default_cache_dir

    base = os.environ.get("IMSA_CACHE")
    return (Path(base).expanduser() if base else default_cache_dir()) / "media"
