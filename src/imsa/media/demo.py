"""Small, real media clips made offline: for tests, the tutorial and the extraction benchmark.

An extraction pipeline decides, per segment of a clip, whether the face, the voice and the
transcript are present. Checking it needs clips whose answer is known, and recorded ones
cannot be shipped. This module makes them from material that is always at hand:

* the voice is synthesised by ``espeak-ng`` (:func:`speak`);
* the face is scikit-image's ``astronaut`` photograph, a real frontal face that OpenCV's Haar
  cascade finds; the no-face picture is its ``coffee`` photograph, where the cascade finds none;
* the transcript is written beside the clip as SRT, WebVTT or plain text, one cue per segment.

:func:`make_clip` writes one clip from a list of :class:`Segment`, each of which may drop its
face (coffee instead of the astronaut) or its speech (low noise instead of the sentence);
:func:`make_corpus` writes a small labelled corpus of positive and negative sentences with
missing modalities, :func:`make_checks` the clips that test each flag. Both write an
``expected.csv`` that says, per cue, which modalities are present. From the shell::

    python -m imsa.media.demo corpus OUT [--videos N] [--seed S]
    python -m imsa.media.demo checks OUT

Needs PyAV (``pip install av``), scikit-image and the ``espeak-ng`` program; they are imported
or called only when a clip is made, so importing this module costs nothing.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import math
import shutil
import subprocess
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import numpy as np

POSITIVE: tuple[str, ...] = (
    "I really loved this movie, it was wonderful.",
    "The acting was brilliant from start to finish.",
    "What a beautiful and moving story.",
    "I enjoyed every single minute of it.",
    "The music was lovely and the pictures were stunning.",
    "This is one of the best films I have ever seen.",
    "The cast did a fantastic job.",
    "It made me laugh and it made me happy.",
    "A delightful film that I would watch again.",
    "The ending was perfect and very satisfying.",
    "I was impressed by how clever the story was.",
    "Great characters and a truly charming plot.",
    "I would happily recommend it to all my friends.",
    "The director did an excellent job here.",
    "It was a warm, funny and uplifting film.",
    "Honestly, I had a great time watching it.",
    "The performances were superb and very touching.",
    "Everything about this film felt just right.",
    "It is a real gem, full of joy.",
    "I loved the characters and their friendship.",
    "The dialogue was smart and the jokes were great.",
    "A wonderful surprise, much better than I expected.",
    "This film is a pleasure from beginning to end.",
    "I think it is an amazing piece of work.",
)
NEGATIVE: tuple[str, ...] = (
    "I really hated this movie, it was terrible.",
    "The acting was awful from start to finish.",
    "What a boring and pointless story.",
    "I regretted every single minute of it.",
    "The music was annoying and the pictures were ugly.",
    "This is one of the worst films I have ever seen.",
    "The cast did a horrible job.",
    "It made me angry and it made me sad.",
    "A dreadful film that I would never watch again.",
    "The ending was stupid and very disappointing.",
    "I was bored by how dull the story was.",
    "Weak characters and a truly silly plot.",
    "I would warn all my friends to stay away.",
    "The director did a poor job here.",
    "It was a cold, dull and depressing film.",
    "Honestly, I had a miserable time watching it.",
    "The performances were weak and very flat.",
    "Everything about this film felt wrong.",
    "It is a total waste of time and money.",
    "I disliked the characters and their quarrels.",
    "The dialogue was clumsy and the jokes were lame.",
    "A sad disappointment, much worse than I expected.",
    "This film is a chore from beginning to end.",
    "I think it is a terrible piece of work.",
)

TRANSCRIPTS = ("srt", "vtt", "txt")
SILENCE_SECONDS = 2.0  # the length of a segment with nothing to say and no ``seconds``
SPEECH_MARGIN = 0.3  # seconds of noise a spoken segment adds to its sentence; the sentence starts half of it in (less when short)
NOISE = 1e-4  # the noise floor's standard deviation: digital silence makes log-energy features -inf
ASTRONAUT_FACE = (113, 224)  # (row, column) of the face's centre in skimage.data.astronaut(), as the Haar cascade finds it


@dataclass(frozen=True)
class Segment:
    """One stretch of a clip: a sentence, and whether its voice and its face are present.

    Parameters
    ----------
    text : str
        The sentence, spoken when ``speech`` and written to the transcript either way.
        ``""`` is allowed: the segment has no cue and nothing is spoken.
    speech : bool
        False: the segment's audio is low noise only (the transcript still holds ``text``).
    face : bool
        False: the frames show the coffee picture, where no face is found.
    seconds : float or None
        The segment's length. None: the spoken sentence's length plus 0.3 s, or 2.0 s when
        nothing is spoken. :func:`make_clip` rounds it up to whole video frames (milliseconds without video).
    """

    text: str
    speech: bool = True
    face: bool = True
    seconds: float | None = None

    def __post_init__(self) -> None:
        # A line break would split an SRT or VTT cue, or end it when the line is blank.
        if "\n" in self.text or "\r" in self.text:
            raise ValueError(f"a segment's text must be one line, got {self.text!r}")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"a segment's seconds must be positive, got {self.seconds}")


def _require(module: str, package: str) -> ModuleType:
    """Import ``module``, saying which package to install when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"imsa.media.demo needs {package}: pip install {package}") from error


