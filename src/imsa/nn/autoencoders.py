"""Imputation blocks: MLPs, MMIN's cascade residual autoencoder, a plain autoencoder,
and the reconstruction loss counted on missing cells only."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, *, dropout: float = 0.0) -> nn.Sequential:
    """``Linear -> ReLU -> Dropout`` per hidden width, then a linear output (MMIN's ``FcClassifier``)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU(), nn.Dropout(dropout)]
        in_dim = width
    return nn.Sequential(*layers, nn.Linear(in_dim, out_dim))


def _chain(widths: Sequence[int], activation, *, last: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if last or k < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class CascadeResidualAE(nn.Module):
    """K autoencoders, each refining the input plus every earlier block's output (MMIN's ``ResidualAE``).

    ``s_1 = h``; ``z_k = Enc_k(s_k)``; ``s_{k+1} = s_k + Dec_k(z_k)``; the output is
    ``T(s_{K+1})`` with the transition ``T = Linear -> ReLU -> Linear``. Encoders are
    ``Linear -> LeakyReLU`` down ``layers`` (no activation after the last), decoders
    ``Linear -> ReLU`` back up (none after the last); block K's decoder is ``last_decoder``.

    ``forward(h)`` returns ``(output, latents)``, the latents ``[z_1; ...; z_K]``.
    """

    def __init__(self, dim: int, layers: Sequence[int] = (256, 128, 64), blocks: int = 5):
        super().__init__()
        widths = (dim, *layers)
        self.encoders = nn.ModuleList(_chain(widths, lambda: nn.LeakyReLU(0.01), last=False) for _ in range(blocks))
        # the last block's decoder apart: only the output, never the latents, depends on it
        self.decoders = nn.ModuleList(_chain(widths[::-1], nn.ReLU, last=False) for _ in range(blocks - 1))
        self.last_decoder = _chain(widths[::-1], nn.ReLU, last=False)
        self.transition = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state, latents = h, []
        for encoder, decoder in zip(self.encoders, [*self.decoders, self.last_decoder]):
            z = encoder(state)
            latents.append(z)
            state = state + decoder(z)
        return self.transition(state), torch.cat(latents, dim=-1)


class PlainAE(nn.Module):
    """One autoencoder: ``Linear -> LeakyReLU`` down ``layers``, back up with LeakyReLU and a
    final ``Linear -> ReLU`` (MMIN's ``SimpleFcAE``). ``forward(h)`` returns ``(output, latent)``."""

    def __init__(self, dim: int, layers: Sequence[int] = (256, 128)):
        super().__init__()
        widths = (dim, *layers)
        self.encoder = _chain(widths, lambda: nn.LeakyReLU(0.01), last=True)
        back = widths[::-1]
        self.decoder = nn.Sequential(_chain(back[:-1], lambda: nn.LeakyReLU(0.01), last=True), nn.Linear(back[-2], back[-1]), nn.ReLU())

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(h)
        return self.decoder(z), z


def missing_reconstruction_loss(
    reconstruction: torch.Tensor, target: torch.Tensor, dims: Sequence[int], missing: torch.Tensor, real: torch.Tensor, *, reduction: str = "mean"
) -> torch.Tensor:
    """Squared reconstruction error of the missing cells, each modality's divided by its width.

    Parameters
    ----------
    reconstruction, target : Tensor
        ``(..., sum(dims))``: modalities concatenated in the order of ``dims``.
    dims : sequence of int
    missing : Tensor
        bool ``(..., M)``: the cells whose error counts (present cells never do).
    real : Tensor
        bool ``(...)``: real utterances (padding never counts).
    reduction : {"mean", "sum"}
        ``"mean"``: divided by the number of real utterances (GCNet's completion loss,
        which is 0 when nothing is missing); ``"sum"``: summed over the batch (the AE and
        CRA baselines of GCNet's repository).
    """
    errors = torch.stack([(r - t).pow(2).mean(-1) for r, t in zip(reconstruction.split(list(dims), -1), target.split(list(dims), -1))], dim=-1)
    counted = (missing & real.unsqueeze(-1)).to(errors.dtype)
    total = (errors * counted).sum()
    if reduction == "sum":
        return total
    return total / real.sum().clamp(min=1)


def init_weights(module: nn.Module, scheme: str) -> nn.Module:
    """Re-initialise every ``Linear`` and ``Conv1d`` weight of ``module``, biases to zero.

    ``scheme``: ``"kaiming"`` (normal, fan-in, a = 0) or ``"normal:STD"`` (N(0, STD)),
    MMIN's two schemes; ``"pytorch"`` leaves the defaults. Recurrent layers keep theirs.
    """
    kind, _, argument = scheme.partition(":")
    if kind == "pytorch" and not argument:
        return module
    if kind not in ("kaiming", "normal") or (kind == "normal") != bool(argument):
        raise ValueError(f"Unknown initialisation {scheme!r}; use kaiming, normal:STD (e.g. normal:0.02) or pytorch.")
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv1d)):
            if kind == "kaiming":
                nn.init.kaiming_normal_(layer.weight, a=0, mode="fan_in")
            else:
                nn.init.normal_(layer.weight, 0.0, float(argument))
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module
