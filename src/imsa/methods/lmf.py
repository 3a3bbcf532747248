"""LMF (Liu et al., ACL 2018): low-rank multimodal fusion with modality-specific factors, as
MMSA releases it.

The encoders are TFN's: audio and video by a sub-network (batch norm, dropout, three ReLU
layers), text by an LSTM whose last state goes through a linear layer to half the LSTM's
width. A 1 is appended to each encoding ``z_m``; each modality has ``rank`` factors
``W_m[r]`` (``(width + 1) x output_dim``), and the output is
``sum_r w_r * prod_m (z_m W_m[r]) + b``: TFN's outer product mapped by a weight tensor of
rank ``rank``, without building the product. There is no output activation (regression
is unbounded, classification gives logits).

Recipe (MMSA ``config_regression.json``, ``lmf``; ``trains/singleTask/LMF.py``): Adam with
an L2 penalty (``weight_decay`` 5e-3 on MOSI) on every trained tensor, the factors at
``factor_lr`` and the sub-networks at ``lr`` (both 1e-3 on MOSI), batch 64, rank 3, L1
loss for regression, early stopping after 8 epochs without a better validation loss,
audio and video averaged over time. The trainer's optimiser takes
``list(model.parameters())[:3]`` (the factors) and ``[5:]`` (the sub-networks), so the
fusion weights ``w`` and bias ``b`` keep their initial values (Xavier-normal weights, a
zero bias): here too they take no gradient and no optimiser step, and stay in the state
dict. Like TFN, a complete-data model: it trains on complete data by default
(``train_missing``) and is scored with missing modalities zeroed; every protocol's masks
apply. Fidelity: ``docs/methods/lmf.md``.

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
* ``dropouts`` holds two values, audio and video. MMSA's list has four, but its text
  entry is dropped by ``TextSubNet`` (which sets a one-layer LSTM's dropout to 0) and its
  post-fusion entry builds a dropout layer that ``forward`` never calls; imsa takes only
  the two that act, and refuses four with a message that says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..batch import Batch
from ..config import COUNT, POSITIVE, PROBABILITY
from ..errors import ConfigError, invalid_parameter
from ..nn.subnets import SubNet, TextSubNet
from .common import SinglePhaseMethod, subnet_encoding
from .registry import register_method
from .spec import DataSpec, Output, TrainConfig

NAMES = {"a": "audio", "v": "video", "l": "text"}


class LMFNet(nn.Module):
    """The released network over the dataset's modalities (all three, as released, or two).

    Parameter names are the released module's: ``audio_factor``, ``video_factor``,
    ``text_factor`` (``(rank, width + 1, output_dim)``), ``fusion_weights`` (``(1, rank)``)
    and ``fusion_bias`` (``(1, output_dim)``), the last two not trained.
    """

    ORDER = ("a", "v", "l")  # the released product's order: audio, video, text

    def __init__(self, spec: DataSpec, *, hidden: tuple, rank: int, dropouts: tuple):
        super().__init__()
        self.task = spec.task
        self.modalities = spec.modalities
        self.fused_order = [m for m in self.ORDER if m in spec.modalities]
        text_hidden, audio_hidden, video_hidden = hidden
        widths = {"a": audio_hidden, "v": video_hidden, "l": text_hidden // 2}  # the released text_out: half the LSTM
        out = spec.output_dim
        # The module's own tensors first, in the released order (its trainer picks them by position).
        for m in self.fused_order:
            self.register_parameter(f"{NAMES[m]}_factor", nn.Parameter(nn.init.xavier_normal_(torch.empty(rank, widths[m] + 1, out))))
        self.fusion_weights = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, rank)), requires_grad=False)
        self.fusion_bias = nn.Parameter(torch.zeros(1, out), requires_grad=False)
        if "a" in spec.modalities:
            self.audio_subnet = SubNet(spec.dims["a"], audio_hidden, dropouts[0])
        if "v" in spec.modalities:
            self.video_subnet = SubNet(spec.dims["v"], video_hidden, dropouts[1])
        if "l" in spec.modalities:
            self.text_subnet = TextSubNet(spec.dims["l"], text_hidden, widths["l"], 0.0)  # MMSA's TextSubNet drops nothing with one layer

    def factors(self) -> list[nn.Parameter]:
        """The modality-specific factors (trained at ``factor_lr``)."""
        return [getattr(self, f"{NAMES[m]}_factor") for m in self.fused_order]

    def encode(self, batch: Batch, modality: str) -> torch.Tensor:
        """One modality's encoding, from zeros where the batch marks it missing."""
        return subnet_encoding(getattr(self, f"{NAMES[modality]}_subnet"), batch, modality, self.modalities.index(modality))

    def forward(self, batch: Batch) -> Output:
        fused = None
        for m, factor in zip(self.fused_order, self.factors()):  # prod_m ([1, h_m] W_m[r]), per rank r: (rank, B, out)
            h = self.encode(batch, m)
            projected = torch.matmul(torch.cat([h.new_ones(len(h), 1), h], dim=1), factor)
            fused = projected if fused is None else fused * projected
        fused = fused.permute(1, 0, 2)  # (B, rank, out)
        output = torch.matmul(self.fusion_weights, fused).squeeze(1) + self.fusion_bias  # sum_r w_r (.) + b: (B, out)
        prediction = output.squeeze(-1) if self.task == "regression" else output
        return Output(prediction, fused.flatten(1))


