"""The detected face itself, small and normalised: a visual feature that needs nothing beyond OpenCV."""

from __future__ import annotations

import numpy as np

from ..registry import register_extractor


@register_extractor(
    "facepixels",
    role="visual",
    packages=("opencv-contrib-python",),
    modules=("cv2",),
    licence="Apache-2.0",
    description="the face box as a size x size grey image, histogram-equalised and standardised, per sampled frame",
)
class FacePixels:
    """The face crop resized to ``size`` x ``size`` grey levels, zero mean and unit spread."""

    def __init__(self, *, size: int = 16):
        import cv2

        self.cv2 = cv2
        self.size = size
        self.dim = size * size

    def extract(self, frames: np.ndarray, boxes: np.ndarray, found: np.ndarray) -> np.ndarray:
        out = np.zeros((len(frames), self.dim), np.float32)
        for k in np.flatnonzero(found):
            x, y, w, h = boxes[k]
            crop = self.cv2.cvtColor(np.ascontiguousarray(frames[k][y : y + h, x : x + w]), self.cv2.COLOR_RGB2GRAY)
            small = self.cv2.equalizeHist(self.cv2.resize(crop, (self.size, self.size), interpolation=self.cv2.INTER_AREA)).astype(np.float32)
            out[k] = ((small - small.mean()) / max(float(small.std()), 1.0)).reshape(-1)
        return out