def speak(text: str, *, voice: str = "en-us", rate: int = 160, sample_rate: int = 16000) -> np.ndarray:
    """Synthesise ``text`` with espeak-ng.

    Parameters
    ----------
    text : str
        What to say.
    voice : str
        The espeak-ng voice (``espeak-ng --voices`` lists them).
    rate : int
        The speaking rate, words per minute.
    sample_rate : int
        The sample rate of the result, Hz (espeak-ng speaks at 22050 Hz; the result is
        resampled by linear interpolation).

    Returns
    -------
    numpy.ndarray
        The waveform: float32, mono, in [-1, 1].

    Raises
    ------
    RuntimeError
        When espeak-ng is not installed, or fails (e.g. an unknown voice).
    """
    program = shutil.which("espeak-ng")
    if program is None:
        raise RuntimeError(
            "espeak-ng is not installed: apt-get install espeak-ng (Debian/Ubuntu), brew install espeak-ng (macOS), "
            "or see https://github.com/espeak-ng/espeak-ng"
        )
    # The text goes through stdin, so a sentence that starts with "-" is not read as an option.
    result = subprocess.run([program, "-v", voice, "-s", str(rate), "--stdout", "--stdin"], input=text.encode(), capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"espeak-ng failed: {result.stderr.decode(errors='replace').strip()}")
    with wave.open(io.BytesIO(result.stdout)) as reader:
        source_rate = reader.getframerate()
        # espeak-ng writes to a pipe, so the header's length is a placeholder: read until the data ends.
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    if source_rate == sample_rate:
        return samples
    count = round(len(samples) * sample_rate / source_rate)
    return np.interp(np.arange(count) * (source_rate / sample_rate), np.arange(len(samples)), samples).astype(np.float32)


def _picture(face: bool, size: tuple[int, int]) -> np.ndarray:
    """The astronaut (``face``) or the coffee picture, cropped to the canvas's shape and resized to fill it."""
    data = _require("skimage.data", "scikit-image")
    transform = _require("skimage.transform", "scikit-image")
    image = data.astronaut() if face else data.coffee()
    rows, columns = image.shape[:2]
    centre = ASTRONAUT_FACE if face else (rows / 2, columns / 2)
    width, height = size
    # The largest crop of the canvas's shape around the centre, rather than a letterbox: letterboxed
    # into 320x180, the astronaut's face would be 33 pixels wide, under the cascade's 40-pixel minimum.
    scale = min(rows / height, columns / width)
    crop_rows, crop_columns = min(rows, round(height * scale)), min(columns, round(width * scale))
    top = int(np.clip(round(centre[0] - crop_rows / 2), 0, rows - crop_rows))
    left = int(np.clip(round(centre[1] - crop_columns / 2), 0, columns - crop_columns))
    crop = image[top : top + crop_rows, left : left + crop_columns]
    return transform.resize(crop, (height, width), anti_aliasing=True, preserve_range=True).round().astype(np.uint8)


