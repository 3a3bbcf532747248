"""Properties of the missing-modality protocols in :mod:`imsa.missing`."""

import itertools
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imsa.errors import ConfigError
from imsa.missing import (
    CombinationDistribution,
    Complete,
    Condition,
    FixedCondition,
    IndependentDropout,
    RandomRate,
    condition_index,
    fixed_conditions,
    make_sampler,
    missing_rate,
    random_missing_mask,
)

CODES = ("l", "a", "v", "x")  # "x" stands for a modality outside MODALITY_ORDER
fast = settings(max_examples=60, deadline=None)

# A dataset's modality order: 1 to 4 distinct codes in any order.
modality_orders = st.integers(1, 4).flatmap(lambda m: st.permutations(CODES).map(lambda p: tuple(p[:m])))


def canonical(codes):
    return ",".join(sorted(codes, key=CODES.index))  # CODES lists known codes canonically, then "x"


# --------------------------------------------------------------------------- conditions


def test_fixed_conditions_three_and_two_modalities_in_documented_order():
    assert [c.name for c in fixed_conditions(("l", "a", "v"))] == ["l", "a", "v", "l,a", "l,v", "a,v", "l,a,v"]
    assert [c.name for c in fixed_conditions(("l", "a"))] == ["l", "a", "l,a"]
    # Order follows the dataset's positions; names stay canonical.
    assert [c.name for c in fixed_conditions(("v", "l"))] == ["v", "l", "l,v"]


@fast
@given(modality_orders)
def test_fixed_conditions_are_exactly_the_nonempty_subsets(modalities):
    conditions = fixed_conditions(modalities)
    expected = {frozenset(s) for k in range(1, len(modalities) + 1) for s in itertools.combinations(modalities, k)}
    assert len(conditions) == 2 ** len(modalities) - 1 == len(set(conditions))
    assert {frozenset(c.modalities) for c in conditions} == expected
    assert all(c.name == canonical(c.modalities) for c in conditions)
    assert [len(c.modalities) for c in conditions] == sorted(len(c.modalities) for c in conditions)


def test_fixed_condition_counts():
    assert [len(fixed_conditions(CODES[:m])) for m in (1, 2, 3, 4)] == [1, 3, 7, 15]


@fast
@given(st.permutations(CODES).flatmap(lambda p: st.integers(1, 4).map(lambda k: p[:k])), st.sampled_from(["", " ", "  "]))
def test_parse_round_trip(codes, space):
    condition = Condition.parse((space + "," + space).join(codes))
    assert condition.name == canonical(codes) == str(condition)
    assert Condition.parse(condition.name) == condition == Condition(tuple(reversed(codes)))


@pytest.mark.parametrize("text", ["", " ", "l,,a", "l,", "l,l", "a, a"])
def test_parse_rejects_empty_and_duplicate_codes(text):
    with pytest.raises(ConfigError):
        Condition.parse(text)


def test_condition_mask_aligns_to_dataset_order_and_rejects_unknown_modalities():
    assert Condition.parse("l,v").mask(("v", "a", "l")).tolist() == [True, False, True]
    with pytest.raises(ConfigError, match="'v'"):
        Condition.parse("v").mask(("l", "a"))


@fast
@given(modality_orders, st.data())
def test_condition_index_inverts_mask_construction(modalities, data):
    masks = np.stack([c.mask(modalities) for c in fixed_conditions(modalities)])
    assert condition_index(masks).tolist() == list(range(len(masks)))
    # Any batch shape, any rows.
    indices = np.array(data.draw(st.lists(st.integers(0, len(masks) - 1), min_size=6, max_size=6))).reshape(2, 3)
    assert np.array_equal(condition_index(masks[indices]), indices)


def test_condition_index_rejects_empty_rows():
    with pytest.raises(ConfigError, match="no modality"):
        condition_index(np.array([[True, False], [False, False]]))


# --------------------------------------------------------------------------- random missing rate


