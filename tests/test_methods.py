"""The common conformance suite: the same checks over every registered method.

Parametrised over :func:`imsa.methods.list_methods`, so a method added later is checked
without touching this file. Every method is fitted tiny (a few epochs on a few dozen
utterances) on four small data sets: regression, three classes, two modalities only, and
time sequences. Fits are cached per (method, data, seed) for the whole module.
"""

from __future__ import annotations

import copy
import dataclasses
import io

import numpy as np
import pytest
import torch

from imsa.training import RunContext
from imsa.data.batch import iterate_batches
from imsa.data.dataset import Dataset
from imsa.data.registry import load_dataset
from imsa.errors import ConfigError, NotFittedError
from imsa.methods import TrainConfig, create_method, list_methods, method_class
from imsa.methods.base import task_loss
from imsa.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS
from imsa.missing import fixed_conditions
from imsa.protocols import Protocol

METHODS = list_methods()

# Shared tiny settings; every method must accept them.
TINY = {"epochs": 3, "batch_size": 16}
# Method-specific overrides that make a method tiny, by registry name. The default path
# is the generic one: a method needs an entry here only if TINY alone is too slow.
TINY_OVERRIDES: dict[str, dict] = {
    "momke": {"stage1_epochs": 1, "dim": 16, "depth": 1, "heads": 2, "lr": 1e-3, "dropout": 0.1},
    "cmad": {"teacher_epochs": 1, "dim": 16, "depth": 1, "num_latents": 2, "heads": 2, "dim_head": 8, "fusion_heads": 2, "fusion_ffn": 32, "lr": 1e-3, "begin_epoch": 1},
}
# Settings for the learning test where a method has phases that need their own epochs.
LEARNING_OVERRIDES: dict[str, dict] = {
    "momke": {"stage1_epochs": 5},
    # MAR's weights (from epoch 15) scale the loss up by design; the loss must fall before them.
    "cmad": {"teacher_epochs": 30, "epochs": 30, "lr": 1e-3, "fusion_dropout": 0.0, "head_dropout": 0.0, "begin_epoch": 15},
}
# Parameter-name parts that a method documents as receiving no gradient from its final
# task loss (frozen encoders, modules trained only by an earlier phase's loss).
NO_TASK_GRADIENT: dict[str, tuple[str, ...]] = {"momke": ("unimodal_heads",)}

VARIANTS = ("regression", "classification", "two_modalities", "sequence")


def tiny_method(name: str, **overrides):
    return create_method(name, {**TINY, **TINY_OVERRIDES.get(name, {}), **overrides})


@pytest.fixture(scope="module")
def datasets(synthetic, synthetic_la) -> dict[str, Dataset]:
    small = dict(num_videos=20, min_utterances=3, max_utterances=6, seed=0)
    return {
        "regression": synthetic,
        "classification": load_dataset("synthetic", num_classes=3, **small),
        "two_modalities": synthetic_la,
        "sequence": load_dataset("synthetic", sequence_length=4, **small),
    }


@pytest.fixture(scope="module")
def fitted(datasets):
    """``fitted(name, variant, seed=0)``: a tiny fitted method, fitted once per module."""
    cache = {}

    def get(name: str, variant: str, seed: int = 0):
        key = (name, variant, seed)
        if key not in cache:
            split = datasets[variant].split(0)
            cache[key] = tiny_method(name).fit(split["train"], split["valid"], seed=seed)
        return cache[key]

    return get


def test_registry_is_not_empty():
    assert METHODS, "no method is registered"
    for name in METHODS:
        assert method_class(name).name == name


def condition_masks(dataset: Dataset, shape) -> dict[str, torch.Tensor]:
    """Condition name -> present mask broadcast to a batch's ``present`` shape."""
    return {
        c.name: torch.from_numpy(np.broadcast_to(c.mask(dataset.modalities), shape).copy())
        for c in fixed_conditions(dataset.modalities)
    }


def batches_of(method, subset, size: int = 16):
    return list(iterate_batches(subset, size, level=method.level))


