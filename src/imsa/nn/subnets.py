"""The per-modality encoders of MMSA's fusion networks (TFN, LMF): ``SubNet`` for an
utterance vector (audio, video) and ``TextSubNet`` for a word sequence (text).

Both keep the released modules' parameter names (``norm``, ``linear_1``..``linear_3``;
``rnn``, ``linear_1``), so a released state dict loads with one rename: the LSTM's
tensors sit under ``rnn.lstm.`` here (a :class:`~imsa.nn.recurrent.PackedLSTM`).
"""

from __future__ import annotations

import torch
from torch import nn

from .recurrent import PackedLSTM


class SubNet(nn.Module):
    """Batch norm, dropout and three ReLU layers: ``(B, in_dim)`` -> ``(B, hidden)``.

    In training mode a batch of one utterance is normalised with the running statistics
    (batch statistics of one sample are undefined, and PyTorch refuses them); any other
    batch is normalised as ``nn.BatchNorm1d`` does.

    Parameters
    ----------
    in_dim, hidden : int
        Input features and the width of all three layers.
    dropout : float
        Dropout on the normalised input.
    """

    def __init__(self, in_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.norm = nn.BatchNorm1d(in_dim)
        self.drop = nn.Dropout(dropout)
        self.linear_1 = nn.Linear(in_dim, hidden)
        self.linear_2 = nn.Linear(hidden, hidden)
        self.linear_3 = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and len(x) == 1:  # batch statistics of one utterance are undefined: the running ones
            normed = nn.functional.batch_norm(x, self.norm.running_mean, self.norm.running_var, self.norm.weight, self.norm.bias, False, 0.0, self.norm.eps)
        else:
            normed = self.norm(x)
        x = torch.relu(self.linear_1(self.drop(normed)))
        return torch.relu(self.linear_3(torch.relu(self.linear_2(x))))


class TextSubNet(nn.Module):
    """A one-layer LSTM's state at each sequence's last real step, dropout and a linear
    layer (no activation): ``(B, T, in_dim)`` and a ``(B, T)`` mask of real steps ->
    ``(B, out_dim)``.

    The LSTM reads the real steps only, so the output does not depend on the padding (the
    released one runs over the padded batch and keeps the state after the padding).

    Parameters
    ----------
    in_dim, hidden, out_dim : int
        Word features, LSTM width, output width.
    dropout : float
        Dropout on the LSTM's state. MMSA's ``TextSubNet`` sets it to 0 for a one-layer
        LSTM whatever it is given; a method that follows it passes 0.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float):
        super().__init__()
        self.rnn = PackedLSTM(in_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.linear_1 = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.linear_1(self.dropout(self.rnn.last_states(x, mask)))
