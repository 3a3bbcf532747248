"""Normalizing flows on the channel axis, class-conditional Gaussian priors, and the
flow likelihood in bits per dimension (DiCMoR's blocks, written from Glow as the
released code uses it: the DiCMoR spec, section 3.3-3.4).

A flow acts on the last axis of a ``(B, ..., C)`` tensor, the same map at every
position (a time step of a sequence, or the one vector), as Glow's 1x1 convolutions
on a ``C x T x 1`` image do. ``forward(x) -> (z, logdet per sample)``,
``inverse(z) -> x``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ZeroLinear(nn.Module):
    """Glow's ``ZeroConv2d`` as a linear map: zero weight and bias, output times ``exp(3 * scale)``."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.scale = nn.Parameter(torch.zeros(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * torch.exp(3 * self.scale)


def _per_sample(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).sum(1)


class AffineCoupling(nn.Module):
    """``b' = (b + t) * sigmoid(log_s + 2)`` with ``(log_s, t) = NN(a)``, ``(a, b)`` the channel halves."""

    def __init__(self, channels: int, hidden: int = 64):
        super().__init__()
        half = channels // 2
        first, second = nn.Linear(half, hidden), nn.Linear(hidden, hidden)
        for layer in (first, second):
            nn.init.normal_(layer.weight, 0.0, 0.05)
            nn.init.zeros_(layer.bias)
        self.net = nn.Sequential(first, nn.ReLU(), second, nn.ReLU(), ZeroLinear(hidden, 2 * (channels - half)))
        self.half = half

    def forward(self, x):
        a, b = x[..., : self.half], x[..., self.half :]
        log_s, t = self.net(a).chunk(2, dim=-1)
        s = torch.sigmoid(log_s + 2)
        return torch.cat([a, (b + t) * s], dim=-1), _per_sample(torch.log(s))

    def inverse(self, z):
        a, b = z[..., : self.half], z[..., self.half :]
        log_s, t = self.net(a).chunk(2, dim=-1)
        return torch.cat([a, b / torch.sigmoid(log_s + 2) - t], dim=-1)


class ActNorm(nn.Module):
    """Per-channel affine map initialised from the first training batch (zero mean, unit variance)."""

    def __init__(self, channels: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x):
        if self.training and not self.initialized:
            with torch.no_grad():
                flat = x.reshape(-1, x.shape[-1])
                self.loc.copy_(-flat.mean(0))
                self.log_scale.copy_(-torch.log(flat.std(0, unbiased=False) + 1e-6))
                self.initialized.fill_(True)
        positions = x[0].numel() // x.shape[-1]
        logdet = positions * self.log_scale.sum() * torch.ones(x.shape[0], device=x.device, dtype=x.dtype)
        return (x + self.loc) * torch.exp(self.log_scale), logdet

    def inverse(self, z):
        return z * torch.exp(-self.log_scale) - self.loc


class InvertibleLinear(nn.Module):
    """Glow's invertible 1x1 convolution (plain, not LU-decomposed), random orthogonal start."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.linalg.qr(torch.randn(channels, channels))[0])

    def forward(self, x):
        positions = x[0].numel() // x.shape[-1]
        logdet = positions * torch.linalg.slogdet(self.weight)[1] * torch.ones(x.shape[0], device=x.device, dtype=x.dtype)
        return x @ self.weight.T, logdet

    def inverse(self, z):
        return z @ torch.linalg.inv(self.weight).T


class Flow(nn.Module):
    """``steps`` flow steps: affine couplings only (``step="coupling"``, what DiCMoR's released
    Glow runs) or ActNorm -> invertible linear -> coupling (``step="glow"``)."""

    def __init__(self, channels: int, steps: int = 32, hidden: int = 64, step: str = "coupling"):
        super().__init__()
        if step not in ("coupling", "glow"):
            raise ValueError(f"flow step must be 'coupling' or 'glow', got {step!r}")
        layers = []
        for _ in range(steps):
            if step == "glow":
                layers += [ActNorm(channels), InvertibleLinear(channels)]
            layers.append(AffineCoupling(channels, hidden))
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, part = layer(x)
            logdet = logdet + part
        return x, logdet

    def inverse(self, z):
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z


class ClassPrior(nn.Module):
    """A diagonal Gaussian per class: ``(mu, log sigma) = bias * exp(3 * scale)``, N(0, I) at start
    (DiCMoR's zero-input ``ZeroConv2d`` priors, stored as their (bias, scale) only)."""

    def __init__(self, num_classes: int, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_classes, 2 * channels))
        self.scale = nn.Parameter(torch.zeros(num_classes, 2 * channels))

    def log_prob(self, z: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Per-sample log density of ``z`` (B, ..., C) under each sample's class prior."""
        mu, log_sigma = (self.bias * torch.exp(3 * self.scale))[classes].chunk(2, dim=-1)
        shape = (z.shape[0],) + (1,) * (z.dim() - 2) + (z.shape[-1],)
        mu, log_sigma = mu.view(shape), log_sigma.view(shape)
        return _per_sample(-0.5 * math.log(2 * math.pi) - log_sigma - (z - mu) ** 2 / (2 * torch.exp(2 * log_sigma)))


def bits_per_dim_nll(logdet: torch.Tensor, log_prob: torch.Tensor, dims: int, *, clamp: bool = True) -> torch.Tensor:
    """The batch's negative log-likelihood in bits per dimension, ``-(sum logdet + sum log p) /
    (ln 2 * B * dims)``, clamped at 0 as DiCMoR's code does (``clamp=False`` keeps the sign)."""
    value = -(logdet.sum() + log_prob.sum()) / (math.log(2) * logdet.shape[0] * dims)
    return F.relu(value) if clamp else value
