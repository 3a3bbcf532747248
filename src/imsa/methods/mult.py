"""MulT (Tsai et al., ACL 2019), the field's complete-data baseline on sequences.

Each modality's sequence is projected to ``dim`` channels by a 1-D convolution
(no bias, no padding); for every target modality, crossmodal transformers attend from
it to each other modality, a self-attention memory runs over their concatenation and
its last step is kept; a residual head maps the concatenated last steps to the
prediction. The backbone is the one DiCMoR and IMDer build on (``imsa.nn.mult``), as
MMSA's ``MULT`` and the IMDer/DiCMoR repositories run it (the IMDer spec,
section 3.5-3.6, the DiCMoR spec, section 3.6).

Decisions (the released backbones are trained only inside other recipes):

* **Defaults: IMDer's MOSI backbone** (width 32, 8 heads, 4 crossmodal and 4 memory
  layers, kernel 3, embedding and audio-attention dropout 0.2, causal attention) on the
  dataset's precomputed text features. ``text_encoder=PATH`` (a local Hugging Face
  folder with the tokenizer the ids came from; ``minilm``) fine-tunes that encoder on
  the file's token ids (MMSA's ``text_bert``) instead, as the released backbones do with
  BERT: its token states replace the text features before the text's projection; a
  dropped word (frames protocol) is the tokenizer's unknown token; a missing text is a
  zero sequence like any missing modality.
* **Training distribution**: complete data by default (``train_missing=complete``),
  the baseline's definition; any sampler (``uniform``, ``incomplete``, the random
  protocol's rate) trains a missing-modality MulT. A missing modality is a zero
  sequence of its own length, as the released recoveries feed the backbone zeros
  before recovery; the network never reads ``present``.
* **Recipe**: Adam, lr 1e-3, no weight decay, batches of 32 utterances, L1 loss for
  regression, 100 epochs with early stopping after 20 on validation (the released
  phase-0 reconstruction uses lr 1e-4 with a fine-tuned BERT, value clipping and a
  plateau scheduler, which this loop does not have; documented, not copied).
* **Padding**: as released, attention sees padded steps (no key-padding mask) and the
  readout is the last step; ``padding_mask=true`` hides padded keys and reads the
  last real step, so an utterance's output does not depend on its batch's padding.
* **Sequences only**: a dataset with utterance vectors is refused (the convolution
  and attention need time steps); modalities may have different lengths (the causal
  mask is fairseq's, offset for unequal lengths), as MulT's unaligned setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from ..errors import ConfigError
from .common import MulTBackbone, MulTBackboneConfig, SinglePhaseMethod
from .registry import register_method
from .spec import DataSpec


@dataclass(frozen=True)
class MulTConfig(MulTBackboneConfig):
    """MulT defaults: IMDer's MOSI backbone (the IMDer spec, section 3.8); the keys are
    those of :class:`~imsa.methods.common.MulTBackboneConfig`, with their defaults."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 100
    patience: int | None = 20
    train_missing: str = "complete"

    def __post_init__(self):
        super().__post_init__()
        if self.dim % self.heads:
            raise ConfigError(f"dim={self.dim} must be divisible by heads={self.heads} (and (M - 1) * dim by heads for the memories).")


@register_method
class MulTMethod(SinglePhaseMethod):
    """MulT: crossmodal transformers on sequences, trained on ``train_missing`` masks (complete data by default)."""

    name = "mult"
    Config = MulTConfig
    inputs = "sequence"
    default_threads = 1
    token_text = True
    tiny_config: ClassVar[dict] = {"dim": 8, "heads": 2, "depth": 1, "conv_kernel": 1}

    def build(self, spec: DataSpec) -> nn.Module:
        return MulTBackbone(spec, self.config)

    def data_spec(self, dataset):
        spec = super().data_spec(dataset)
        if len(spec.modalities) < 2:
            raise ConfigError(f"MulT needs at least two modalities to attend across; {dataset.name} has only {spec.modalities[0]!r}.")
        short = [m for m in spec.modalities if dataset.features[m].shape[1] < self.config.conv_kernel]
        if short:
            raise ConfigError(
                f"{dataset.name}: the sequences of {', '.join(short)} have {min(dataset.features[m].shape[1] for m in short)} steps, fewer than conv_kernel={self.config.conv_kernel}; lower conv_kernel."
            )
        return spec
