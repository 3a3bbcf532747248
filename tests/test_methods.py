"""The conformance suite (:mod:`imsa.testing`) over every registered method.

Parametrised over :func:`imsa.methods.list_methods`, so a method added later is checked
without touching this file; each method tunes its tiny settings on its own class. The
suite is public: ``imsa.testing.check_method(MyMethod)`` runs it on a method written
outside imsa. Fits are shared per method for the whole module.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from imsa.methods import list_methods, method_class
from imsa.methods.common import SinglePhaseMethod, pooled
from imsa.methods.spec import DataSpec, Output, TrainConfig
from imsa.testing import CHECKS, CheckFailed, MethodChecker, check_method

METHODS = list_methods()


@pytest.fixture(scope="module")
def checkers():
    return {name: MethodChecker(method_class(name)) for name in METHODS}


def test_registry_is_not_empty():
    assert METHODS, "no method is registered"
    for name in METHODS:
        assert method_class(name).name == name


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("name", METHODS)
def test_conformance(name, check, checkers):
    CHECKS[check](checkers[name])


# -- the suite fails methods that break the contract ---------------------------------------------


class SumNet(nn.Module):
    """Sums every modality's features, present or not: reads what it must not."""

    def __init__(self, spec: DataSpec):
        super().__init__()
        self.modalities = spec.modalities
        self.heads = nn.ModuleDict({m: nn.Linear(spec.dims[m], 1) for m in spec.modalities})

    def forward(self, batch) -> Output:
        prediction = sum(self.heads[m](pooled(batch, m)).squeeze(-1) for m in self.modalities)
        return Output(prediction)


@dataclass(frozen=True)
class SumConfig(TrainConfig):
    epochs: int = 3


class ReadsMissingModalities(SinglePhaseMethod):
    """Not registered: a method written outside imsa, as a user would."""

    Config = SumConfig

    def build(self, spec):
        return SumNet(spec)


def test_check_method_fails_a_method_that_reads_missing_modalities():
    check_method(ReadsMissingModalities, checks=["construction", "not_fitted"])  # what it does right passes
    with pytest.raises(CheckFailed, match="reads missing modality 'l'"):
        check_method(ReadsMissingModalities, checks=["missing_modality_is_not_read"])


def test_check_method_refuses_what_is_not_a_method():
    with pytest.raises(TypeError, match="Method subclass"):
        check_method(torch.nn.Linear)
