"""Late fusion baseline: per-modality encoders, masked mean of the available ones.

Each modality is standardised (training statistics), encoded by its own MLP, and the
encodings of the available modalities are averaged; a linear head predicts. Training
drops modalities at random (``train_missing``), so one model serves every condition.
This is the floor that the published methods must beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..batch import Batch
from ..config import COUNT, PROBABILITY
from ..nn.layers import Standardize, masked_mean
from .common import SinglePhaseMethod, pooled
from .registry import register_method
from .spec import DataSpec, Output, TrainConfig


class LateFusionNet(nn.Module):
    def __init__(self, spec: DataSpec, *, dim: int, dropout: float):
        super().__init__()
        self.modalities = spec.modalities
        self.task = spec.task
        self.norms = nn.ModuleDict({m: Standardize(spec.dims[m]) for m in spec.modalities})
        self.encoders = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(spec.dims[m], dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim), nn.ReLU()) for m in spec.modalities}
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, spec.output_dim))

    def forward(self, batch: Batch) -> Output:
        encoded = torch.stack([self.encoders[m](self.norms[m](pooled(batch, m))) for m in self.modalities], dim=-2)
        fused = masked_mean(encoded, batch.present, dim=-2)  # (B, dim)
        prediction = self.head(fused)
        if self.task == "regression":
            prediction = prediction.squeeze(-1)
        return Output(prediction, fused)


@dataclass(frozen=True)
class LateFusionConfig(TrainConfig):
    """Late fusion defaults.

    Attributes
    ----------
    dim : int
        Width of every modality encoding.
    dropout : float
    train_missing : str
        Training mask sampler (see :func:`imsa.missing.make_sampler`): random modality
        dropout by default.
    """

    dim: int = 64
    dropout: float = 0.3
    train_missing: str = "dropout:0.3"

    DOMAINS: ClassVar[dict] = {**TrainConfig.DOMAINS, "dim": COUNT, "dropout": PROBABILITY}


@register_method
class LateFusion(SinglePhaseMethod):
    """Late fusion: masked mean of per-modality encodings, trained with modality dropout."""

    name = "late_fusion"
    default_threads = 1  # benchmarks/threads.py: 2 threads gain nothing idle and cost 1.5-2.4x wall time on a busy machine
    Config = LateFusionConfig

    def build(self, spec: DataSpec) -> nn.Module:
        return LateFusionNet(spec, dim=self.config.dim, dropout=self.config.dropout)