@fast
@given(
    n=st.integers(1, 300),
    num_modalities=st.integers(2, 4),
    rate=st.one_of(st.sampled_from([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]), st.floats(0, 0.7)),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_missing_mask_properties(n, num_modalities, rate, seed):
    present = random_missing_mask(n, num_modalities, rate, seed)
    assert present.shape == (n, num_modalities) and present.dtype == bool
    assert present.any(axis=1).all()
    if rate == 0:
        assert present.all()
    elif 1 - rate <= 1 / num_modalities:
        assert (present.sum(axis=1) == 1).all()
    elif n * num_modalities >= 100:
        assert abs(missing_rate(present) - rate) <= 0.005


def test_random_missing_mask_is_reproducible_from_a_seed():
    first = random_missing_mask(200, 3, 0.3, 7)
    assert np.array_equal(first, random_missing_mask(200, 3, 0.3, 7))
    assert np.array_equal(first, random_missing_mask(200, 3, 0.3, np.random.default_rng(7)))
    assert not np.array_equal(first, random_missing_mask(200, 3, 0.3, 8))


def test_random_missing_mask_two_and_one_modalities():
    two = random_missing_mask(500, 2, 0.3, 0)
    assert two.any(axis=1).all() and abs(missing_rate(two) - 0.3) <= 0.005
    assert (random_missing_mask(500, 2, 0.5, 0).sum(axis=1) == 1).all()  # 1 - 0.5 <= 1/2
    assert random_missing_mask(5, 1, 0.0, 0).all()
    with pytest.raises(ConfigError):
        random_missing_mask(5, 1, 0.1, 0)


def test_single_kept_modality_is_uniform():
    frequencies = random_missing_mask(30_000, 3, 0.7, 1).mean(axis=0)
    assert np.all(np.abs(frequencies - 1 / 3) < 4 * np.sqrt(2 / 9 / 30_000))


# --------------------------------------------------------------------------- training samplers


def assert_condition_frequencies(present, modalities, expected):
    """Each condition's frequency lies within 4 standard errors of its probability."""
    n = len(present)
    counts = np.bincount(condition_index(present), minlength=len(expected)) / n
    names = [c.name for c in fixed_conditions(modalities)]
    for name, frequency in zip(names, counts):
        p = expected[name]
        assert abs(frequency - p) <= 4 * np.sqrt(p * (1 - p) / n), (name, frequency, p)


def test_cmad_frequencies():
    modalities = ("l", "a", "v")
    present = CombinationDistribution.cmad().sample(140_000, modalities, np.random.default_rng(0))
    expected = {"l": 2, "a": 3, "v": 3, "l,a": 1, "l,v": 1, "a,v": 3, "l,a,v": 1}
    assert_condition_frequencies(present, modalities, {k: w / 14 for k, w in expected.items()})


@pytest.mark.parametrize("modalities", [("l", "a", "v"), ("a", "l")])
@pytest.mark.parametrize("explicit", [True, False])
def test_uniform_frequencies(modalities, explicit):
    sampler = CombinationDistribution.uniform(modalities if explicit else None)
    present = sampler.sample(140_000, modalities, np.random.default_rng(1))
    names = [c.name for c in fixed_conditions(modalities)]
    assert_condition_frequencies(present, modalities, {name: 1 / len(names) for name in names})


def test_combination_distribution_normalises_and_checks_availability():
    assert CombinationDistribution({"a,l": 1, "v": 3}).weights == {"l,a": 0.25, "v": 0.75}
    with pytest.raises(ConfigError, match="'v'"):
        CombinationDistribution.cmad().sample(10, ("l", "a"), np.random.default_rng(0))


@fast
@given(p=st.floats(0, 0.99), modalities=modality_orders, seed=st.integers(0, 1000))
def test_independent_dropout_never_empties_a_row(p, modalities, seed):
    present = IndependentDropout(p).sample(200, modalities, np.random.default_rng(seed))
    assert present.shape == (200, len(modalities)) and present.any(axis=1).all()


@pytest.mark.parametrize("p", [0.05, 0.1, 0.2])
def test_independent_dropout_drops_near_p(p):
    present = IndependentDropout(p).sample(50_000, ("l", "a", "v"), np.random.default_rng(2))
    assert abs(missing_rate(present) - p) < 0.01


def test_fixed_condition_and_complete_samplers():
    rng = np.random.default_rng(0)
    assert FixedCondition(Condition.parse("a,l")).sample(4, ("l", "a", "v"), rng).tolist() == [[True, True, False]] * 4
    assert Complete().sample(3, ("l", "a"), rng).all()
    assert RandomRate(0.5).sample(100, ("l", "a", "v"), 0).any(axis=1).all()


@pytest.mark.parametrize("spec", ["complete", "uniform", "cmad", "dropout:0.3", "rate:0.5", "condition:l,a", "batch:dicmor:0.5"])
def test_make_sampler_round_trips_through_describe(spec):
    sampler = make_sampler(spec)
    assert sampler.describe() == spec
    assert make_sampler(sampler.describe()) == sampler
    hash(sampler)  # frozen: usable as a config key
    present = sampler.sample(50, ("l", "a", "v"), np.random.default_rng(0))
    assert present.shape == (50, 3) and present.any(axis=1).all()


def test_per_batch_sampler_gives_a_batch_one_pattern_with_the_inner_shares():
    sampler = make_sampler("batch:dicmor:0.4")
    rng = np.random.default_rng(0)
    batches = [sampler.sample(8, ("l", "a", "v"), rng) for _ in range(4000)]
    assert all((b == b[0]).all() for b in batches)
    kept = np.array([b[0].sum() for b in batches])
    # dicmor:0.4: two missing with probability 0.5, one missing 0.2, complete 0.3
    assert abs((kept == 1).mean() - 0.5) < 0.03 and abs((kept == 2).mean() - 0.2) < 0.03 and abs((kept == 3).mean() - 0.3) < 0.03
    with pytest.raises(ConfigError, match="whole-modality sampler"):
        make_sampler("batch:frames:0.3")


# --------------------------------------------------------------------------- invalid parameters


def message(name, owner, expected, got):
    return re.escape(f"The {name!r} parameter of {owner} must be {expected}. Got {got!r} instead.")


@pytest.mark.parametrize(
    "build, pattern",
    [
        (lambda: random_missing_mask(10, 3, 1.0, 0), message("rate", "random_missing_mask", "a float in [0, 1)", 1.0)),
        (lambda: random_missing_mask(10, 3, -0.1, 0), message("rate", "random_missing_mask", "a float in [0, 1)", -0.1)),
        (lambda: random_missing_mask(-1, 3, 0.1, 0), message("n", "random_missing_mask", "a non-negative integer", -1)),
        (lambda: random_missing_mask(10, 3, 0.1, "seed"), message("rng", "random_missing_mask", "a numpy Generator or an int seed", "seed")),
        (lambda: RandomRate(1.2), message("rate", "RandomRate", "a float in [0, 1)", 1.2)),
        (lambda: IndependentDropout(1.0), message("p", "IndependentDropout", "a float in [0, 1)", 1.0)),
        (lambda: make_sampler("dropout:1.5"), message("p", "IndependentDropout", "a float in [0, 1)", 1.5)),
        (lambda: CombinationDistribution({"l": -1}), message("weights['l']", "CombinationDistribution", "a finite non-negative number", -1)),
        (lambda: fixed_conditions(("l", "l")), message("modalities", "fixed_conditions", "a non-empty tuple of distinct modality codes", ("l", "l"))),
    ],
)
def test_invalid_parameters_raise_sklearn_style_config_errors(build, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build()


@pytest.mark.parametrize("spec", ["bogus", "dropout", "dropout:abc", "rate:", "condition", "complete:1"])
def test_make_sampler_lists_valid_forms(spec):
    with pytest.raises(ConfigError, match=r"Valid forms: complete, uniform, incomplete, cmad, dropout:<p>, rate:<r>, dicmor:<r>"):
        make_sampler(spec)
