"""Seconds of media extracted per second of wall time, per extractor and for the default set.

A one-minute 640x360 video at 25 frames per second (the astronaut photograph with espeak-ng
speech, 12 cues of 5 s in an SRT, from :mod:`imsa.media.demo`) is extracted in this process
with warm extractors (built once, as a worker keeps them), so the numbers are the steady
state of a corpus run; worker start-up is timed separately. Writes
``benchmarks/results/media_speed.json`` and ``.md``.

    python benchmarks/media_speed.py [--repeats 3] [--seconds 60]

Needs the media and asr extras and espeak-ng.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def best_of(repeats: int, work) -> float:
    """Smallest wall time of ``repeats`` calls (the least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the test video")
    args = parser.parse_args(argv)

    from imsa.media import sources
    from imsa.media.corpus import assemble
    from imsa.media.decode import decode
    from imsa.media.demo import NEGATIVE, POSITIVE, Segment, make_clip
    from imsa.media.pipeline import ExtractionConfig, build_extractors, extract_file
    from imsa.media.registry import extractor_entry
    from imsa.media.sources import file_job

    folder = Path(tempfile.mkdtemp(prefix="imsa-media-bench-"))
    cues = int(args.seconds // 5)
    sentences = [(POSITIVE + NEGATIVE)[k % (len(POSITIVE) + len(NEGATIVE))] for k in range(cues)]
    started = time.perf_counter()
    clip = make_clip(folder / "minute.mp4", [Segment(s, seconds=5.0) for s in sentences], size=(640, 360), fps=25)
    made = time.perf_counter() - started
    duration = clip["duration"]
    job = file_job(folder / "minute.mp4")
    config = ExtractionConfig()
    rate, width = config.rate, config.width
    media = decode(job.media, frame_rate=rate, width=width)
    audio = media.audio
    frames = media.frames
    segments = [(s["start"], s["end"]) for s in clip["segments"]]

    rows = []

    def row(name: str, role: str, seconds: float, note: str = "") -> None:
        rows.append({"extractor": name, "role": role, "seconds": round(seconds, 3), "realtime": round(duration / seconds, 1), "note": note})

    row("pyav", "decode", best_of(args.repeats, lambda: decode(job.media, frame_rate=rate, width=width)), f"audio + frames at {rate:g}/s, {width} px wide")
    for name in ("silero", "webrtc"):
        vad = extractor_entry("vad", name).build()
        row(name, "vad", best_of(args.repeats, lambda v=vad: [v.speech(media.audio_between(a, b)) for a, b in segments]))
    for name in ("egemaps", "mfcc"):
        extractor = extractor_entry("audio", name).build()
        row(name, "audio", best_of(args.repeats, lambda x=extractor: [x.extract(media.audio_between(a, b)) for a, b in segments]))
    haar = extractor_entry("face", "haar").build()
    found, boxes = haar.detect(frames)
    row("haar", "face", best_of(args.repeats, lambda: haar.detect(frames)), f"{len(frames)} sampled frames, face in {found.mean():.0%}")
    for name in ("facemesh", "facepixels", "fer"):
        if not extractor_entry("visual", name).installed:
            continue
        extractor = extractor_entry("visual", name).build()
        row(name, "visual", best_of(args.repeats, lambda x=extractor: x.extract(frames, boxes, found)))
    text = extractor_entry("text", "minilm").build()
    text.encode(sentences)  # load the weights before timing
    row("minilm", "text", best_of(args.repeats, lambda: text.encode(sentences)), f"{len(sentences)} cues")
    asr_note = ""
    if extractor_entry("asr", "whisper").installed:
        whisper = extractor_entry("asr", "whisper").build()
        row("whisper", "asr", best_of(1, lambda: whisper.transcribe(audio)), "tiny.en int8, beam 1, one thread")
    else:
        asr_note = "faster-whisper not installed: no speech-recognition row"

    def whole(config: ExtractionConfig) -> float:
        extractors = build_extractors(config)

        def work():
            result = extract_file(job, config, extractors)
            assemble([job], [result], config, text)

        work()  # warm
        return best_of(args.repeats, work)

    default = whole(ExtractionConfig())
    row("default set", "all", default, "decode + silero + egemaps + haar + facemesh + minilm, transcript given")
    if extractor_entry("asr", "whisper").installed:
        # Without a transcript the recogniser cuts the file into segments and transcribes it.
        no_transcript = sources.Job(job.media, job.video_id, (sources.Segment(f"{job.video_id}_1", job.video_id, None, None),))
        config = ExtractionConfig(extractors={"asr": "whisper"})
        extractors = build_extractors(config)

        def with_asr():
            result = extract_file(no_transcript, config, extractors)
            assemble([no_transcript], [result], config, text)

        with_asr()
        row("default set + whisper", "all", best_of(1, with_asr), "no transcript: whisper cuts and transcribes")
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "from imsa.media.pipeline import ExtractionConfig, build_extractors; build_extractors(ExtractionConfig())"],
        check=True,
        capture_output=True,
    )
    startup = time.perf_counter() - started

    result = {
        "video": {"seconds": round(duration, 2), "size": "640x360", "fps": 25, "cues": cues, "generated_in_s": round(made, 1)},
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(), "python": platform.python_version()},
        "repeats": args.repeats,
        "worker_startup_s": round(startup, 2),
        "rows": rows,
        "note": asr_note,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "media_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Media extraction speed",
        "",
        f"A {duration:.0f}-second 640x360 video at 25 fps with {cues} cues, extracted with warm extractors on {os.cpu_count()} CPU cores "
        f"(best of {args.repeats}). `realtime` is seconds of media per second of extraction. Starting a worker (imports and "
        f"model loading) takes {startup:.1f} s once per process. Command: `python benchmarks/media_speed.py`.",
        "",
        "| extractor | role | seconds | x realtime | note |",
        "|---|---|---:|---:|---|",
    ]
    lines += [f"| {r['extractor']} | {r['role']} | {r['seconds']:.2f} | {r['realtime']:.1f} | {r['note']} |" for r in rows]
    (RESULTS / "media_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
