"""Recurrent and convolutional sequence encoders that never read padding.

The released codes of GCNet and MMIN run their LSTMs and max-pools over padded
steps, so an output depends on what else is in the batch; these run packed (or
masked) sequences, so a sequence's output depends on that sequence only.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class PackedLSTM(nn.Module):
    """An ``nn.LSTM`` (batch first) over the valid steps of each sequence only.

    ``forward(x (B, T, D), mask (B, T) bool)`` -> ``(B, T, H * directions)`` with zeros at
    padded steps. Valid steps come first in each row; a row with none gives zeros.
    Parameter names are those of ``nn.LSTM`` (under ``lstm.``).
    """

    def __init__(self, input_dim: int, hidden: int, *, layers: int = 1, bidirectional: bool = False, dropout: float = 0.0):
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden, num_layers=layers, bidirectional=bidirectional, dropout=dropout if layers > 1 else 0.0, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(1)
        nonempty = lengths > 0
        out = x.new_zeros(x.shape[:2] + (self.lstm.hidden_size * (2 if self.lstm.bidirectional else 1),))
        if not nonempty.any():
            return out
        packed = pack_padded_sequence(x[nonempty], lengths[nonempty].cpu(), batch_first=True, enforce_sorted=False)
        encoded, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=x.shape[1])
        out[nonempty] = encoded.to(out.dtype)
        return out


class LSTMMaxPool(nn.Module):
    """One unidirectional LSTM; the embedding is the max of its states over valid steps
    (MMIN's audio and video encoder, with padding masked)."""

    def __init__(self, input_dim: int, hidden: int):
        super().__init__()
        self.rnn = PackedLSTM(input_dim, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = self.rnn(x, mask).masked_fill(~mask.unsqueeze(-1), float("-inf"))
        return torch.where(mask.any(1, keepdim=True), states.amax(1), 0.0)


class TextCNN(nn.Module):
    """Convolutions of widths 3, 4 and 5 over the token axis, ReLU, max over the valid
    windows, dropout and a linear map with ReLU (MMIN's text encoder, padding masked).

    A sequence shorter than 5 steps is padded with zeros to 5 (those windows count).
    """

    widths = (3, 4, 5)

    def __init__(self, input_dim: int, out_dim: int, *, channels: int = 128, dropout: float = 0.5):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(input_dim, channels, k) for k in self.widths)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(channels * len(self.widths), out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        steps = max(x.shape[1], max(self.widths))
        x = nn.functional.pad(x, (0, 0, 0, steps - x.shape[1])).transpose(1, 2)  # (B, D, T)
        length = mask.sum(1, keepdim=True).clamp(min=max(self.widths))  # short sequences: padded to 5
        pooled = []
        for k, conv in zip(self.widths, self.convs):
            h = torch.relu(conv(x))  # (B, C, T - k + 1)
            valid = torch.arange(h.shape[-1], device=x.device) < (length - k + 1)
            pooled.append(h.masked_fill(~valid.unsqueeze(1), 0.0).amax(-1))  # ReLU outputs are >= 0
        return torch.relu(self.out(self.dropout(torch.cat(pooled, dim=-1))))
