"""1-D residual channel-attention refinement (RCAN's blocks over time), as DiCMoR and IMDer
ship them in ``rcan.py``: channel attention, residual channel-attention blocks, one group."""

from __future__ import annotations

import torch
from torch import nn


class ChannelAttention(nn.Module):
    """``y * sigmoid(W2 relu(W1 mean_t(y)))``, the time mean over every step."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv1d(channels, channels // reduction, 1), nn.ReLU(), nn.Conv1d(channels // reduction, channels, 1), nn.Sigmoid())

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.squeeze(y.mean(-1, keepdim=True))


class RCAB(nn.Module):
    """``x + CA(conv(relu(conv(x))))`` with kernel-3 convolutions."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(channels, channels, 3, padding=1), nn.ReLU(), nn.Conv1d(channels, channels, 3, padding=1), ChannelAttention(channels, reduction))

    def forward(self, x):
        return x + self.body(x)


class Refiner(nn.Module):
    """``Conv(d -> 2d, 1) -> [x + conv(RCAB_n(... RCAB_1(x)))] -> Conv(2d -> d, 1)`` on ``(B, d, T)``."""

    def __init__(self, channels: int, blocks: int = 20, reduction: int = 16):
        super().__init__()
        wide = 2 * channels
        self.head = nn.Conv1d(channels, wide, 1)
        self.blocks = nn.Sequential(*(RCAB(wide, reduction) for _ in range(blocks)), nn.Conv1d(wide, wide, 3, padding=1))
        self.tail = nn.Conv1d(wide, channels, 1)

    def forward(self, x):
        h = self.head(x)
        return self.tail(h + self.blocks(h))
