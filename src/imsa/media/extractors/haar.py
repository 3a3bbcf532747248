"""Face detection with OpenCV's Haar cascade (the frontal-face cascade bundled in OpenCV 4.x wheels)."""

from __future__ import annotations

import os

import numpy as np

from ..registry import register_extractor


@register_extractor(
    "haar",
    role="face",
    packages=("opencv-contrib-python",),
    modules=("cv2",),
    licence="Apache-2.0 (OpenCV); the cascade file: Intel License Agreement (BSD-like)",
    description="OpenCV Haar cascade haarcascade_frontalface_default.xml: the largest frontal face per sampled frame",
)
class HaarFaces:
    """Largest frontal face per frame; ``min_size`` is a fraction of the frame's width."""

    def __init__(self, *, scale_factor: float = 1.2, min_neighbors: int = 5, min_size: float = 0.08):
        import cv2

        cascade = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        self.cv2 = cv2
        self.detector = cv2.CascadeClassifier(cascade)
        if self.detector.empty():
            raise RuntimeError(f"OpenCV could not read its bundled cascade {cascade}; install opencv-contrib-python 4.x (5.x no longer ships the cascades).")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size

    def detect(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``found`` (K,) bool and ``boxes`` (K, 4) int ``x, y, w, h`` (zeros where none)."""
        found = np.zeros(len(frames), bool)
        boxes = np.zeros((len(frames), 4), np.int64)
        for k, frame in enumerate(frames):
            gray = self.cv2.cvtColor(frame, self.cv2.COLOR_RGB2GRAY)
            side = max(16, int(self.min_size * gray.shape[1]))
            faces = self.detector.detectMultiScale(gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(side, side))
            if len(faces):
                boxes[k] = max(faces, key=lambda f: f[2] * f[3])
                found[k] = True
        return found, boxes
