"""TFN (Zadeh et al., EMNLP 2017): the tensor fusion network, as MMSA releases it.

Each modality is encoded on its own: audio and video by a sub-network (batch norm,
dropout, three ReLU layers), text by an LSTM whose last state goes through dropout and a
linear layer. A 1 is appended to each encoding and the three are multiplied as an outer
product, so the fused tensor holds every unimodal, bimodal and trimodal interaction; it is
flattened, dropped out and mapped by three layers to the output. Regression squashes the
output into (-3, 3) with a scaled sigmoid.

Recipe (MMSA ``config_regression.json``, ``tfn``; ``trains/singleTask/TFN.py``): Adam
(no weight decay), L1 loss for regression, batch 32 and learning rate 1e-3 on MOSI,
early stopping after 8 epochs without a better validation loss, audio and video averaged
over time. The model is a complete-data one: it trains on complete data by default
(``train_missing``) and is scored with missing modalities zeroed, as the missing-modality
papers compare it; every protocol's masks apply. Fidelity: ``docs/methods/tfn.md``.

Departures from the released code, and why:

* A missing modality enters as zeros, by the batch's ``present`` mask (imsa's rule: no
  method reads a missing modality's values); with two modalities the product has two
  factors (the released network takes exactly three).
* The text LSTM reads each utterance's real steps only (a packed LSTM's last state); the
  released one runs over the padded batch, so its state depends on the padding.
* Audio and video are averaged over their real steps; MMSA's loader averages over the
  padded length (zeros included), which scales each utterance by its length.
* A training batch of a single utterance (the last of an epoch) normalises with the
  running statistics: batch statistics of one sample are undefined, and PyTorch refuses
  them (MMSA's loaders never met it on their splits).
* ``dropouts`` holds three values, audio, video and post-fusion. MMSA's list has a fourth,
  the text one, which its ``TextSubNet`` ignores (it sets a one-layer LSTM's dropout to 0);
  imsa takes only the three that act, and refuses four with a message that says so.
* The regression range is ``output_range`` (default (-3, 3), as released for every
  dataset; MMSA keeps it even for CH-SIMS, whose labels lie in [-1, 1]). The released
  module holds it as two frozen one-element parameters (which MMSA's trainer leaves out of
  Adam with ``list(model.parameters())[2:]``); here it is a config value, so the state
  dict has every trained tensor and nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..batch import Batch
from ..config import COUNT, PROBABILITY
from ..errors import ConfigError, invalid_parameter
from ..nn.subnets import SubNet, TextSubNet
from .common import SinglePhaseMethod, subnet_encoding
from .registry import register_method
from .spec import DataSpec, Output, TrainConfig


class TFNNet(nn.Module):
    """The released network over the dataset's modalities (all three, as released, or two)."""

    ORDER = ("a", "v", "l")  # the released outer product's order: audio outermost, text innermost

    def __init__(self, spec: DataSpec, *, hidden: tuple, text_out: int, post_fusion_dim: int, dropouts: tuple, output_range: tuple):
        super().__init__()
        self.task = spec.task
        self.modalities = spec.modalities
        self.fused_order = [m for m in self.ORDER if m in spec.modalities]
        text_hidden, audio_hidden, video_hidden = hidden
        widths = {"a": audio_hidden, "v": video_hidden, "l": text_out}
        if "a" in spec.modalities:
            self.audio_subnet = SubNet(spec.dims["a"], audio_hidden, dropouts[0])
        if "v" in spec.modalities:
            self.video_subnet = SubNet(spec.dims["v"], video_hidden, dropouts[1])
        if "l" in spec.modalities:
            self.text_subnet = TextSubNet(spec.dims["l"], text_hidden, text_out, 0.0)  # MMSA's TextSubNet drops nothing with one layer
        self.post_fusion_dropout = nn.Dropout(dropouts[2])
        self.post_fusion_layer_1 = nn.Linear(math.prod(widths[m] + 1 for m in self.fused_order), post_fusion_dim)
        self.post_fusion_layer_2 = nn.Linear(post_fusion_dim, post_fusion_dim)
        self.post_fusion_layer_3 = nn.Linear(post_fusion_dim, spec.output_dim)
        self.low, self.high = (float(v) for v in output_range)

    def encode(self, batch: Batch, modality: str) -> torch.Tensor:
        """One modality's encoding, from zeros where the batch marks it missing."""
        encoder = {"a": "audio_subnet", "v": "video_subnet", "l": "text_subnet"}[modality]
        return subnet_encoding(getattr(self, encoder), batch, modality, self.modalities.index(modality))

    def forward(self, batch: Batch) -> Output:
        fused = None
        for m in self.fused_order:  # the outer product of [1, h_a], [1, h_v] and [1, h_l], flattened
            h = self.encode(batch, m)
            h = torch.cat([h.new_ones(len(h), 1), h], dim=1)
            fused = h if fused is None else torch.bmm(fused.unsqueeze(2), h.unsqueeze(1)).flatten(1)  # bmm: a cheaper backward than a broadcast product
        hidden = torch.relu(self.post_fusion_layer_1(self.post_fusion_dropout(fused)))
        hidden = torch.relu(self.post_fusion_layer_2(hidden))
        prediction = self.post_fusion_layer_3(hidden)
        if self.task == "regression":
            prediction = torch.sigmoid(prediction.squeeze(-1)) * (self.high - self.low) + self.low
        return Output(prediction, fused)


