"""Evaluation protocols: the settings each protocol scores, and their reproducibility."""

import numpy as np
import pytest

from imsa.errors import ConfigError
from imsa.missing import make_sampler, missing_rate
from imsa.protocols import Protocol


def test_fixed_protocol_scores_every_nonempty_subset_in_canonical_order(synthetic):
    test = synthetic.split(0)["test"]
    settings = Protocol("fixed").settings(test)
    assert list(settings) == ["l", "a", "v", "l,a", "l,v", "a,v", "l,a,v"]
    assert np.array_equal(settings["a,v"][0], [False, True, True])
    assert all(s.shape == (len(synthetic), 3) for s in settings.values())


def test_fixed_protocol_with_two_modalities_has_three_conditions(synthetic_la):
    assert list(Protocol("fixed").settings(synthetic_la.split(0)["test"])) == ["l", "a", "l,a"]


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3, 0.5, 0.6])
def test_random_protocol_masks_are_reproducible_and_hit_the_rate(rate):
    from imsa.data.registry import load_dataset

    data = load_dataset("synthetic", num_videos=60, seed=3)
    test = data.split(0)["test"]
    first = Protocol("random", rate=rate).settings(test)
    second = Protocol("random", rate=rate).settings(test)
    (name,) = first
    assert name == f"rate={rate:g}"
    assert np.array_equal(first[name], second[name])  # two methods see identical masks
    masks = first[name][test.indices]
    assert masks.any(axis=1).all()
    assert abs(missing_rate(masks) - rate) <= 0.005
    other_seed = Protocol("random", rate=rate, mask_seed=1).settings(test)[name]
    assert rate == 0.0 or not np.array_equal(other_seed, first[name])


def test_random_protocol_draws_different_masks_per_split(synthetic):
    split = synthetic.split(0)
    valid = Protocol("random", rate=0.5).settings(split["valid"])["rate=0.5"][split["valid"].indices]
    assert valid.any(axis=1).all()
    own = make_sampler("uniform")
    assert Protocol("random", rate=0.5).training_sampler(own).rate == 0.5  # the protocol's rate replaces the method's own masks
    assert Protocol("fixed").training_sampler(own) is own


@pytest.mark.parametrize("kwargs", [{"kind": "sometimes"}, {"kind": "random", "rate": 0.9}, {"kind": "random", "rate": -0.1}])
def test_bad_protocols_are_refused(kwargs):
    with pytest.raises(ConfigError):
        Protocol(**kwargs)
