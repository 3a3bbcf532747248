"""MulT (Tsai et al., ACL 2019) as the MMSA family of codes runs it: crossmodal
transformers per target modality, a self-attention "memory" over their concatenation,
the last time step, and a residual head. DiCMoR, IMDer and the ``mult`` baseline share
it. Written batch-first; the maths is that of ``trains/subNets/transformers_encoder``
in github.com/mdswyz/IMDer and mdswyz/DiCMoR (fairseq's encoder as MulT released it):

* input ``sqrt(E) * x`` plus a fixed sinusoidal position table (sin half, then cos
  half; positions 1..T) where a step whose channel 0 is exactly 0 gets the zero row
  (fairseq's padding rule), then embedding dropout; in a crossmodal block keys and
  values are embedded the same way (each with its own dropout draw);
* pre-LayerNorm layers (the query's LayerNorm also normalises keys and values),
  attention with an optional causal mask (key j hidden from query i when j > i) and an
  optional key-padding mask (off in the released code), a ReLU feed-forward of width
  4E, and a final LayerNorm; xavier-uniform weights and zero biases.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal_table(steps: int, dim: int) -> torch.Tensor:
    """Rows 0..steps of fairseq's table; row 0 (padding) is zero."""
    half = dim // 2
    rate = math.log(10000) / (half - 1)
    angles = torch.arange(steps + 1, dtype=torch.float).unsqueeze(1) * torch.exp(torch.arange(half, dtype=torch.float) * -rate).unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(steps + 1, 1)], dim=1)
    table[0] = 0
    return table


def _xavier_linear(a: int, b: int) -> nn.Linear:
    layer = nn.Linear(a, b)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class MultiheadAttention(nn.Module):
    """Attention with one packed input projection (``in_proj_weight`` 3E x E) as MulT's code."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"the width {dim} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = _xavier_linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, query, key, value, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``query`` (Tq, B, E), ``key``/``value`` (Tk, B, E), time first as MulT's code runs
        them (the heads then split without copies); ``bias`` additive, broadcast to
        (B * heads, Tq, Tk)."""
        tq, b, e = query.shape
        weight, bias_in = self.in_proj_weight, self.in_proj_bias
        heads, size = self.heads, e // self.heads
        # one projection for the inputs that are the same tensor, as MulT's code does
        if key is query and value is query:
            q, k, v = F.linear(query, weight, bias_in).chunk(3, dim=-1)
        elif value is key:
            q = F.linear(query, weight[:e], bias_in[:e])
            k, v = F.linear(key, weight[e:], bias_in[e:]).chunk(2, dim=-1)
        else:
            q, k, v = (F.linear(x, w, c) for x, w, c in zip((query, key, value), weight.chunk(3), bias_in.chunk(3)))

        def split(x):
            return x.reshape(x.shape[0], b * heads, size).transpose(0, 1)  # (B * H, T, size)

        scores = torch.bmm(split(q * size**-0.5), split(k).transpose(1, 2))
        if bias is not None:
            scores = scores.add_(bias)  # in place: bmm keeps its inputs, not its output, for backward
        weights = F.dropout(torch.softmax(scores.float(), dim=-1).type_as(scores), self.dropout, self.training)
        out = torch.bmm(weights, split(v)).transpose(0, 1).reshape(tq, b, e)
        return self.out_proj(out)


class TransformerLayer(nn.Module):
    def __init__(self, dim: int, heads: int, *, attn_dropout: float, relu_dropout: float, res_dropout: float):
        super().__init__()
        self.attention = MultiheadAttention(dim, heads, attn_dropout)
        self.fc1, self.fc2 = _xavier_linear(dim, 4 * dim), _xavier_linear(4 * dim, dim)
        self.norms = nn.ModuleList([nn.LayerNorm(dim), nn.LayerNorm(dim)])
        self.relu_dropout, self.res_dropout = relu_dropout, res_dropout

    def forward(self, x, key=None, value=None, bias=None):
        h = self.norms[0](x)
        if key is None:
            h = self.attention(h, h, h, bias)
        else:
            source = self.norms[0](key)
            h = self.attention(h, source, source if value is key else self.norms[0](value), bias)
        x = x + F.dropout(h, self.res_dropout, self.training)
        h = F.dropout(F.relu(self.fc1(self.norms[1](x))), self.relu_dropout, self.training)
        return x + F.dropout(self.fc2(h), self.res_dropout, self.training)


