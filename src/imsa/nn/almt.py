"""The token transformers of ALMT (EMNLP 2023), used by ``imsa.methods.almt`` and by LNLN
(NeurIPS 2024), which reuses them.

Pre-norm layers whose attention normalises query, key and value inputs with three
separate LayerNorms; a transformer that prepends learned tokens and adds a learned
positional table (the "prefix" transformer summarising a sequence into its first tokens);
a cross transformer that updates a target sequence from a fixed source; and the
hyper-modality layer, where a dominant feature queries every auxiliary modality. Shapes
and initialisations as in the LNLN spec, section 3.1 (written from Haoyu-ha/LNLN at
80a052c): no dropout, prefix tokens zero, positional tables N(0, 1).
"""

from __future__ import annotations

import torch
from torch import nn


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention over ``heads`` heads of ``(B, N, heads * e)`` inputs;
    ``key_mask`` ``(B, N_k)`` is True at keys that may be attended."""
    b, n, inner = q.shape
    split = lambda x: x.reshape(b, x.shape[1], heads, inner // heads).transpose(1, 2)  # noqa: E731
    mask = None if key_mask is None else key_mask[:, None, None, :]
    out = nn.functional.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
    return out.transpose(1, 2).reshape(b, n, inner)


class Attention(nn.Module):
    """Multi-head attention whose query, key and value inputs each get their own LayerNorm."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm_q, self.norm_k, self.norm_v = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, inner, bias=False) for _ in range(3))
        self.out = nn.Linear(inner, dim)

    def forward(self, q, k, v, key_mask=None):
        q, k, v = self.to_q(self.norm_q(q)), self.to_k(self.norm_k(k)), self.to_v(self.norm_v(v))
        return self.out(attend(q, k, v, self.heads, key_mask))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class EncoderLayer(nn.Module):
    """Pre-norm layer: ``x + Attn(x, s, s)`` then ``x + FF(x)``; the source ``s`` is ``x``
    itself (self-attention) unless given (a cross layer, which leaves the source as is)."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int):
        super().__init__()
        self.attention = Attention(dim, heads, dim_head)
        self.feed_forward = FeedForward(dim, mlp_dim)

    def forward(self, x, source=None, key_mask=None):
        source = x if source is None else source
        x = x + self.attention(x, source, source, key_mask)
        return x + self.feed_forward(x)


class TokenTransformer(nn.Module):
    """``prefix`` learned tokens (zeros) prepended to an input of at most ``length`` steps,
    a learned positional table (N(0, ``position_std``^2), released: 1), then ``depth``
    encoder layers.

    ``forward`` returns every position, prefix first, or with ``hidden=True`` the list of
    the input after the positional table and after each layer. ``key_mask`` ``(B, n)``
    marks the input's real steps; the prefix tokens are always attended, so no row is empty.
    """

    def __init__(self, length: int, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, prefix: int = 0, position_std: float = 1.0):
        super().__init__()
        self.prefix = nn.Parameter(torch.zeros(1, prefix, dim)) if prefix else None
        self.position = nn.Parameter(position_std * torch.randn(1, length + prefix, dim))
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, dim_head, mlp_dim) for _ in range(depth))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None, hidden: bool = False, keep: int | None = None):
        """``keep``: only the first ``keep`` positions of the output are wanted, so the last
        layer computes those alone (its keys and values still span every position)."""
        if self.prefix is not None:
            x = torch.cat([self.prefix.expand(x.shape[0], -1, -1), x], dim=1)
            if key_mask is not None:
                key_mask = torch.cat([key_mask.new_ones(x.shape[0], self.prefix.shape[1]), key_mask], dim=1)
        x = x + self.position[:, : x.shape[1]]
        states = [x]
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            x = layer(x[:, :keep], source=x, key_mask=key_mask) if last and keep is not None else layer(x, key_mask=key_mask)
            states.append(x)
        if keep is not None and not self.layers:
            x = x[:, :keep]
        return states if hidden else x

    def summarise(self, x: torch.Tensor, key_mask: torch.Tensor | None, keep: int, embed: nn.Module | None = None, rows_per_group: int = 16) -> torch.Tensor:
        """The first ``keep`` output positions for a padded batch whose ``key_mask`` ``(B, n)``
        marks a prefix of real steps, computed on groups of utterances of similar length, each
        cut to its longest: the same values as ``forward(embed(x), key_mask, keep=keep)`` (a
        row never attends past its length), at a cost that follows the real lengths, not the
        padded width. ``embed``, a map of each step, is applied to the cut groups. Without
        ``key_mask`` every step is read: ``forward(embed(x), keep=keep)``."""
        if key_mask is None:
            return self(x if embed is None else embed(x), keep=keep)
        lengths = key_mask.sum(1)
        order = torch.argsort(lengths)
        sorted_lengths = lengths[order].tolist()
        pieces = []
        for start in range(0, len(order), rows_per_group):
            rows = order[start : start + rows_per_group]
            steps = max(sorted_lengths[start + len(rows) - 1], 1)
            cut = x[rows, :steps]
            pieces.append(self(cut if embed is None else embed(cut), key_mask[rows, :steps], keep=keep))
        return torch.cat(pieces)[torch.argsort(order)]


class CrossTransformer(nn.Module):
    """One learned token (zeros), shared by both, prepended to a source and a target, each with
    its own positional table (N(0, ``position_std``^2)); ``depth`` cross layers update the target from the fixed source.
    Returns the target, its token first."""

    def __init__(self, source_length: int, target_length: int, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, position_std: float = 1.0):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 1, dim))
        self.source_position = nn.Parameter(position_std * torch.randn(1, source_length + 1, dim))
        self.target_position = nn.Parameter(position_std * torch.randn(1, target_length + 1, dim))
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, dim_head, mlp_dim) for _ in range(depth))

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        token = self.token.expand(source.shape[0], -1, -1)
        source = torch.cat([token, source], dim=1) + self.source_position[:, : source.shape[1] + 1]
        target = torch.cat([token, target], dim=1) + self.target_position[:, : target.shape[1] + 1]
        for layer in self.layers:
            target = layer(target, source)
        return target


class HyperModalityLayer(nn.Module):
    """ALMT's adaptive hyper-modality layer for any number of auxiliary modalities.

    The dominant tokens query each auxiliary modality in its own attention; the outputs
    are summed, projected once, and added to the *normalised* hyper-modality tokens (as
    the released code does: ``LN(H_hyper) + W o``).
    """

    def __init__(self, dim: int, auxiliaries: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm_dominant, self.norm_hyper = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(auxiliaries))
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.ModuleList(nn.Linear(dim, inner, bias=False) for _ in range(auxiliaries))
        self.to_v = nn.ModuleList(nn.Linear(dim, inner, bias=False) for _ in range(auxiliaries))
        self.out = nn.Linear(inner, dim)

    def forward(self, dominant: torch.Tensor, auxiliaries: list[torch.Tensor], hyper: torch.Tensor) -> torch.Tensor:
        q = self.to_q(self.norm_dominant(dominant))
        summed = 0
        for x, norm, to_k, to_v in zip(auxiliaries, self.norms, self.to_k, self.to_v):
            x = norm(x)
            summed = summed + attend(q, to_k(x), to_v(x), self.heads)
        return self.norm_hyper(hyper) + self.out(summed)