def _video_codec() -> str:
    """H.264 where this PyAV build has libx264, else MPEG-4 part 2 (every FFmpeg build has it)."""
    av = _require("av", "av")
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _timestamp(seconds: float, separator: str) -> str:
    """``HH:MM:SS<separator>mmm``: SRT separates milliseconds with a comma, WebVTT with a point."""
    milliseconds = round(seconds * 1000)
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    return f"{hours:02d}:{minutes:02d}:{milliseconds // 1000:02d}{separator}{milliseconds % 1000:03d}"


def _write_transcript(path: Path, kind: str, segments: list[dict]) -> None:
    """Write the cues of ``segments`` (those with text) as SRT, WebVTT or plain text."""
    cues = [segment for segment in segments if segment["text"]]
    if kind == "txt":
        path.write_text(" ".join(cue["text"] for cue in cues) + "\n", encoding="utf-8")
        return
    separator = "," if kind == "srt" else "."
    blocks = [f"{number}\n{_timestamp(cue['start'], separator)} --> {_timestamp(cue['end'], separator)}\n{cue['text']}\n" for number, cue in enumerate(cues, 1)]
    # WebVTT cues keep their numbers as identifiers, so an utterance is named alike in either format.
    path.write_text("\n".join((["WEBVTT\n"] if kind == "vtt" else []) + blocks), encoding="utf-8")


