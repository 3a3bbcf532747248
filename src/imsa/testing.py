"""The conformance checks every method must pass, public as scikit-learn's ``check_estimator``.

:func:`check_method` runs every check on a method class, registered in imsa or written
elsewhere; imsa's own test suite runs the same checks over every registered method.
Each check fits the method tiny (a few epochs on a few dozen synthetic utterances) on
four small data sets: regression, three classes, two modalities only, and time
sequences. A method says how to make itself tiny with class attributes (see
:class:`imsa.methods.Method`): ``tiny_config``, ``learning_config`` and
``no_task_gradient``.

>>> from imsa.testing import check_method
>>> check_method(MyMethod)            # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import io
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .batch import iterate_batches
from .data.dataset import Dataset
from .data.registry import load_dataset
from .errors import ConfigError, NotFittedError
from .methods.base import Method
from .methods.phase import task_loss
from .methods.spec import TrainConfig
from .metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS
from .missing import fixed_conditions
from .model_files import read_model
from .protocols import Protocol
from .training import RunContext

# Shared tiny settings; every method must accept them.
TINY = {"epochs": 3, "batch_size": 16}
VARIANTS = ("regression", "classification", "two_modalities", "sequence")


class CheckFailed(AssertionError):
    """A method does not meet the contract; the message names the method and what failed."""


def require(condition, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def text_and_audio(dataset: Dataset) -> Dataset:
    """``dataset`` with its text and audio only, for the two-modality code paths."""
    return Dataset(
        name=f"{dataset.name}-la",
        modalities=("l", "a"),
        features={m: dataset.features[m] for m in ("l", "a")},
        lengths={m: dataset.lengths[m] for m in ("l", "a") if m in dataset.lengths},
        labels=dataset.labels,
        utterance_ids=dataset.utterance_ids,
        video_ids=dataset.video_ids,
        folds=dataset.folds,
    )


class MethodChecker:
    """A method class with the small data sets and fits that the checks share (fitted once each)."""

    def __init__(self, cls: type[Method], device: str = "cpu"):
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"check_method expects a Method subclass, got {cls!r}")
        self.cls = cls
        self.context = RunContext(device=device)
        self.label = f"{cls.name or cls.__qualname__} on {self.context.device}"
        self._datasets: dict[str, Dataset] | None = None
        self._fits: dict = {}

    def create(self, **overrides) -> Method:
        """The method with the tiny settings (plus ``overrides``)."""
        return self.cls({**TINY, **self.cls.tiny_config, **overrides})

    @property
    def datasets(self) -> dict[str, Dataset]:
        if self._datasets is None:
            small = dict(num_videos=20, min_utterances=3, max_utterances=6, seed=0)
            regression = self.synthetic(**small)
            self._datasets = {
                "regression": regression,
                "classification": self.synthetic(num_classes=3, **small),
                "two_modalities": text_and_audio(regression),
                "sequence": self.synthetic(sequence_length=4, **small),
            }
        return self._datasets

    def synthetic(self, **options) -> Dataset:
        """The synthetic dataset; 4-step word-aligned sequences for a method that reads sequences only."""
        if self.cls.inputs == "sequence":
            options.setdefault("sequence_length", 4)
            options["aligned"] = True
        return load_dataset("synthetic", **options)

    def fitted(self, variant: str, seed: int = 0) -> Method:
        key = (variant, seed)
        if key not in self._fits:
            split = self.datasets[variant].split(0)
            self._fits[key] = self.create().fit(split["train"], split["valid"], seed=seed, context=self.context)
        return self._fits[key]


def _condition_masks(dataset: Dataset, shape) -> dict[str, torch.Tensor]:
    return {c.name: torch.from_numpy(np.broadcast_to(c.mask(dataset.modalities), shape).copy()) for c in fixed_conditions(dataset.modalities)}


def _batches(method: Method, subset, size: int = 16) -> list:
    return list(iterate_batches(subset, size, level=method.level))


def _predictions(method: Method, subset) -> dict[str, list[torch.Tensor]]:
    """Predictions under every fixed condition, batch by batch."""
    out: dict[str, list] = {}
    for batch in _batches(method, subset):
        for name, mask in _condition_masks(subset.dataset, batch.present.shape).items():
            out.setdefault(name, []).append(method.predict(batch, mask).prediction)
    return out


def _same_predictions(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(a, b) for k in first for a, b in zip(first[k], second[k]))


# -- the checks ------------------------------------------------------------------------------------


def check_construction(c: MethodChecker) -> None:
    """The config is a frozen dataclass extending TrainConfig; ``__init__`` learns nothing; unknown keys are refused."""
    method = c.cls()
    config = method.config
    require(
        dataclasses.is_dataclass(config) and isinstance(config, TrainConfig) and isinstance(config, c.cls.Config),
        f"{c.label}: config is not a {c.cls.Config.__qualname__} extending TrainConfig",
    )
    field = dataclasses.fields(config)[0].name
    try:
        setattr(config, field, getattr(config, field))
    except dataclasses.FrozenInstanceError:
        pass
    else:
        raise CheckFailed(f"{c.label}: its config can be changed after construction (not frozen)")
    require(not hasattr(method, "model_"), f"{c.label}: __init__ must store the config and nothing learned")
    require(c.create().config.epochs == TINY["epochs"], f"{c.label}: the config ignores overrides")
    for build in (lambda: c.cls(no_such_option=1), lambda: c.cls({"no_such_option": 1})):
        try:
            build()
        except ConfigError as e:
            require("no_such_option" in str(e), f"{c.label}: the error for an unknown key does not name it: {e}")
        else:
            raise CheckFailed(f"{c.label}: an unknown config key is accepted")


def check_not_fitted(c: MethodChecker) -> None:
    """predict, evaluate and state_dict before fit raise NotFittedError."""
    method = c.cls()
    test = c.datasets["regression"].split(0)["test"]
    batch = _batches(method, test, 4)[0]
    for name, call in (
        ("predict", lambda: method.predict(batch)),
        ("evaluate", lambda: method.evaluate(test, Protocol().settings(test))),
        ("state_dict", method.state_dict),
    ):
        try:
            call()
        except NotFittedError:
            continue
        raise CheckFailed(f"{c.label}: {name} before fit does not raise NotFittedError")


def check_predictions(c: MethodChecker) -> None:
    """Every condition predicts, in eval mode, deterministically, with the right shape and no NaN."""
    for variant in VARIANTS:
        method, dataset = c.fitted(variant), c.datasets[variant]
        test = dataset.split(0)["test"]
        method.model_.train()  # predict must switch to eval mode itself (dropout off)
        out = _predictions(method, test)
        require(not method.model_.training, f"{c.label}/{variant}: predict leaves the model in train mode")
        require(_same_predictions(out, _predictions(method, test)), f"{c.label}/{variant}: predict is not deterministic")
        require(list(out) == [k.name for k in fixed_conditions(dataset.modalities)], f"{c.label}/{variant}: conditions {list(out)}")
        classes = () if dataset.task == "regression" else (dataset.num_classes,)
        for condition, preds in out.items():
            for batch, prediction in zip(_batches(method, test), preds):
                expected = tuple(batch.labels.shape) + classes
                require(
                    tuple(prediction.shape) == expected, f"{c.label}/{variant}/{condition}: prediction shape {tuple(prediction.shape)}, expected {expected}"
                )
                require(torch.isfinite(prediction).all(), f"{c.label}/{variant}/{condition}: non-finite prediction")


def check_gradients(c: MethodChecker) -> None:
    """Every trainable parameter (but those the method names in ``no_task_gradient``) gets a finite gradient."""
    for variant in VARIANTS:
        dataset = c.datasets[variant]
        method = c.fitted(variant)
        model = copy.deepcopy(method.model_)  # keep the cached fit untouched
        model.train()
        batch = _batches(method, dataset.split(0)["train"])[0]
        # The batch under every condition at once: methods with one model per condition train them all.
        conditions = fixed_conditions(dataset.modalities)
        present = torch.cat([torch.as_tensor(k.mask(batch.modalities)).expand_as(batch.present) for k in conditions])
        stacked = batch.repeat(len(conditions)).with_present(present)
        task_loss(model(stacked).prediction, stacked, dataset.task).backward()
        skip = c.cls.no_task_gradient
        checked = [(name, p) for name, p in model.named_parameters() if p.requires_grad and not any(part in skip for part in name.split("."))]
        require(checked, f"{c.label}: no trainable parameter")
        for name, p in checked:
            require(p.grad is not None, f"{c.label}/{variant}: {name} gets no gradient")
            require(torch.isfinite(p.grad).all(), f"{c.label}/{variant}: {name} has a non-finite gradient")
        # One tensor may sum to exactly zero (an L1 bias at the median), not all of them.
        require(any(p.grad.abs().sum() > 0 for _, p in checked), f"{c.label}/{variant}: every gradient is zero")


def check_missing_modality_is_not_read(c: MethodChecker) -> None:
    """Huge noise in the features of a missing modality changes neither prediction nor feature."""
    generator = torch.Generator().manual_seed(0)
    for variant in VARIANTS:
        method, dataset = c.fitted(variant), c.datasets[variant]
        batch = _batches(method, dataset.split(0)["test"])[0]
        for k, missing in enumerate(dataset.modalities):
            present = torch.ones_like(batch.present)
            present[..., k] = False
            masked = batch.with_present(present)
            before = method.predict(masked)
            noisy = 1e4 * torch.randn(masked.inputs[missing].shape, generator=generator) + 1e3
            after = method.predict(dataclasses.replace(masked, inputs={**masked.inputs, missing: noisy}))
            require(torch.equal(before.prediction, after.prediction), f"{c.label}/{variant}: the prediction reads missing modality {missing!r}")
            if before.feature is not None:
                require(torch.equal(before.feature, after.feature), f"{c.label}/{variant}: the feature reads missing modality {missing!r}")


def check_frame_masks_are_not_read(c: MethodChecker) -> None:
    """Under frame-level missing, changing ``frame_present`` alone (the inputs as they are)
    changes no prediction: the masks are for training losses only."""
    if "frames" not in c.cls.protocols:
        return
    method, dataset = c.fitted("sequence"), c.datasets["sequence"]
    batch = _batches(method, dataset.split(0)["test"])[0]
    generator = torch.Generator().manual_seed(0)
    dropped = batch.with_frames({m: torch.rand(p.shape, generator=generator) > 0.5 for m, p in batch.padding.items()})
    before = method.predict(dropped)
    flipped = dataclasses.replace(dropped, frame_present={m: ~k for m, k in dropped.frame_present.items()})
    after = method.predict(flipped)
    require(torch.equal(before.prediction, after.prediction), f"{c.label}: the prediction reads the frame masks")


def check_state_dict_round_trip(c: MethodChecker) -> None:
    """A saved state loads without unpickling code (weights_only, and as a safetensors model file) into identical predictions."""
    for variant in VARIANTS:
        method = c.fitted(variant)
        buffer = io.BytesIO()
        torch.save(method.state_dict(), buffer)
        buffer.seek(0)
        restored = c.cls().load_state_dict(torch.load(buffer, weights_only=True))
        with tempfile.TemporaryDirectory() as folder:
            from_file = c.cls().load_state_dict(read_model(method.save(Path(folder) / "model"))[0])
        test = c.datasets[variant].split(0)["test"]
        expected = _predictions(method, test)
        for how, other in (("state_dict", restored), ("model file", from_file)):
            require(other.config == method.config, f"{c.label}/{variant}: the config restored from its {how} differs")
            require(_same_predictions(expected, _predictions(other, test)), f"{c.label}/{variant}: the method restored from its {how} predicts differently")


def check_seed_repeats(c: MethodChecker) -> None:
    """The same seed gives the same model bit for bit; another seed another model."""
    split = c.datasets["regression"].split(0)
    first = c.fitted("regression", seed=0)
    again = c.create().fit(split["train"], split["valid"], seed=0, context=c.context)
    other = c.fitted("regression", seed=1)
    a, b = first.state_dict()["model"], again.state_dict()["model"]
    require(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{c.label}: the same seed gives another model")
    p = _predictions(first, split["test"])
    require(_same_predictions(p, _predictions(again, split["test"])), f"{c.label}: the same seed predicts differently")
    require(not _same_predictions(p, _predictions(other, split["test"])), f"{c.label}: another seed gives the same model")


def check_evaluate(c: MethodChecker) -> None:
    """evaluate reports every fixed condition and their mean, with the task's metrics."""
    for variant in VARIANTS:
        method, dataset = c.fitted(variant), c.datasets[variant]
        test = dataset.split(0)["test"]
        results = method.evaluate(test, Protocol().settings(test))
        require(list(results) == [k.name for k in fixed_conditions(dataset.modalities)] + ["mean"], f"{c.label}/{variant}: evaluate gives {list(results)}")
        metrics = REGRESSION_METRICS if dataset.task == "regression" else CLASSIFICATION_METRICS
        for condition, row in results.items():
            require(set(metrics) <= set(row), f"{c.label}/{variant}/{condition}: metrics {sorted(row)}")


