"""eGeMAPS v02 with openSMILE: the field's standard acoustic set (MMSA-FET's default audio features).

Per utterance the 88 functionals; per 10 ms frame the 25 low-level descriptors. openSMILE's
licence permits research and education only (commercial use needs a licence from
audEERING); the ``mfcc`` extractor is the permissively licensed alternative.
"""

from __future__ import annotations

import numpy as np

from ..decode import SAMPLE_RATE
from ..registry import register_extractor

MIN_SAMPLES = SAMPLE_RATE // 10  # openSMILE yields no frames for shorter input


@register_extractor(
    "egemaps",
    role="audio",
    packages=("opensmile",),
    modules=("opensmile",),
    licence="openSMILE research-only licence (audEERING): free for research and education, not for commercial use",
    description="eGeMAPSv02: 88 functionals per utterance, 25 low-level descriptors per 10 ms frame",
)
class EGeMAPS:
    """openSMILE eGeMAPS v02 functionals and low-level descriptors."""

    vector_dim = 88
    frame_dim = 25
    frame_rate = 100.0

    def __init__(self):
        import opensmile

        self.functionals = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals)
        self.descriptors = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.LowLevelDescriptors)

    def extract(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(audio) < MIN_SAMPLES:
            audio = np.pad(audio, (0, MIN_SAMPLES - len(audio)))
        vector = self.functionals.process_signal(audio, SAMPLE_RATE).to_numpy(np.float32).reshape(-1)
        frames = self.descriptors.process_signal(audio, SAMPLE_RATE).to_numpy(np.float32)
        return np.nan_to_num(vector), np.nan_to_num(frames.reshape(-1, self.frame_dim))
