"""Perceiver blocks with a padding mask.

Jaegle et al., "Perceiver: General Perception with Iterative Attention", ICML 2021.
Written after lucidrains/perceiver-pytorch (PreNorm, GEGLU, Attention, FeedForward),
with one difference that matters for padded batches: cross-attention takes a key
mask, so padded positions never reach the latents.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Dropout


class PreNorm(nn.Module):
    """``fn(LayerNorm(x), context=LayerNorm(context))``: pre-normalisation of queries and context."""

    def __init__(self, dim: int, fn: nn.Module, *, context_dim: int | None = None):
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim) if context_dim is not None else None

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.norm_context is not None:
            kwargs["context"] = self.norm_context(kwargs["context"])
        return self.fn(self.norm(x), **kwargs)


class GEGLU(nn.Module):
    """``a * gelu(gate)`` for ``a, gate`` the two halves of the last axis."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    """``Linear(dim, 2 * mult * dim) -> GEGLU -> Linear(mult * dim, dim)``."""

    def __init__(self, dim: int, *, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim * mult * 2), GEGLU(), nn.Linear(dim * mult, dim), Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Attention(nn.Module):
    """Multi-head attention of ``x`` over ``context`` (itself by default); bias-free q, k, v.

    Parameters
    ----------
    query_dim : int
    context_dim : int, optional
        Width of the context (default: ``query_dim``).
    heads, dim_head : int
    dropout : float
        On the attention weights.
    """

    def __init__(self, query_dim: int, *, context_dim: int | None = None, heads: int = 8, dim_head: int = 64, dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.dropout = dropout
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim or query_dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, query_dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, N, Dq), ``context`` (B, T, Dc), ``mask`` (B, T) bool, True at real positions -> (B, N, Dq).

        A row whose mask has no True position attends to all its positions rather than
        producing NaN (its context is all padding; the caller decides what it means).
        """
        context = x if context is None else context
        b, n, _ = x.shape
        split = lambda t: t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731
        q = split(self.to_q(x))
        k, v = (split(t) for t in self.to_kv(context).chunk(2, dim=-1))
        attn_mask = None
        if mask is not None:
            mask = mask | ~mask.any(-1, keepdim=True)
            attn_mask = mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class Perceiver(nn.Module):
    """Learned latents that cross-attend to a sequence, then attend to themselves; mean-pooled.

    Each of the ``depth`` layers is, with pre-normalisation and residuals:
    cross-attention (latents over the sequence), GEGLU feed-forward, latent
    self-attention, GEGLU feed-forward. The output is the LayerNorm of the mean latent.

    Parameters
    ----------
    input_dim : int
        Width of the input sequence.
    dim : int
        Width of the latents and of the output.
    depth : int
    num_latents : int
    heads, dim_head : int
        Shape of both attentions.
    ff_mult : int
        Feed-forward expansion (GEGLU hidden width ``ff_mult * dim``).
    attention_dropout, ff_dropout : float
        Dropout on the attention weights and after each feed-forward.
    """

    def __init__(
        self,
        *,
        input_dim: int,
        dim: int,
        depth: int,
        num_latents: int,
        heads: int,
        dim_head: int,
        ff_mult: int = 4,
        attention_dropout: float = 0.0,
        ff_dropout: float = 0.0,
    ):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    PreNorm(dim, Attention(dim, context_dim=input_dim, heads=heads, dim_head=dim_head, dropout=attention_dropout), context_dim=input_dim),
                    PreNorm(dim, FeedForward(dim, mult=ff_mult, dropout=ff_dropout)),
                    PreNorm(dim, Attention(dim, heads=heads, dim_head=dim_head, dropout=attention_dropout)),
                    PreNorm(dim, FeedForward(dim, mult=ff_mult, dropout=ff_dropout)),
                ]
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, data: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``data`` (B, T, input_dim), ``mask`` (B, T) bool (True at real steps) -> (B, dim)."""
        x = self.latents.expand(data.shape[0], -1, -1)
        for cross_attention, cross_ff, self_attention, self_ff in self.layers:
            x = x + cross_attention(x, context=data, mask=mask)
            x = x + cross_ff(x)
            x = x + self_attention(x)
            x = x + self_ff(x)
        return self.norm(x.mean(dim=1))
