"""Score-based diffusion for sequences (IMDer's blocks, the IMDer spec, section 3.3-3.4):
the variance-exploding SDE, denoising score matching, an Euler-Maruyama sampler that
takes its noise explicitly, and the conditional 1-D U-Net score network.

Sequences are ``(B, C, T)`` here, as the released code's convolutions want them. The
loss and the U-Net take an optional ``mask`` (bool ``(B, T)``, True at real steps, which
come first): padded steps then stay zero inside the U-Net, are hidden from its attention,
left out of its GroupNorm statistics and out of the loss, so that real steps are scored
as for the unpadded sequence. Without it every step counts, as released.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import keep_real
from .mult import TransformerEncoder


class VESDE:
    """``dx = sigma^t dw`` on t in [0, 1]: perturbation std ``sqrt((sigma^(2t) - 1) / (2 ln sigma))``,
    diffusion coefficient ``sigma^t`` (sigma 25 in IMDer)."""

    def __init__(self, sigma: float = 25.0):
        self.sigma = sigma

    def std(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((self.sigma ** (2 * t) - 1.0) / (2.0 * math.log(self.sigma)))

    def g(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma**t


def score_matching_loss(
    score: Callable,
    x0: torch.Tensor,
    condition: torch.Tensor,
    sde: VESDE,
    *,
    condition_noise: str = "shared",
    eps: float = 1e-5,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample denoising score-matching loss ``sum over (C, T) of (std(t) s(x_t, t, c_t) + z)^2``.

    ``t ~ U(eps, 1)`` per sample, ``x_t = x0 + std(t) z``; the condition is perturbed with the
    same ``z`` (``"shared"``, as released), fresh noise (``"independent"``) or not at all
    (``"none"``). Noise from torch's generator (seeded by the run). With ``mask`` the noise
    and the sum cover real steps only and ``score`` is called with ``mask=mask``.
    """
    t = torch.rand(x0.shape[0], device=x0.device, dtype=x0.dtype) * (1.0 - eps) + eps
    z = keep_real(torch.randn_like(x0), mask)
    std = sde.std(t)[:, None, None]
    if condition_noise == "shared":
        condition = condition + z * std
    elif condition_noise == "independent":
        condition = condition + torch.randn_like(condition) * std
    elif condition_noise != "none":
        raise ValueError(f"condition_noise must be shared, independent or none, got {condition_noise!r}")
    predicted = score(x0 + z * std, t, condition) if mask is None else score(x0 + z * std, t, condition, mask=mask)
    return keep_real((predicted * std + z) ** 2, mask).sum((1, 2))


def sampler_noise_shape(steps: int) -> int:
    """Standard-normal draws per sample the sampler uses, in units of one ``(C, T)`` map:
    the start, then per step the condition's and the step's."""
    return 1 + 2 * steps


@torch.no_grad()
def euler_maruyama(score: Callable, condition: torch.Tensor, sde: VESDE, noise: torch.Tensor, *, steps: int = 100, eps: float = 1e-3) -> torch.Tensor:
    """IMDer's sampler: from ``std(1) * noise[:, 0]`` over ``linspace(1, eps, steps)``, each step
    ``mean = x + g^2 s(x, t, c + std(t) n_c) dt``, ``x = mean + sqrt(dt) g n_x``; returns the last mean.

    ``noise`` is ``(B, 1 + 2 * steps, C, T)`` standard normals, given by the caller so that a
    sample depends on its own draws only (e.g. one generator per utterance).
    """
    b = condition.shape[0]
    times = torch.linspace(1.0, eps, steps, device=condition.device, dtype=condition.dtype)
    dt = times[0] - times[1] if steps > 1 else torch.tensor(1.0 - eps, device=condition.device, dtype=condition.dtype)
    x = noise[:, 0] * sde.std(torch.ones(b, device=condition.device, dtype=condition.dtype))[:, None, None]
    mean = x
    for k, time in enumerate(times):
        t = torch.full((b,), float(time), device=condition.device, dtype=condition.dtype)
        g = sde.g(t)[:, None, None]
        perturbed = condition + noise[:, 1 + 2 * k] * sde.std(t)[:, None, None]
        mean = x + g**2 * score(x, t, perturbed) * dt
        x = mean + torch.sqrt(dt) * g * noise[:, 2 + 2 * k]
    return mean


