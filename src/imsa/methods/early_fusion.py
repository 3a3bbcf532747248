"""Early fusion baseline: concatenated standardised features, missing modalities zeroed.

Trained on complete data only, as most multimodal models are; scored with missing
modalities zeroed. It shows what a model that never saw missing data loses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..batch import Batch
from ..config import COUNT, PROBABILITY
from ..nn.layers import Standardize
from .common import SinglePhaseMethod, pooled
from .registry import register_method
from .spec import DataSpec, Output, TrainConfig


class EarlyFusionNet(nn.Module):
    def __init__(self, spec: DataSpec, *, dim: int, dropout: float):
        super().__init__()
        self.modalities = spec.modalities
        self.task = spec.task
        self.norms = nn.ModuleDict({m: Standardize(spec.dims[m]) for m in spec.modalities})
        total = sum(spec.dims.values())
        self.mlp = nn.Sequential(nn.Linear(total, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(dim, spec.output_dim)

    def forward(self, batch: Batch) -> Output:
        parts = [self.norms[m](pooled(batch, m)) * batch.present[..., k : k + 1].to(batch.inputs[m].dtype) for k, m in enumerate(self.modalities)]
        feature = self.mlp(torch.cat(parts, dim=-1))
        prediction = self.head(feature)
        if self.task == "regression":
            prediction = prediction.squeeze(-1)
        return Output(prediction, feature)


@dataclass(frozen=True)
class EarlyFusionConfig(TrainConfig):
    """Early fusion defaults.

    Attributes
    ----------
    dim : int
        Hidden width.
    dropout : float
    train_missing : str
        Training mask sampler; ``complete`` (the baseline's definition).
    """

    dim: int = 64
    dropout: float = 0.3
    train_missing: str = "complete"

    DOMAINS: ClassVar[dict] = {**TrainConfig.DOMAINS, "dim": COUNT, "dropout": PROBABILITY}


@register_method
class EarlyFusion(SinglePhaseMethod):
    """Early fusion: one MLP over concatenated features, trained on complete data."""

    name = "early_fusion"
    default_threads = 1  # benchmarks/threads.py: 2 threads gain nothing idle and cost 1.5-2.4x wall time on a busy machine
    Config = EarlyFusionConfig

    def build(self, spec: DataSpec) -> nn.Module:
        return EarlyFusionNet(spec, dim=self.config.dim, dropout=self.config.dropout)
