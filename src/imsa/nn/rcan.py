"""1-D residual channel-attention refinement (RCAN's blocks over time), as DiCMoR and IMDer
ship them in ``rcan.py``: channel attention, residual channel-attention blocks, one group.

Every ``forward`` takes an optional ``mask`` (bool ``(B, T)``, True at real steps; the
input of a block zero elsewhere, which the refiner's per-step head sees to itself):
padded steps are then kept at zero after every layer and left out
of the channel attention's time mean, so real steps come out as for the unpadded
sequence. Without it every step counts, as released.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import keep_real, masked_mean


class ChannelAttention(nn.Module):
    """``y * sigmoid(W2 relu(W1 mean_t(y)))``, the time mean over every step (real steps with a mask)."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv1d(channels, channels // reduction, 1), nn.ReLU(), nn.Conv1d(channels // reduction, channels, 1), nn.Sigmoid())

    def forward(self, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            return y * self.squeeze(y.mean(-1, keepdim=True))
        return y * self.squeeze(masked_mean(y.transpose(1, 2), mask, 1)[..., None])


class RCAB(nn.Module):
    """``x + CA(conv(relu(conv(x))))`` with kernel-3 convolutions."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(channels, channels, 3, padding=1), nn.ReLU(), nn.Conv1d(channels, channels, 3, padding=1), ChannelAttention(channels, reduction)
        )

    def forward(self, x, mask=None):
        if mask is None:
            return x + self.body(x)
        first, relu, second, attention = self.body
        h = keep_real(second(keep_real(relu(first(x)), mask)), mask)
        return x + attention(h, mask)


class Refiner(nn.Module):
    """``Conv(d -> 2d, 1) -> [x + conv(RCAB_n(... RCAB_1(x)))] -> Conv(2d -> d, 1)`` on ``(B, d, T)``."""

    def __init__(self, channels: int, blocks: int = 20, reduction: int = 16):
        super().__init__()
        wide = 2 * channels
        self.head = nn.Conv1d(channels, wide, 1)
        self.blocks = nn.Sequential(*(RCAB(wide, reduction) for _ in range(blocks)), nn.Conv1d(wide, wide, 3, padding=1))
        self.tail = nn.Conv1d(wide, channels, 1)

    def forward(self, x, mask=None):
        if mask is None:
            h = self.head(x)
            return self.tail(h + self.blocks(h))
        h = keep_real(self.head(x), mask)
        body = h
        for block in self.blocks[:-1]:
            body = block(body, mask)
        return keep_real(self.tail(h + keep_real(self.blocks[-1](body), mask)), mask)
