"""Conversation graphs and the graph convolutions that run on them, in plain torch.

A batch of conversations is laid out ``(B, S)``; a node is a flat position ``b * S + s``
(padded positions are nodes with no edge, so layers may run on them and their rows
are discarded). :func:`window_graph` connects each utterance with the utterances of
its conversation within a window, typed by time (past / now / future) and by the
speaker pair, as GCNet (and DialogueGCN, MMGCN) do. Relation ids are fixed numbers,
not the order of a Python set, so a saved model means the same in any process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

PAST, NOW, FUTURE = 0, 1, 2  # temporal relation ids


@dataclass(frozen=True)
class ConversationGraph:
    """Directed edges ``source -> target`` between flat positions, with two typings.

    ``temporal``: ``PAST`` where the sender precedes the receiver, ``NOW`` for the
    self-loop, ``FUTURE`` where it follows. ``speaker``: ``num_speakers * speaker(target)
    + speaker(source)``.
    """

    source: torch.Tensor
    target: torch.Tensor
    temporal: torch.Tensor
    speaker: torch.Tensor
    num_nodes: int


def window_graph(real: torch.Tensor, window_past: int, window_future: int, speakers: torch.Tensor | None = None, num_speakers: int = 1) -> ConversationGraph:
    """Edges ``j -> i`` for every utterance j and every i of its conversation with
    ``j - window_past <= i <= j + window_future`` (self-loop included); -1 is unbounded.

    Parameters
    ----------
    real : Tensor
        bool ``(B, S)``, True at real utterances (each conversation's utterances first).
    window_past, window_future : int
    speakers : Tensor, optional
        long ``(B, S)`` speaker index per utterance (default all 0).
    num_speakers : int
        Speaker indices are below it; the speaker typing has ``num_speakers ** 2`` relations.
    """
    batch, steps = real.shape
    device = real.device
    lengths = real.sum(1)
    past = steps - 1 if window_past < 0 else min(window_past, steps - 1)
    future = steps - 1 if window_future < 0 else min(window_future, steps - 1)
    offsets = torch.arange(-past, future + 1, device=device)  # receiver position minus sender position
    sender = torch.arange(steps, device=device).view(1, steps, 1).expand(batch, steps, offsets.numel())
    receiver = sender + offsets
    limit = lengths.view(batch, 1, 1)
    keep = (sender < limit) & (receiver >= 0) & (receiver < limit)
    rows = torch.arange(batch, device=device).view(batch, 1, 1).expand_as(sender)[keep]
    sender, receiver = sender[keep], receiver[keep]
    source, target = rows * steps + sender, rows * steps + receiver
    temporal = torch.where(receiver > sender, PAST, torch.where(receiver == sender, NOW, FUTURE))
    who = torch.zeros(batch * steps, dtype=torch.long, device=device) if speakers is None else speakers.reshape(-1).long()
    return ConversationGraph(source, target, temporal, num_speakers * who[target] + who[source], batch * steps)


class RelationalGraphConv(nn.Module):
    """Relational graph convolution: ``y_i = W_root x_i + b + sum_r mean_{j -> i of type r} W_r x_j``.

    A relation with no edge into i contributes nothing. No basis decomposition.
    Weights Glorot-uniform, bias zero (PyTorch Geometric's ``RGCNConv`` with its
    defaults; parameter names and shapes match it).
    """

    def __init__(self, in_dim: int, out_dim: int, num_relations: int):
        super().__init__()
        self.num_relations = num_relations
        self.weight = nn.Parameter(torch.empty(num_relations, in_dim, out_dim))
        self.root = nn.Parameter(torch.empty(in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        for w in (self.weight, self.root):
            bound = (6.0 / (w.shape[-2] + w.shape[-1])) ** 0.5
            nn.init.uniform_(w, -bound, bound)

    def forward(self, x: torch.Tensor, source: torch.Tensor, target: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        messages = torch.einsum("ni,rio->nro", x, self.weight)[source, relation]  # (E, out)
        slot = target * self.num_relations + relation
        count = torch.zeros(n * self.num_relations, dtype=x.dtype, device=x.device).index_add_(0, slot, torch.ones_like(slot, dtype=x.dtype))
        out = x @ self.root + self.bias
        return out.index_add(0, target, messages / count[slot].unsqueeze(-1))


class GraphConv(nn.Module):
    """Sum-aggregation graph convolution: ``z_i = W_rel (sum_{j -> i} y_j) + b + W_self y_i``
    (PyTorch Geometric's ``GraphConv``; ``lin_rel`` has the bias, ``lin_root`` none)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.lin_rel = nn.Linear(in_dim, out_dim)
        self.lin_root = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        summed = torch.zeros_like(x).index_add_(0, target, x[source])
        return self.lin_rel(summed) + self.lin_root(x)


class MatchingAttention(nn.Module):
    """Each utterance attends over the real utterances of its conversation with
    tanh-bounded scores ``tanh((W q_t + b) . o_k)`` (DialogueRNN's "general2" attention)."""

    def __init__(self, dim: int):
        super().__init__()
        self.transform = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, S, D)``, ``real`` bool ``(B, S)`` -> pooled ``(B, S, D)``."""
        scores = torch.tanh(torch.einsum("bsd,bkd->bsk", self.transform(x), x))
        scores = scores.masked_fill(~real.unsqueeze(1), float("-inf"))
        return torch.softmax(scores, dim=-1) @ x  # every conversation has a real utterance