def expected_shape(batch, dataset: Dataset) -> tuple[int, ...]:
    """``(B,)`` / ``(B, C)`` at utterance level, ``(B, S[, C])`` at video level."""
    classes = () if dataset.task == "regression" else (dataset.num_classes,)
    return tuple(batch.labels.shape) + classes


def predictions(method, subset) -> dict[str, list[torch.Tensor]]:
    """Predictions under every fixed condition, batch by batch."""
    out = {}
    for batch in batches_of(method, subset):
        for name, mask in condition_masks(subset.dataset, batch.present.shape).items():
            out.setdefault(name, []).append(method.predict(batch, mask).prediction)
    return out


def assert_same_state(first: dict, second: dict):
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


# -- construction ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", METHODS)
def test_builds_from_defaults_with_a_frozen_config(name):
    method = create_method(name)
    config = method.config
    assert dataclasses.is_dataclass(config) and isinstance(config, TrainConfig)
    assert isinstance(config, method_class(name).Config)
    field = dataclasses.fields(config)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, field, getattr(config, field))
    # __init__ stores the config and nothing learned.
    assert not hasattr(method, "model_")
    assert tiny_method(name).config.epochs == TINY["epochs"]


@pytest.mark.parametrize("name", METHODS)
def test_unknown_config_key_is_an_error_naming_it(name):
    with pytest.raises(ConfigError, match="no_such_option"):
        create_method(name, no_such_option=1)
    with pytest.raises(ConfigError, match="no_such_option"):
        create_method(name, {"no_such_option": 1})


@pytest.mark.parametrize("name", METHODS)
def test_use_before_fit_raises_not_fitted(name, synthetic):
    method = create_method(name)
    test = synthetic.split(0)["test"]
    batch = next(iter(iterate_batches(test, 4, level=method.level)))
    with pytest.raises(NotFittedError):
        method.predict(batch)
    with pytest.raises(NotFittedError):
        method.evaluate(test, Protocol().settings(test))
    with pytest.raises(NotFittedError):
        method.state_dict()


# -- forward, backward -------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", METHODS)
def test_predicts_every_condition_with_the_right_shape_and_no_nan(name, variant, datasets, fitted):
    method = fitted(name, variant)
    dataset = datasets[variant]
    test = dataset.split(0)["test"]
    method.model_.train()  # predict must switch to eval mode itself (dropout off)
    out = predictions(method, test)
    assert not method.model_.training
    again = predictions(method, test)
    assert all(torch.equal(a, b) for k in out for a, b in zip(out[k], again[k])), "predict is not deterministic"
    assert list(out) == [c.name for c in fixed_conditions(dataset.modalities)]
    batches = batches_of(method, test)
    for name_, preds in out.items():
        for batch, prediction in zip(batches, preds):
            assert tuple(prediction.shape) == expected_shape(batch, dataset), name_
            assert torch.isfinite(prediction).all(), name_


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", METHODS)
def test_every_trainable_parameter_gets_a_gradient(name, variant, datasets, fitted):
    method = fitted(name, variant)
    model = copy.deepcopy(method.model_)  # keep the cached fit untouched
    model.train()
    batch = next(iter(iterate_batches(datasets[variant].split(0)["train"], 16, level=method.level)))
    assert batch.present[batch.index >= 0].all()
    # The batch under every condition at once: methods with one model per condition train them all.
    conditions = fixed_conditions(datasets[variant].modalities)
    present = torch.cat([torch.as_tensor(c.mask(batch.modalities)).expand_as(batch.present) for c in conditions])
    stacked = batch.repeat(len(conditions)).with_present(present)
    task_loss(model(stacked).prediction, stacked, datasets[variant].task).backward()
    skip = NO_TASK_GRADIENT.get(name, ())
    checked = [(pname, p) for pname, p in model.named_parameters() if p.requires_grad and not any(part in skip for part in pname.split("."))]
    assert checked, f"{name} has no trainable parameter"
    for pname, p in checked:
        assert p.grad is not None, f"{name}: {pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"
    # One tensor may sum to exactly zero (an L1 bias at the median), not all of them.
    assert any(p.grad.abs().sum() > 0 for _, p in checked)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", METHODS)
