"""The padded CPU path of PackedLSTM computes what nn.LSTM computes on packed sequences, dropout masks included."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from imsa.nn.recurrent import PackedLSTM


def packed_reference(module: PackedLSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """nn.LSTM on the packed non-empty rows, zeros elsewhere (what PackedLSTM computed before its padded path)."""
    nonempty = lengths > 0
    out = x.new_zeros(x.shape[:2] + (module.lstm.hidden_size * (2 if module.lstm.bidirectional else 1),))
    packed = pack_padded_sequence(x[nonempty], lengths[nonempty], batch_first=True, enforce_sorted=False)
    out[nonempty] = pad_packed_sequence(module.lstm(packed)[0], batch_first=True, total_length=x.shape[1])[0]
    return out


@pytest.mark.parametrize("bidirectional, layers, dropout", [(True, 2, 0.3), (True, 1, 0.0), (False, 1, 0.0), (False, 2, 0.5)])
@pytest.mark.parametrize("train", [False, True])
def test_padded_kernels_match_the_packed_lstm(bidirectional, layers, dropout, train):
    torch.manual_seed(0)
    module = PackedLSTM(12, 8, layers=layers, bidirectional=bidirectional, dropout=dropout).train(train)
    lengths = torch.tensor([10, 4, 0, 7, 1, 10, 3])
    x = torch.randn(7, 10, 12, requires_grad=True)
    mask = torch.arange(10)[None, :] < lengths[:, None]
    x_padding = x.detach().clone()
    x_padding[~mask] = 5.0  # whatever sits in the padding is never read
    torch.manual_seed(3)
    expected = packed_reference(module, x, lengths)
    expected_grad = torch.autograd.grad(expected.square().sum(), x)[0]
    torch.manual_seed(3)  # the same random numbers: the same dropout masks
    got = module(x, mask)
    got_grad = torch.autograd.grad(got.square().sum(), x)[0]
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got_grad, expected_grad, atol=1e-5, rtol=1e-4)
    torch.manual_seed(3)
    torch.testing.assert_close(module(x_padding, mask), expected.detach(), atol=1e-6, rtol=1e-5)
    assert not got[~mask].any()


@pytest.mark.parametrize("lengths", [[10, 4, 0, 7, 1], [10, 10, 10, 10, 10]])
def test_last_states_are_the_packed_state_at_each_last_step(lengths):
    torch.manual_seed(0)
    module = PackedLSTM(12, 8)
    lengths = torch.tensor(lengths)
    x = torch.randn(5, 10, 12)
    mask = torch.arange(10)[None, :] < lengths[:, None]
    expected = packed_reference(module, x, lengths)[torch.arange(5), (lengths - 1).clamp(min=0)]
    torch.testing.assert_close(module.last_states(x, mask), expected, atol=1e-6, rtol=1e-5)
    states = module(x, mask, zero_padding=False)
    torch.testing.assert_close(states[mask], module(x, mask)[mask])
    with pytest.raises(ValueError, match="unidirectional"):
        PackedLSTM(12, 8, bidirectional=True).last_states(x, mask)