@dataclass(frozen=True)
class TFNConfig(TrainConfig):
    """TFN's defaults: MMSA's MOSI setting.

    Attributes
    ----------
    hidden : tuple of int
        Text LSTM, audio and video sub-network widths (MMSA's ``hidden_dims``, that order).
    text_out : int
        Width of the text encoding.
    post_fusion_dim : int
    dropouts : tuple of float
        Audio, video and post-fusion dropout (MMSA's list also has a text entry, which its
        one-layer text LSTM ignores).
    output_range : tuple of float
        The regression output's range (a scaled sigmoid).
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int | None = 8
    hidden: tuple[int, ...] = (128, 32, 128)
    text_out: int = 32
    post_fusion_dim: int = 64
    dropouts: tuple[float, ...] = (0.3, 0.3, 0.5)
    output_range: tuple[float, ...] = (-3.0, 3.0)

    DOMAINS: ClassVar[dict] = {**TrainConfig.DOMAINS, "text_out": COUNT, "post_fusion_dim": COUNT}

    def __post_init__(self):
        super().__post_init__()
        owner = type(self).__qualname__
        for name in ("hidden", "dropouts", "output_range"):  # tuples again after a trip through JSON
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.hidden) != 3 or any(not isinstance(h, int) or isinstance(h, bool) or h < 1 for h in self.hidden):
            raise invalid_parameter("hidden", owner, "three positive integers (text, audio, video)", list(self.hidden))
        if len(self.dropouts) == 4:
            raise invalid_parameter(
                "dropouts",
                owner,
                "three probabilities (audio, video, post-fusion); MMSA's third entry, the text one, has no effect in the released TFN, so leave it out",
                list(self.dropouts),
            )
        if len(self.dropouts) != 3 or any(isinstance(p, bool) or not isinstance(p, (int, float)) or p not in PROBABILITY for p in self.dropouts):
            raise invalid_parameter("dropouts", owner, "three probabilities (audio, video, post-fusion)", list(self.dropouts))
        if len(self.output_range) != 2 or not all(isinstance(v, (int, float)) for v in self.output_range) or not self.output_range[0] < self.output_range[1]:
            raise invalid_parameter("output_range", owner, "(low, high) with low < high", list(self.output_range))


@register_method
class TFN(SinglePhaseMethod):
    """TFN: the tensor fusion network (an outer product of the three encodings), a complete-data model."""

    name = "tfn"
    default_threads = 1
    Config = TFNConfig
    tiny_config: ClassVar[dict] = {"hidden": (8, 4, 4), "text_out": 4, "post_fusion_dim": 8}

    def data_spec(self, dataset):
        spec = super().data_spec(dataset)
        if len(spec.modalities) < 2 or not set(spec.modalities) <= {"l", "a", "v"}:
            raise ConfigError(f"TFN fuses two or three of text, audio and video (l, a, v); {dataset.name} has {', '.join(spec.modalities)}.")
        return spec

    def build(self, spec: DataSpec) -> nn.Module:
        c = self.config
        return TFNNet(spec, hidden=c.hidden, text_out=c.text_out, post_fusion_dim=c.post_fusion_dim, dropouts=c.dropouts, output_range=c.output_range)