class _LossRecorder:
    def __init__(self):
        self.losses: dict[str, list[float]] = {}

    def on_epoch_end(self, phase, epoch, logs):
        self.losses.setdefault(phase, []).append(logs["loss"])


def check_learning(c: MethodChecker) -> None:
    """A few epochs lower every phase's training loss and beat the mean predictor's test MAE by 20 %."""
    data = c.synthetic(num_videos=40, seed=1)
    split = data.split(0)
    recorder = _LossRecorder()
    method = c.create(**{"epochs": 15, "lr": 3e-3, **c.cls.learning_config}).fit(
        split["train"], split["valid"], seed=0, context=dataclasses.replace(c.context, callbacks=[recorder])
    )
    require(recorder.losses, f"{c.label}: fit reported no epoch to its callbacks")
    for phase, losses in recorder.losses.items():
        require(np.isfinite(losses).all(), f"{c.label}/{phase}: non-finite training loss")
        require(min(losses[1:]) < losses[0], f"{c.label}/{phase}: training loss never fell below the first epoch's {losses}")
    test = split["test"]
    mae = method.evaluate(test, Protocol().settings(test))[",".join(data.modalities)]["mae"]
    baseline = float(np.mean(np.abs(test.labels - split["train"].labels.mean())))
    require(mae < 0.8 * baseline, f"{c.label}: test MAE {mae:.3f} with every modality, the mean predictor's {baseline:.3f}")