@dataclass(frozen=True)
class LMFConfig(TrainConfig):
    """LMF's defaults: MMSA's MOSI setting.

    Attributes
    ----------
    lr, factor_lr : float
        Adam's learning rates of the sub-networks and of the modality factors.
    weight_decay : float
        Adam's L2 penalty, on every trained tensor (factors, weights, biases, norms), as
        MMSA's trainer (not imsa's usual decoupled decay).
    hidden : tuple of int
        Text LSTM, audio and video sub-network widths (MMSA's ``hidden_dims``, that order);
        the text encoding has half the LSTM's width (rounded down), as released.
    rank : int
        Factors per modality.
    dropouts : tuple of float
        Audio and video dropout (the two of MMSA's four that act; see the module).
    """

    lr: float = 1e-3
    factor_lr: float = 1e-3
    weight_decay: float = 5e-3
    batch_size: int = 64
    patience: int | None = 8
    hidden: tuple[int, ...] = (128, 16, 128)
    rank: int = 3
    dropouts: tuple[float, ...] = (0.3, 0.3)

    DOMAINS: ClassVar[dict] = {**TrainConfig.DOMAINS, "factor_lr": POSITIVE, "rank": COUNT}

    def __post_init__(self):
        super().__post_init__()
        owner = type(self).__qualname__
        for name in ("hidden", "dropouts"):  # tuples again after a trip through JSON
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.hidden) != 3 or any(not isinstance(h, int) or isinstance(h, bool) or h < 1 for h in self.hidden) or self.hidden[0] < 2:
            raise invalid_parameter(
                "hidden", owner, "three positive integers (text, audio, video), the text one at least 2 (its encoding has half its width)", list(self.hidden)
            )
        if len(self.dropouts) == 4:
            raise invalid_parameter(
                "dropouts",
                owner,
                "two probabilities (audio, video); of MMSA's four, the text and post-fusion ones have no effect in the released LMF, so give the first two",
                list(self.dropouts),
            )
        if len(self.dropouts) != 2 or any(isinstance(p, bool) or not isinstance(p, (int, float)) or p not in PROBABILITY for p in self.dropouts):
            raise invalid_parameter("dropouts", owner, "two probabilities (audio, video)", list(self.dropouts))


@register_method
class LMF(SinglePhaseMethod):
    """LMF: low-rank multimodal fusion (rank-r modality-specific factors), a complete-data model."""

    name = "lmf"
    default_threads = 1
    Config = LMFConfig
    tiny_config: ClassVar[dict] = {"hidden": (8, 4, 4), "rank": 2}

    def data_spec(self, dataset):
        """The dataset's spec, refusing one without two or three of text, audio and video."""
        spec = super().data_spec(dataset)
        if len(spec.modalities) < 2 or not set(spec.modalities) <= {"l", "a", "v"}:
            raise ConfigError(f"LMF fuses two or three of text, audio and video (l, a, v); {dataset.name} has {', '.join(spec.modalities)}.")
        return spec

    def build(self, spec: DataSpec) -> nn.Module:
        """The untrained :class:`LMFNet` for ``spec``."""
        c = self.config
        return LMFNet(spec, hidden=c.hidden, rank=c.rank, dropouts=c.dropouts)

    def phase_options(self, model: LMFNet) -> dict:
        """MMSA's optimiser: Adam with an L2 penalty, the factors at ``factor_lr``, the
        sub-networks at ``lr``, the fusion weights and bias left out."""
        factors = {id(p) for p in model.factors()}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in factors]
        return {"optimizer": "adam", "param_groups": [{"params": model.factors(), "lr": self.config.factor_lr}, {"params": rest}]}
