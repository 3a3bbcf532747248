"""MFCCs and spectral descriptors with librosa (ISC licence): the permissive alternative to eGeMAPS."""

from __future__ import annotations

import numpy as np

from ..decode import SAMPLE_RATE
from ..registry import register_extractor

HOP = 160  # 10 ms frames, as eGeMAPS


@register_extractor(
    "mfcc",
    role="audio",
    packages=("librosa",),
    modules=("librosa",),
    licence="ISC",
    description="librosa: 20 MFCCs, RMS energy, spectral centroid, flatness and zero-crossing rate per 10 ms frame; mean and std per utterance",
)
class MFCC:
    """Per-frame MFCCs plus four spectral descriptors; the utterance vector is their mean and standard deviation."""

    frame_rate = 100.0

    def __init__(self, *, n_mfcc: int = 20):
        import librosa

        self.librosa = librosa
        self.n_mfcc = n_mfcc
        self.frame_dim = n_mfcc + 4
        self.vector_dim = 2 * self.frame_dim

    def extract(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lr = self.librosa
        audio = np.pad(audio, (0, max(0, 2048 - len(audio)))).astype(np.float32)
        spectrum = np.abs(lr.stft(audio, n_fft=512, hop_length=HOP)) ** 2
        mel = lr.feature.melspectrogram(S=spectrum, sr=SAMPLE_RATE, n_mels=40)
        rows = [
            lr.feature.mfcc(S=lr.power_to_db(mel), n_mfcc=self.n_mfcc),
            lr.feature.rms(S=np.sqrt(spectrum), frame_length=512),
            lr.feature.spectral_centroid(S=np.sqrt(spectrum), sr=SAMPLE_RATE) / SAMPLE_RATE,
            lr.feature.spectral_flatness(S=np.sqrt(spectrum)),
            lr.feature.zero_crossing_rate(audio, frame_length=512, hop_length=HOP),
        ]
        steps = min(r.shape[1] for r in rows)
        frames = np.concatenate([r[:, :steps] for r in rows]).T.astype(np.float32)
        return np.concatenate([frames.mean(0), frames.std(0)]).astype(np.float32), frames