class TransformerEncoder(nn.Module):
    """MulT's encoder: self-attention (``forward(x)``) or crossmodal (``forward(x, source)``).

    ``mask`` (bool ``(B, T)``, True at real steps of the attended sequence) hides padded
    keys when ``padding_mask`` is on. ``positions=False`` leaves out the sinusoidal
    positions (the input is still scaled by ``sqrt(dim)``), as some released variants do.
    """

    def __init__(
        self, dim: int, heads: int, layers: int, *, attn_dropout=0.0, relu_dropout=0.0, res_dropout=0.0, embed_dropout=0.0, causal=True, positions=True
    ):
        super().__init__()
        self.dim, self.heads, self.embed_dropout, self.causal, self.positions = dim, heads, embed_dropout, causal, positions
        self.layers = nn.ModuleList(
            TransformerLayer(dim, heads, attn_dropout=attn_dropout, relu_dropout=relu_dropout, res_dropout=res_dropout) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if not self.positions:
            return F.dropout(math.sqrt(self.dim) * x, self.embed_dropout, self.training)
        steps = x.shape[1]
        table = sinusoidal_table(steps, self.dim).to(x.device, x.dtype)
        positions = torch.where(x[..., 0] != 0, torch.arange(1, steps + 1, device=x.device), 0)
        return F.dropout(math.sqrt(self.dim) * x + table[positions], self.embed_dropout, self.training)

    def forward(self, x: torch.Tensor, source: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        tq = x.shape[1]
        tk = tq if source is None else source.shape[1]
        bias = None
        if self.causal:  # key j hidden from query i when j > i + (Tk - Tq), as fairseq's buffered mask
            hidden = torch.ones(tq, tk, dtype=torch.bool, device=x.device).triu(1 + abs(tk - tq))
            bias = torch.zeros(tq, tk, device=x.device, dtype=x.dtype).masked_fill(hidden, float("-inf"))
        if mask is not None:  # per batch row, repeated over the heads: (B * H, 1, Tk)
            padding = torch.zeros(mask.shape, device=x.device, dtype=x.dtype).masked_fill(~mask, float("-inf"))
            padding = padding.repeat_interleave(self.heads, dim=0)[:, None, :]
            bias = padding if bias is None else bias + padding
        # the layers run time first, as MulT's code: (T, B, E)
        h = self.embed(x).transpose(0, 1)
        key = value = None
        if source is not None:
            key, value = self.embed(source).transpose(0, 1), self.embed(source).transpose(0, 1)  # two dropout draws, as released
        for layer in self.layers:
            h = layer(h, key, value, bias)
        return self.norm(h).transpose(0, 1)


class Projections(nn.Module):
    """Per modality a bias-free 1-D convolution to ``dim`` channels (no padding), as MulT's
    ``proj_*``: ``(B, T, D)`` -> ``(B, T - k + 1, dim)``, with text dropout first.

    ``forward(inputs, padding, present)`` zeroes each missing modality's sequence (so its
    projection is exactly zero) and returns the projected sequences and their valid steps
    (at least one).
    """

    def __init__(self, modalities, dims: dict, dim: int, kernel: int, text_dropout: float = 0.0):
        super().__init__()
        self.modalities, self.kernel, self.text_dropout = tuple(modalities), kernel, text_dropout
        self.convs = nn.ModuleDict({m: nn.Conv1d(dims[m], dim, kernel, bias=False) for m in self.modalities})

    def forward(self, inputs: dict, padding: dict, present: torch.Tensor) -> tuple[dict, dict]:
        x, mask = {}, {}
        for k, m in enumerate(self.modalities):
            seq = inputs[m] * present[:, k].to(inputs[m].dtype)[:, None, None]
            if m == "l":
                seq = F.dropout(seq, self.text_dropout, self.training)
            x[m] = self.convs[m](seq.transpose(1, 2)).transpose(1, 2)
            valid = (padding[m].sum(1) - self.kernel + 1).clamp(min=1)
            mask[m] = torch.arange(x[m].shape[1], device=valid.device)[None] < valid[:, None]
        return x, mask


class MulT(nn.Module):
    """The MulT trunk over M >= 2 projected sequences of one length and width ``dim``.

    For each target modality: one crossmodal encoder per other modality (``layers``
    layers, width ``dim``), their outputs concatenated ((M - 1) * dim) and passed through
    a self-attention memory encoder of ``max(layers, 3)`` layers, whose last step (or the
    last real step with ``padding_mask``) is kept. The head maps the concatenation
    (M (M - 1) dim) through ``u + proj2(dropout(relu(proj1(u))))`` to ``output_dim``.

    ``attn_dropout`` maps a source modality to the attention dropout of the crossmodal
    blocks that attend to it (the released ``attn_dropout`` for text, ``attn_dropout_a``,
    ``attn_dropout_v``); the memory encoders use ``memory_attn_dropout``.
    """

    def __init__(
        self,
        modalities,
        dim: int,
        heads: int,
        layers: int,
        output_dim: int,
        *,
        attn_dropout: dict,
        memory_attn_dropout: float,
        relu_dropout=0.0,
        res_dropout=0.0,
        embed_dropout=0.0,
        output_dropout=0.0,
        causal=True,
        padding_mask=False,
    ):
        super().__init__()
        self.modalities, self.padding_mask = tuple(modalities), padding_mask
        common = dict(relu_dropout=relu_dropout, res_dropout=res_dropout, embed_dropout=embed_dropout, causal=causal)
        self.crossmodal = nn.ModuleDict(
            {
                f"{t}_with_{s}": TransformerEncoder(dim, heads, layers, attn_dropout=attn_dropout[s], **common)
                for t in self.modalities
                for s in self.modalities
                if s != t
            }
        )
        width = (len(self.modalities) - 1) * dim
        self.memory = nn.ModuleDict({t: TransformerEncoder(width, heads, max(layers, 3), attn_dropout=memory_attn_dropout, **common) for t in self.modalities})
        combined = len(self.modalities) * width
        self.proj1, self.proj2, self.out = nn.Linear(combined, combined), nn.Linear(combined, combined), nn.Linear(combined, output_dim)
        self.output_dropout = output_dropout

    def forward(self, x: dict[str, torch.Tensor], mask: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x[m]`` (B, T, dim), ``mask[m]`` bool (B, T) -> (prediction (B, output_dim), fused (B, combined))."""
        use = mask if self.padding_mask else None
        last = []
        for t in self.modalities:
            parts = [self.crossmodal[f"{t}_with_{s}"](x[t], x[s], None if use is None else use[s]) for s in self.modalities if s != t]
            h = self.memory[t](torch.cat(parts, dim=-1), mask=None if use is None else use[t])
            if use is None:
                last.append(h[:, -1])
            else:
                index = (use[t].sum(1) - 1).clamp(min=0)
                last.append(h[torch.arange(h.shape[0], device=h.device), index])
        u = torch.cat(last, dim=-1)
        fused = u + self.proj2(F.dropout(F.relu(self.proj1(u)), self.output_dropout, self.training))
        return self.out(fused), u


class MulTModel(nn.Module):
    """Projections, the MulT trunk and its head: the network of MMSA's ``MULT`` (and the
    backbone of DiCMoR and IMDer). ``attn_dropout`` gives the released three values for
    blocks attending to text (also the memories'), audio and vision.

    ``head(x, mask)`` runs the trunk on projected sequences; ``forward(inputs, padding,
    present)`` projects first. Both return ``(prediction, fused)``, the prediction squeezed
    for regression.
    """

    def __init__(
        self,
        modalities,
        dims: dict,
        output_dim: int,
        task: str,
        *,
        dim: int,
        heads: int,
        layers: int,
        kernel: int,
        attn_dropout: tuple[float, float, float],
        relu_dropout=0.0,
        res_dropout=0.0,
        embed_dropout=0.0,
        output_dropout=0.0,
        text_dropout=0.0,
        causal=True,
        padding_mask=False,
    ):
        super().__init__()
        self.task = task
        self.projections = Projections(modalities, dims, dim, kernel, text_dropout)
        by_source = dict(zip("lav", attn_dropout))
        self.mult = MulT(
            modalities,
            dim,
            heads,
            layers,
            output_dim,
            attn_dropout={m: by_source.get(m, attn_dropout[0]) for m in modalities},
            memory_attn_dropout=attn_dropout[0],
            relu_dropout=relu_dropout,
            res_dropout=res_dropout,
            embed_dropout=embed_dropout,
            output_dropout=output_dropout,
            causal=causal,
            padding_mask=padding_mask,
        )

    def head(self, x: dict, mask: dict) -> tuple[torch.Tensor, torch.Tensor]:
        prediction, fused = self.mult(x, mask)
        return (prediction.squeeze(-1) if self.task == "regression" else prediction), fused

    def forward(self, inputs: dict, padding: dict, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(*self.projections(inputs, padding, present))


def released_order(modalities, target: str) -> list[str]:
    """The modalities other than ``target`` in the order DiCMoR and IMDer concatenate two
    available ones for a missing one (l, v, a, then any other code in dataset order)."""
    rank = {m: "lva".index(m) if m in "lva" else 3 for m in modalities}
    return sorted((m for m in modalities if m != target), key=lambda m: (rank[m], list(modalities).index(m)))