class FourierTime(nn.Module):
    """``[sin(2 pi t W), cos(2 pi t W)]`` with fixed ``W ~ N(0, scale^2)`` (a buffer: never trained)."""

    def __init__(self, dim: int, scale: float = 30.0):
        super().__init__()
        self.register_buffer("W", torch.randn(dim // 2) * scale)

    def forward(self, t):
        angles = t[:, None] * self.W[None, :] * 2 * math.pi
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def _swish(x):
    return x * torch.sigmoid(x)


def _attention(dim: int, heads: int, layers: int) -> TransformerEncoder:
    return TransformerEncoder(dim, heads, layers, causal=True)


class ScoreUNet(nn.Module):
    """IMDer's time-conditional 1-D U-Net with a linear condition stream.

    Four levels of ``channels`` (the first must equal the input width ``dim``); at every
    level a MulT cross-attention from the feature sequence to the condition stream at the
    same resolution is added to the features, then the time embedding (all but the last
    decoder level), GroupNorm (``groups[0]`` at the first encoder level, ``groups[1]``
    elsewhere) and swish. The output is divided by ``std(t)``. The length must be
    divisible by 8.
    """

    def __init__(
        self,
        dim: int,
        sde: VESDE,
        channels: Sequence[int] = (32, 64, 128, 256),
        embed_dim: int = 256,
        heads: int = 8,
        layers: int = 2,
        groups: Sequence[int] = (4, 32),
    ):
        super().__init__()
        c0, c1, c2, c3 = channels
        if c0 != dim:
            raise ValueError(f"the U-Net's first level ({c0} channels) attends to the condition, which has {dim}: they must be equal")
        self.sde = sde
        self.time = nn.Sequential(FourierTime(embed_dim), nn.Linear(embed_dim, embed_dim))

        def down(a, b):
            return nn.Conv1d(a, b, 3, stride=2, padding=1, bias=False)

        def up(a, b):
            return nn.ConvTranspose1d(a, b, 3, stride=2, padding=1, output_padding=1, bias=False)

        self.conv = nn.ModuleList([nn.Conv1d(dim, c0, 3, padding=1, bias=False), down(c0, c1), down(c1, c2), down(c2, c3)])
        self.conv_cond = nn.ModuleList([down(c0, c1), down(c1, c2), down(c2, c3)])
        self.attention = nn.ModuleList([_attention(c, heads, layers) for c in (c0, c1, c2, c3)])
        self.dense = nn.ModuleList([nn.Linear(embed_dim, c) for c in (c0, c1, c2, c3)])
        self.norm = nn.ModuleList([nn.GroupNorm(groups[0], c0), *(nn.GroupNorm(groups[1], c) for c in (c1, c2, c3))])
        self.tconv = nn.ModuleList([up(c3, c2), up(2 * c2, c1), up(2 * c1, c0), nn.ConvTranspose1d(2 * c0, dim, 3, padding=1)])
        self.tconv_cond = nn.ModuleList([up(c3, c2), up(c2, c1), up(c1, c0), nn.ConvTranspose1d(c0, dim, 3, padding=1)])
        self.tattention = nn.ModuleList([_attention(c, heads, layers) for c in (c2, c1, c0, dim)])
        self.tdense = nn.ModuleList([nn.Linear(embed_dim, c) for c in (c2, c1, c0)])
        self.tnorm = nn.ModuleList([nn.GroupNorm(groups[1], c) for c in (c2, c1, c0)])

    @staticmethod
    def _attend(block, h, condition, mask):
        return h + block(h.transpose(1, 2), condition.transpose(1, 2), mask).transpose(1, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The score of ``x`` ``(B, dim, T)`` at times ``t`` given ``condition``; ``mask``: real steps."""
        # a stride-2 level's step i is centred on step 2i of the level above
        masks = [None] * 4 if mask is None else [mask[:, :: 2**level] for level in range(4)]
        embed = _swish(self.time(t))
        skips = []
        h, condition = keep_real(x, mask), keep_real(condition, mask)
        for level in range(4):
            real = masks[level]
            h = keep_real(self.conv[level](h), real)
            if level:
                condition = keep_real(self.conv_cond[level - 1](condition), real)
            h = self._attend(self.attention[level], h, condition, real) + self.dense[level](embed)[..., None]
            h = keep_real(_swish(group_norm(self.norm[level], h, real)), real)
            skips.append(h)
        for level, real in enumerate((masks[2], masks[1], masks[0], masks[0])):
            if level:
                h = torch.cat([h, skips[3 - level]], dim=1)
            h = keep_real(self.tconv[level](h), real)
            condition = keep_real(self.tconv_cond[level](condition), real)
            h = self._attend(self.tattention[level], h, condition, real)
            if level < 3:
                h = _swish(group_norm(self.tnorm[level], h + self.tdense[level](embed)[..., None], real))
            h = keep_real(h, real)
        return h / self.sde.std(t)[:, None, None]


def group_norm(norm: nn.GroupNorm, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``norm(h)``, its statistics over the real steps of ``mask`` only where one is given."""
    if mask is None:
        return norm(h)
    b, c, t = h.shape
    grouped = h.reshape(b, norm.num_groups, c // norm.num_groups, t)
    real = mask[:, None, None, :].to(h.dtype)
    count = real.sum((2, 3), keepdim=True) * grouped.shape[2]
    mean = (grouped * real).sum((2, 3), keepdim=True) / count
    var = ((grouped - mean) ** 2 * real).sum((2, 3), keepdim=True) / count
    normed = ((grouped - mean) / torch.sqrt(var + norm.eps)).reshape(b, c, t)
    return normed * norm.weight[:, None] + norm.bias[:, None]


def pad_to_multiple(x: torch.Tensor, multiple: int = 8) -> torch.Tensor:
    """``(..., T)`` padded at the end to a length divisible by ``multiple``: with zeros, or
    with False for a bool mask."""
    if x.dtype == torch.bool:
        return F.pad(x.to(torch.uint8), (0, -x.shape[-1] % multiple)).bool()
    return F.pad(x, (0, -x.shape[-1] % multiple))
