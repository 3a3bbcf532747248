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

    On the CPU the layers run on padded tensors, where PyTorch uses its fused LSTM kernels
    (packed sequences fall back to a slower path, about 1.5x the time forward and 2x
    backward at GCNet's width): the forward direction reads each row from its start, so
    padding after a row's end never reaches its valid steps, and the backward direction
    reads each row reversed within its own length. Dropout between layers is drawn on the
    packed layout, as ``nn.LSTM`` draws it, so training consumes the same random numbers and
    gets the same masks; outputs equal the packed computation's up to float rounding.
    """

    def __init__(self, input_dim: int, hidden: int, *, layers: int = 1, bidirectional: bool = False, dropout: float = 0.0):
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden, num_layers=layers, bidirectional=bidirectional, dropout=dropout if layers > 1 else 0.0, batch_first=True)

    def last_states(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, H)``: a unidirectional LSTM's state at each row's last valid step (zeros for a
        row without one); the padded steps, never read, are not zeroed."""
        if self.lstm.bidirectional:
            raise ValueError("last_states reads a unidirectional LSTM; a bidirectional one's last state is not at the last step")
        states = self(x, mask, zero_padding=False)
        return states[torch.arange(len(x), device=x.device), (mask.sum(1) - 1).clamp(min=0)]

    def forward(self, x: torch.Tensor, mask: torch.Tensor, *, zero_padding: bool = True) -> torch.Tensor:
        """The states at every step; ``zero_padding=False`` leaves the padded steps' values as
        they come (for callers that never read them), saving a copy."""
        lengths = mask.sum(1)
        nonempty = lengths > 0
        width = self.lstm.hidden_size * (2 if self.lstm.bidirectional else 1)
        every = bool(nonempty.all())  # the usual batch: no copies in and out of the non-empty rows
        if not every and not nonempty.any():
            return x.new_zeros(x.shape[:2] + (width,))
        rows, row_lengths = (x, lengths) if every else (x[nonempty], lengths[nonempty])
        if x.device.type == "cpu":
            encoded = self._padded(rows, row_lengths, zero_padding)
        else:  # cuDNN runs packed sequences at full speed
            packed = pack_padded_sequence(rows, row_lengths.cpu(), batch_first=True, enforce_sorted=False)
            encoded, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=x.shape[1])
        if every:
            return encoded.to(x.dtype)
        out = x.new_zeros(x.shape[:2] + (width,))
        out[nonempty] = encoded.to(out.dtype)
        return out

    def _padded(self, x: torch.Tensor, lengths: torch.Tensor, zero_padding: bool) -> torch.Tensor:
        lstm = self.lstm
        steps = torch.arange(x.shape[1], device=x.device)
        valid = steps[None, :] < lengths[:, None]
        # Row b reversed within its length (an involution; padding stays where it is).
        reverse = torch.where(valid, lengths[:, None] - 1 - steps[None, :], steps[None, :]) if lstm.bidirectional else None
        zeros = x.new_zeros(1, x.shape[0], lstm.hidden_size)
        h = x
        for layer in range(lstm.num_layers):
            outputs = []
            for suffix in ("", "_reverse")[: 2 if lstm.bidirectional else 1]:
                weights = [getattr(lstm, f"{name}_l{layer}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                seq = h if not suffix else h.gather(1, reverse[:, :, None].expand(-1, -1, h.shape[2]))
                y = torch.lstm(seq, (zeros, zeros), weights, True, 1, 0.0, self.training, False, True)[0]
                outputs.append(y if not suffix else y.gather(1, reverse[:, :, None].expand(-1, -1, y.shape[2])))
            h = torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]
            if lstm.dropout and self.training and layer < lstm.num_layers - 1:
                packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
                packed = packed._replace(data=nn.functional.dropout(packed.data, lstm.dropout, True))
                h = pad_packed_sequence(packed, batch_first=True, total_length=x.shape[1])[0]
        return h.masked_fill(~valid[:, :, None], 0.0) if zero_padding and not bool(valid.all()) else h


class LSTMMaxPool(nn.Module):
    """One unidirectional LSTM; the embedding is the max of its states over valid steps
    (MMIN's audio and video encoder, with padding masked)."""

    def __init__(self, input_dim: int, hidden: int):
        super().__init__()
        self.rnn = PackedLSTM(input_dim, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = self.rnn(x, mask, zero_padding=False).masked_fill(~mask.unsqueeze(-1), float("-inf"))
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