def check_protocols(c: MethodChecker) -> None:
    """Trained and scored with modalities missing, frames dropped inside the present ones
    (where the method takes frame-level missing) and channels erased, the model's weights
    and scores are finite (one fit composing the protocols, for the suite's time)."""
    frames = 0.6 if "frames" in c.cls.protocols else 0.0
    protocol = Protocol("random", rate=0.5, frames=frames, noise="erase:0.5")
    split = c.datasets["sequence"].split(0)
    method = c.create().fit(split["train"], split["valid"], protocol=protocol, seed=0, context=c.context)
    weights = method.state_dict()["model"]
    require(all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point()), f"{c.label}/{protocol.name}: non-finite weights after training")
    scores = method.evaluate(split["test"], protocol.settings(split["test"]))
    require(all(np.isfinite(row["mae"]) for row in scores.values()), f"{c.label}/{protocol.name}: non-finite test MAE {scores}")


def check_device(c: MethodChecker) -> None:
    """Every parameter and buffer of the fitted models, and every tensor of the batches they train on, is on the run's device."""
    import imsa.methods.phase as base

    device, wrong = c.context.torch_device, []
    train = base.run_training

    def watching(model, optimizer, *, batches, **kwargs):
        def watched(epoch):
            for batch in batches(epoch):
                tensors = {
                    "present": batch.present,
                    "labels": batch.labels,
                    "index": batch.index,
                    **batch.inputs,
                    **{f"padding {m}": t for m, t in batch.padding.items()},
                }
                wrong.extend(f"batch {name} on {t.device}" for name, t in tensors.items() if t.device != device)
                yield batch

        return train(model, optimizer, batches=watched, **kwargs)

    split = c.datasets["sequence"].split(0)
    base.run_training = watching
    try:
        method = c.create().fit(split["train"], split["valid"], seed=0, context=c.context)
    finally:
        base.run_training = train
    for attribute, module in vars(method).items():
        if isinstance(module, torch.nn.Module):
            for name, t in [*module.named_parameters(), *module.named_buffers()]:
                if t.device != device:
                    wrong.append(f"{attribute}.{name} on {t.device}")
    require(not wrong, f"{c.label}: not on {device}: {', '.join(sorted(set(wrong))[:5])}")


CHECKS: dict[str, Callable[[MethodChecker], None]] = {
    check.__name__.removeprefix("check_"): check
    for check in (
        check_construction,
        check_not_fitted,
        check_predictions,
        check_gradients,
        check_missing_modality_is_not_read,
        check_frame_masks_are_not_read,
        check_state_dict_round_trip,
        check_seed_repeats,
        check_evaluate,
        check_learning,
        check_protocols,
        check_device,
    )
}


def check_method(cls: type[Method], checks=None, *, device: str = "cpu") -> None:
    """Run the conformance checks on a method class.

    Parameters
    ----------
    cls : type
        A :class:`~imsa.methods.Method` subclass (registered or not).
    checks : iterable of str, optional
        Names from :data:`CHECKS` (default: all).
    device : str
        Where the method trains and predicts (``cpu``, ``cuda:0``, ...).

    Raises
    ------
    CheckFailed
        At the first failed check, naming the method, the data variant and what failed.
    """
    checker = MethodChecker(cls, device)
    for name in checks or CHECKS:
        if name not in CHECKS:
            raise ConfigError(f"Unknown check {name!r}. Valid checks: {', '.join(CHECKS)}.")
        CHECKS[name](checker)