def test_features_of_a_missing_modality_change_nothing(name, variant, datasets, fitted):
    method = fitted(name, variant)
    dataset = datasets[variant]
    batch = batches_of(method, dataset.split(0)["test"])[0]
    generator = torch.Generator().manual_seed(0)
    for k, missing in enumerate(dataset.modalities):
        present = torch.ones_like(batch.present)
        present[..., k] = False
        masked = batch.with_present(present)
        before = method.predict(masked)
        x = masked.inputs[missing]
        noisy = 1e4 * torch.randn(x.shape, generator=generator) + 1e3
        perturbed = dataclasses.replace(masked, inputs={**masked.inputs, missing: noisy})
        after = method.predict(perturbed)
        assert torch.equal(before.prediction, after.prediction), f"{name}: prediction reads missing {missing!r}"
        if before.feature is not None:
            assert torch.equal(before.feature, after.feature), f"{name}: feature reads missing {missing!r}"


# -- persistence and reproducibility ---------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", METHODS)
def test_state_dict_round_trip_gives_identical_outputs(name, variant, datasets, fitted):
    method = fitted(name, variant)
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored = create_method(name).load_state_dict(torch.load(buffer, weights_only=False))
    assert restored.config == method.config
    test = datasets[variant].split(0)["test"]
    first, second = predictions(method, test), predictions(restored, test)
    for condition in first:
        for a, b in zip(first[condition], second[condition]):
            assert torch.equal(a, b), condition


@pytest.mark.parametrize("name", METHODS)
def test_fixed_seed_repeats_exactly(name, datasets, fitted):
    split = datasets["regression"].split(0)
    first = fitted(name, "regression", seed=0)
    again = tiny_method(name).fit(split["train"], split["valid"], seed=0)
    other = fitted(name, "regression", seed=1)
    assert_same_state(first.state_dict()["model"], again.state_dict()["model"])
    a, b, c = (predictions(m, split["test"]) for m in (first, again, other))
    assert all(torch.equal(x, y) for k in a for x, y in zip(a[k], b[k]))
    assert not all(torch.equal(x, z) for k in a for x, z in zip(a[k], c[k])), "another seed gives the same model"


# -- learning and evaluation -------------------------------------------------------------------


class LossRecorder:
    def __init__(self):
        self.losses: dict[str, list[float]] = {}

    def on_epoch_end(self, phase, epoch, logs):
        self.losses.setdefault(phase, []).append(logs["loss"])


@pytest.fixture(scope="module")
def learning_data():
    return load_dataset("synthetic", num_videos=40, seed=1)


@pytest.mark.parametrize("name", METHODS)
def test_a_few_epochs_learn_the_synthetic_task(name, learning_data):
    split = learning_data.split(0)
    recorder = LossRecorder()
    overrides = {"epochs": 15, "lr": 3e-3, **LEARNING_OVERRIDES.get(name, {})}
    method = tiny_method(name, **overrides).fit(split["train"], split["valid"], seed=0, context=RunContext([recorder]))
    assert recorder.losses, "fit reported no epoch"
    for phase, losses in recorder.losses.items():
        assert np.isfinite(losses).all(), phase
        assert min(losses[1:]) < losses[0], f"{name}/{phase}: training loss never fell below the first epoch's {losses}"
    test = split["test"]
    results = method.evaluate(test, Protocol().settings(test))
    full = ",".join(learning_data.modalities)
    mean_predictor_mae = float(np.mean(np.abs(test.labels - split["train"].labels.mean())))
    assert results[full]["mae"] < 0.8 * mean_predictor_mae, (results[full]["mae"], mean_predictor_mae)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", METHODS)
def test_evaluate_reports_every_condition_and_the_mean(name, variant, datasets, fitted):
    method = fitted(name, variant)
    dataset = datasets[variant]
    test = dataset.split(0)["test"]
    results = method.evaluate(test, Protocol().settings(test))
    assert list(results) == [c.name for c in fixed_conditions(dataset.modalities)] + ["mean"]
    metrics = REGRESSION_METRICS if dataset.task == "regression" else CLASSIFICATION_METRICS
    for condition, row in results.items():
        assert set(metrics) <= set(row), condition
        assert all(np.isfinite(row[k]) for k in metrics), condition
