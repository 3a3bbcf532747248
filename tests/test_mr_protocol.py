"""The MR protocol of DiCMoR, IMDer and HME: the released composition per rate, keyed draws, grids and reports."""

from __future__ import annotations

import numpy as np
import pytest

import imsa
from imsa.errors import ConfigError
from imsa.experiments.grid import grid_from_dict
from imsa.missing import MR_SHARES, DiCMoRRate, mr_mask
from imsa.protocols import MR_RATES, Protocol


@pytest.fixture(scope="module")
def test_split():
    return imsa.load_dataset("synthetic").split(0)["test"]


def bits(rows) -> list[str]:
    return ["".join("1" if b else "0" for b in row) for row in rows]


def test_reference_masks_are_pinned(test_split):
    """The keyed draws of mask seed 0 on the synthetic test split: changing them changes every published MR number."""
    masks = {r: Protocol("mr", rate=r, mask_seed=0).settings(test_split)[f"mr={r:g}"][test_split.indices] for r in (0.0, 0.3, 0.7)}
    assert len(test_split) == 172
    assert bits(masks[0.0][:8]) == ["001", "001", "100", "001", "010", "010", "100", "010"] and masks[0.0].sum() == 172
    assert bits(masks[0.3][:8]) == ["111", "111", "111", "111", "010", "010", "100", "111"] and masks[0.3].sum() == 360
    assert np.array_equal(masks[0.7], masks[0.0])  # the released table: MR 0.0 indexes its lists at -1, as 0.7 does


@pytest.mark.parametrize("rate", MR_RATES)
def test_each_rate_has_the_released_composition(rate):
    n = 1000
    present = mr_mask(n, 3, rate, np.random.default_rng(1))
    two, one = MR_SHARES[rate]
    kept = present.sum(axis=1)
    assert (kept == 1).sum() == round(two * n) and (kept == 2).sum() == round(one * n) and (kept >= 1).all()
    realised = 1 - present.mean()
    assert realised == pytest.approx(min(rate, 2 / 3) if rate else 2 / 3, abs=1e-3)  # MR up to 0.6; 2/3 at 0.7 and at 0.0
    if (kept == 1).sum() > 90:  # which modality is kept: uniform
        assert np.abs(present[kept == 1].mean(axis=0) - 1 / 3).max() < 0.08


def test_mr_masks_are_keyed_apart_from_the_random_protocol_and_repeat(test_split):
    mr = Protocol("mr", rate=0.3, mask_seed=4).settings(test_split)["mr=0.3"]
    assert np.array_equal(mr, Protocol("mr", rate=0.3, mask_seed=4).settings(test_split)["mr=0.3"])
    assert not np.array_equal(mr, Protocol("mr", rate=0.3, mask_seed=5).settings(test_split)["mr=0.3"])
    random = Protocol("random", rate=0.3, mask_seed=4).settings(test_split)["rate=0.3"]
    assert not np.array_equal(mr[test_split.indices], random[test_split.indices])
    sampler = Protocol("mr", rate=0.3).training_sampler(None)
    assert isinstance(sampler, DiCMoRRate) and sampler.rate == 0.3


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Protocol("mr"), "needs its missing rate"),
        (lambda: Protocol("mr", rate=0.25), "one of 0.0, 0.1, ..., 0.7"),
        (lambda: Protocol("mr", rate=0.8), "one of 0.0, 0.1, ..., 0.7"),
        (lambda: Protocol("mr", rate=0.3, frames=0.2), "not the mr protocol"),
        (lambda: mr_mask(10, 2, 0.3, 0), "three modalities"),
    ],
)
def test_bad_mr_settings_say_what_is_allowed(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_a_grid_runs_mr_alone_over_the_papers_rates():
    grid = grid_from_dict({"methods": ["late_fusion"], "datasets": ["synthetic"], "protocols": ["fixed", "mr"], "seeds": [1]})
    assert [p.name for p in grid.protocols] == ["fixed"] + [f"mr={r:g}" for r in MR_RATES]
    assert grid_from_dict(grid.to_dict()).protocols == grid.protocols
    with pytest.raises(ConfigError, match=r"\{0.0, 0.1, ..., 0.7\}|one of 0.0"):
        grid_from_dict({"methods": ["late_fusion"], "datasets": ["synthetic"], "protocols": [{"mr": [0.35]}], "seeds": [1]})


def test_a_method_trains_and_is_scored_under_mr(tmp_path):
    summary = imsa.run("late_fusion", "synthetic", protocol="mr", rate=0.4, folds=[0], out=tmp_path / "run", overrides={"epochs": 2})
    assert summary["protocol_label"] == "mr=0.4" and "mr=0.4" in summary["test"]
