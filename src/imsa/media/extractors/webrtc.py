"""Voice activity with the WebRTC detector (``webrtcvad-wheels``): a light, model-free alternative to Silero."""

from __future__ import annotations

import numpy as np

from ..registry import register_extractor

FRAME = 480  # 30 ms at 16 kHz, one of the frame lengths the detector accepts


@register_extractor(
    "webrtc",
    role="vad",
    packages=("webrtcvad-wheels",),
    modules=("webrtcvad",),
    licence="MIT",
    description="WebRTC VAD: speech or not per 30 ms frame (aggressiveness 0-3)",
)
class WebRTCVoiceActivity:
    """Fraction of 30 ms frames the WebRTC detector calls speech."""

    def __init__(self, *, aggressiveness: int = 2):
        import webrtcvad

        self.detector = webrtcvad.Vad(aggressiveness)

    def speech(self, audio: np.ndarray) -> float:
        count = len(audio) // FRAME
        if count == 0:
            return 0.0
        pcm = (np.clip(audio[: count * FRAME], -1, 1) * 32767).astype("<i2").reshape(count, FRAME)
        return float(np.mean([self.detector.is_speech(row.tobytes(), 16000) for row in pcm]))