def _write_mp4(path: Path, pictures: list[np.ndarray], fps: int, waveform: np.ndarray | None, sample_rate: int) -> None:
    """Encode one picture per frame (each shifted a little) and, unless None, the waveform as AAC."""
    av = _require("av", "av")
    height, width = pictures[0].shape[:2]
    with av.open(str(path), "w") as container:
        codec = _video_codec()
        video = container.add_stream(codec, rate=fps, options={"preset": "veryfast", "crf": "23"} if codec == "libx264" else None)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if codec == "mpeg4":
            video.bit_rate = width * height * fps // 4  # about 0.25 bit a pixel: enough to keep the face detectable
        events: list[tuple[Fraction, int, int]] = [(Fraction(i, fps), 0, i) for i in range(len(pictures))]
        if waveform is not None:
            audio = container.add_stream("aac", rate=sample_rate, layout="mono", bit_rate=48_000)
            chunk = audio.codec_context.frame_size or 1024
            events += [(Fraction(start, sample_rate), 1, start) for start in range(0, len(waveform), chunk)]
        # Frames and audio chunks in time order, so the muxer interleaves them without buffering the clip.
        for _, kind, index in sorted(events):
            if kind == 0:
                # A one-pixel wobble in a nine-frame cycle, so the encoder sees motion and not one still frame.
                shifted = np.roll(pictures[index], (index // 3 % 3 - 1, index % 3 - 1), axis=(0, 1))
                frame = av.VideoFrame.from_ndarray(shifted, format="rgb24")
                frame.pts = index
                container.mux(video.encode(frame))
            else:
                frame = av.AudioFrame.from_ndarray(waveform[None, index : index + chunk], format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = sample_rate, index, Fraction(1, sample_rate)
                container.mux(audio.encode(frame))
        container.mux(video.encode(None))
        if waveform is not None:
            container.mux(audio.encode(None))


def _write_wav(path: Path, waveform: np.ndarray, sample_rate: int) -> None:
    """Write the waveform as 16-bit mono PCM."""
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(sample_rate)
        writer.writeframes((np.clip(waveform, -1.0, 1.0) * 32767).round().astype("<i2").tobytes())


def make_clip(
    path: str | Path,
    segments: Sequence[Segment],
    *,
    video: bool = True,
    audio: bool = True,
    size: tuple[int, int] = (640, 360),
    fps: int = 25,
    sample_rate: int = 16000,
    transcript: str | None = "srt",
) -> dict:
    """Write one clip made of ``segments``, one after the other, and its transcript.

    Parameters
    ----------
    path : str or pathlib.Path
        The file to write. ``.mp4``: H.264 video (MPEG-4 part 2 where PyAV lacks libx264) with AAC
        audio; ``.wav``: audio only (needs ``video=False``).
    segments : sequence of Segment
        The clip's segments, in order.
    video : bool
        Whether the clip has pictures; False needs a ``.wav`` path.
    audio : bool
        Whether the clip has sound; False writes an ``.mp4`` with no audio stream at all.
    size : tuple of int
        The pictures' (width, height), both even (4:2:0 chroma sampling needs it).
        Keep it near 16:9 and at least 320x180, so the astronaut's face stays large enough to find.
    fps : int
        Frames per second. Segment lengths are rounded up to whole frames that are also whole
        milliseconds (steps of 3 frames at 15 fps), so cue times are exact.
    sample_rate : int
        Audio samples per second.
    transcript : {"srt", "vtt", "txt"} or None
        The transcript written beside the clip (``path`` with that suffix): one cue per segment
        with text, timed by the segment, or the sentences joined by spaces for ``"txt"``;
        None writes none.

    Returns
    -------
    dict
        ``path`` (str), ``transcript`` (its path, or None), ``duration`` (seconds) and
        ``segments``: per segment ``start``, ``end`` (seconds), ``text``, and ``speech`` and
        ``face``, which say what the file holds: ``speech`` is False without an audio stream
        or text, ``face`` False without video.

    Raises
    ------
    ValueError
        For an unknown suffix or transcript kind, a suffix that does not match ``video`` and
        ``audio``, no segments, an odd size, or a ``seconds`` too short for its sentence.
    RuntimeError
        When espeak-ng is missing or fails.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".wav"):
        raise ValueError(f"make_clip writes .mp4 (video) or .wav (audio only), got {path.name!r}")
    if suffix == ".mp4" and not video:
        raise ValueError(f"video=False needs an audio file (.wav), got {path.name!r}")
    if suffix == ".wav" and (video or not audio):
        raise ValueError(f"a .wav file holds audio only: pass video=False and audio=True, or use .mp4 ({path.name!r})")
    if transcript is not None and transcript not in TRANSCRIPTS:
        raise ValueError(f"transcript must be one of {TRANSCRIPTS} or None, got {transcript!r}")
    if not segments:
        raise ValueError("make_clip needs at least one segment")
    width, height = size
    if video and (width <= 0 or height <= 0 or width % 2 or height % 2):
        raise ValueError(f"size must be a positive, even (width, height), got {size}")
    if fps < 1 or sample_rate < 1:
        raise ValueError(f"fps and sample_rate must be positive, got {fps} and {sample_rate}")
    # Lengths are counted in ticks (frames, or milliseconds without video), in steps of whole frames that are also whole
    # milliseconds (3 frames at 15 fps): the transcript's millisecond times are then exact, and no frame straddles two cues.
    ticks_per_second = fps if video else 1000
    step = fps // math.gcd(fps, 1000) if video else 1
    voices, ticks_each, laid_out, tick = [], [], [], 0
    for number, segment in enumerate(segments, 1):
        voice = speak(segment.text, sample_rate=sample_rate) if segment.speech and segment.text.strip() else None
        seconds = segment.seconds if segment.seconds is not None else SILENCE_SECONDS if voice is None else len(voice) / sample_rate + SPEECH_MARGIN
        if voice is not None and len(voice) / sample_rate > seconds:
            raise ValueError(f"segment {number}: the sentence lasts {len(voice) / sample_rate:.2f} s, longer than seconds={seconds}")
        # The tolerance keeps float error (2.007 * 1000 = 2007.0000000000002) from adding a step.
        ticks = step * max(1, math.ceil(seconds * ticks_per_second / step - 1e-6))
        voices.append(voice)
        ticks_each.append(ticks)
        laid_out.append(
            {
                "start": tick / ticks_per_second,
                "end": (tick + ticks) / ticks_per_second,
                "text": segment.text,
                "speech": voice is not None and audio,
                "face": segment.face and video,
            }
        )
        tick += ticks
    duration = tick / ticks_per_second
    waveform = None
    if audio:
        # A fixed seed: the same segments give the same file, byte for byte.
        waveform = (np.random.default_rng(0).standard_normal(round(duration * sample_rate)) * NOISE).astype(np.float32)
        for voice, segment in zip(voices, laid_out):
            if voice is not None:
                start, end = round(segment["start"] * sample_rate), round(segment["end"] * sample_rate)
                offset = start + min(round(SPEECH_MARGIN / 2 * sample_rate), (end - start - len(voice)) // 2)
                waveform[offset : offset + len(voice)] += voice
    path.parent.mkdir(parents=True, exist_ok=True)
    if video:
        canvases = {face: _picture(face, size) for face in {segment.face for segment in segments}}
        pictures = [canvases[segment.face] for segment, ticks in zip(segments, ticks_each) for _ in range(ticks)]
        _write_mp4(path, pictures, fps, waveform, sample_rate)
    else:
        _write_wav(path, waveform, sample_rate)
    transcript_path = None
    if transcript is not None:
        transcript_path = path.with_suffix(f".{transcript}")
        _write_transcript(transcript_path, transcript, laid_out)
    return {"path": str(path), "transcript": None if transcript_path is None else str(transcript_path), "segments": laid_out, "duration": duration}


def _expected_rows(clip: dict) -> list[dict]:
    """One row per cue of ``clip``: its utterance id (``<stem>_<cue number>``), times, text and present modalities."""
    stem = Path(clip["path"]).stem
    cues = [segment for segment in clip["segments"] if segment["text"]]
    return [
        {
            "utterance_id": f"{stem}_{number}",
            "start": f"{cue['start']:.3f}",
            "end": f"{cue['end']:.3f}",
            "text": cue["text"],
            "audio": int(cue["speech"]),
            "visual": int(cue["face"]),
        }
        for number, cue in enumerate(cues, 1)
    ]


def _write_csv(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` (dicts with the same keys) as CSV with a header."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _draw(rng: np.random.Generator, pool: tuple[str, ...], count: int) -> list[str]:
    """``count`` sentences from ``pool``, none repeated until all are used."""
    drawn: list[str] = []
    while len(drawn) < count:
        drawn += [pool[i] for i in rng.permutation(len(pool))]
    return drawn[:count]


def make_corpus(
    out: str | Path,
    *,
    videos: int = 12,
    segments_per_video: int = 3,
    seed: int = 0,
    missing: bool = True,
    size: tuple[int, int] = (320, 180),
    fps: int = 15,
) -> Path:
    """Write a small labelled corpus of positive and negative sentences, with missing modalities.

    Parameters
    ----------
    out : str or pathlib.Path
        The folder to write into (made if missing; files of the same name are replaced).
    videos : int
        How many clips, ``video_00.mp4``, ``video_01.mp4``, ..., each with an SRT beside it.
    segments_per_video : int
        Sentences per clip; each is one segment and one cue.
    seed : int
        Seeds :func:`numpy.random.default_rng`, which draws the labels (half positive, half
        negative), the sentences and the segments that miss a modality.
    missing : bool
        Whether a fifth of the segments (rounded) show the coffee picture instead of the face,
        and another draw of a fifth are silent instead of spoken. False: every modality is present.
    size : tuple of int
        The pictures' (width, height).
    fps : int
        Frames per second.

    Returns
    -------
    pathlib.Path
        ``out``, which holds the clips, their SRTs, ``labels.csv`` (``utterance_id,label``, the
        label +1.0 for a positive sentence and -1.0 for a negative one) and ``expected.csv``
        (``utterance_id,start,end,text,audio,visual``: 1 where the modality is present, 0 where
        it is missing). An utterance id is ``<clip stem>_<cue number>``, cues counted from 1.
    """
    if videos < 1 or segments_per_video < 1:
        raise ValueError(f"videos and segments_per_video must be at least 1, got {videos} and {segments_per_video}")
    out = Path(out)
    rng = np.random.default_rng(seed)
    total = videos * segments_per_video
    labels = rng.permutation(np.resize([1.0, -1.0], total))
    positive = iter(_draw(rng, POSITIVE, int((labels > 0).sum())))
    negative = iter(_draw(rng, NEGATIVE, int((labels < 0).sum())))
    sentences = [next(positive) if label > 0 else next(negative) for label in labels]
    # Exact counts rather than a coin per segment, so every corpus, however small, misses each modality somewhere.
    share = round(total / 5) if missing else 0
    no_face = set(rng.choice(total, share, replace=False).tolist())
    no_speech = set(rng.choice(total, share, replace=False).tolist())
    label_rows, expected_rows = [], []
    for video in range(videos):
        indices = range(video * segments_per_video, (video + 1) * segments_per_video)
        segments = [Segment(sentences[i], speech=i not in no_speech, face=i not in no_face) for i in indices]
        rows = _expected_rows(make_clip(out / f"video_{video:02d}.mp4", segments, size=size, fps=fps))
        label_rows += [{"utterance_id": row["utterance_id"], "label": f"{labels[i]:+.1f}"} for row, i in zip(rows, indices)]
        expected_rows += rows
    _write_csv(out / "labels.csv", label_rows)
    _write_csv(out / "expected.csv", expected_rows)
    return out


def make_checks(out: str | Path) -> Path:
    """Write the clips that test each presence flag, with their SRTs and the expected flags.

    Parameters
    ----------
    out : str or pathlib.Path
        The folder to write into (made if missing; files of the same name are replaced).

    Returns
    -------
    pathlib.Path
        ``out``, which holds

        * ``face_speech.mp4``: 2 segments, face and speech;
        * ``no_face.mp4``: 2 segments, the coffee picture and speech;
        * ``silence.mp4``: 1 segment of 2 s, face and no speech (the transcript keeps the sentence);
        * ``no_audio.mp4``: 2 segments of video with no audio stream;
        * ``audio_only.wav``: 2 spoken segments;
        * ``mixed.mp4``: face and speech, no face and speech, face and silence, face and speech;

        and ``expected.csv``: ``media,utterance_id,start,end,text,audio,visual``, one row per cue.
    """
    out = Path(out)
    said = (sentence for pair in zip(POSITIVE, NEGATIVE) for sentence in pair)
    plans: dict[str, tuple[list[Segment], dict]] = {
        "face_speech.mp4": ([Segment(next(said)), Segment(next(said))], {}),
        "no_face.mp4": ([Segment(next(said), face=False), Segment(next(said), face=False)], {}),
        "silence.mp4": ([Segment(next(said), speech=False, seconds=2.0)], {}),
        "no_audio.mp4": ([Segment(next(said)), Segment(next(said))], {"audio": False}),
        "audio_only.wav": ([Segment(next(said)), Segment(next(said))], {"video": False}),
        "mixed.mp4": (
            [Segment(next(said)), Segment(next(said), face=False), Segment(next(said), speech=False, seconds=2.0), Segment(next(said))],
            {},
        ),
    }
    rows = []
    for name, (segments, options) in plans.items():
        rows += [{"media": name, **row} for row in _expected_rows(make_clip(out / name, segments, **options))]
    _write_csv(out / "expected.csv", rows)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m imsa.media.demo corpus OUT [--videos N] [--seed S]`` or ``... checks OUT``.

    Parameters
    ----------
    argv : sequence of str or None
        The arguments; None reads the command line.

    Returns
    -------
    int
        The exit status, 0.
    """
    parser = argparse.ArgumentParser(prog="python -m imsa.media.demo", description="Write small media clips with known face, voice and transcript.")
    commands = parser.add_subparsers(dest="command", required=True)
    corpus = commands.add_parser("corpus", help="a labelled corpus of positive and negative sentences, with missing modalities")
    corpus.add_argument("out", type=Path, help="the folder to write into")
    corpus.add_argument("--videos", type=int, default=12, help="how many clips (default 12)")
    corpus.add_argument("--seed", type=int, default=0, help="the seed of the sentences, labels and missing modalities (default 0)")
    checks = commands.add_parser("checks", help="one clip per presence flag, with the expected flags")
    checks.add_argument("out", type=Path, help="the folder to write into")
    args = parser.parse_args(argv)
    folder = make_corpus(args.out, videos=args.videos, seed=args.seed) if args.command == "corpus" else make_checks(args.out)
    print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
