"""Losses that shape shared and private subspaces of several modalities (MISA's, after the
domain-separation networks): the central moment discrepancy, which pulls two sets of codes
towards the same distribution, and the soft orthogonality ("difference") loss, which
pushes two sets of codes apart.

Both take ``(B, H)`` codes of the same ``B`` utterances and compare them over the batch.
"""

from __future__ import annotations

import torch


def central_moment_discrepancy(x1: torch.Tensor, x2: torch.Tensor, moments: int = 5) -> torch.Tensor:
    """CMD (Zellinger et al., ICLR 2017) between the rows of ``x1`` and ``x2`` (``(B, H)`` each).

    ``‖E x1 − E x2‖₂ + Σ_{k=2..moments} ‖E (x1 − E x1)^k − E (x2 − E x2)^k‖₂``, expectations
    over the batch and norms over the ``H`` units: the published discrepancy for values in an
    interval of length 1 (its k-th term is divided by the length to the k-th power), as
    MISA's code computes it for sigmoid codes. The norm's gradient is 0 where two moments
    are equal (a plain ``sqrt`` of the summed squares would give NaN there, e.g. every
    higher moment of a batch of one).
    """
    mean1, mean2 = x1.mean(0), x2.mean(0)
    centred1, centred2 = x1 - mean1, x2 - mean2
    total = torch.linalg.vector_norm(mean1 - mean2)
    for k in range(2, moments + 1):
        total = total + torch.linalg.vector_norm(centred1.pow(k).mean(0) - centred2.pow(k).mean(0))
    return total


def soft_orthogonality(x1: torch.Tensor, x2: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The difference loss of domain-separation networks (Bousmalis et al., NeurIPS 2016) as
    MISA's code computes it: the mean squared entry of ``x̂1ᵀ x̂2`` (``(H1, H2)``).

    Each input (``(B, H)``) is centred by its batch mean and each row divided by its L2 norm
    plus ``eps``, the norm taken as a constant (detached), so the loss is the squared
    correlation of every unit of one with every unit of the other, summed over the batch and
    averaged over the unit pairs. It is 0 for a batch of one (every centred row is 0).
    """
    centred1, centred2 = x1 - x1.mean(0, keepdim=True), x2 - x2.mean(0, keepdim=True)
    unit1 = centred1 / (torch.linalg.vector_norm(centred1, dim=1, keepdim=True).detach() + eps)
    unit2 = centred2 / (torch.linalg.vector_norm(centred2, dim=1, keepdim=True).detach() + eps)
    return (unit1.t() @ unit2).pow(2).mean()
