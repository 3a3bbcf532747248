"""The one training loop (:func:`imsa.training.train`) and evaluation under many settings.

Most tests drive the loop directly with a tiny linear model on the synthetic data, so each
takes milliseconds; the checkpoint tests also go through a method's ``fit``.
"""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imsa.batch import Batch, iterate_batches, tensor_cache
from imsa.errors import ConfigError, DataError
from imsa.evaluation import evaluate, predict_settings, selection_score
from imsa.methods import create_method
from imsa.metrics import compute_metrics
from imsa.missing import IndependentDropout
from imsa.protocols import Protocol
from imsa.training import RunContext, seed_everything, train


class TinyNet(nn.Module):
    """Sum of one linear read-out per modality; works on ``(B, D)`` and ``(B, S, D)`` inputs."""

    def __init__(self, dims: dict[str, int], output_dim: int = 1):
        super().__init__()
        self.output_dim = output_dim
        self.dropout = nn.Dropout(0.2)  # draws from the torch generator, which a resume must restore
        self.heads = nn.ModuleDict({m: nn.Linear(d, output_dim) for m, d in dims.items()})

    def forward(self, batch: Batch) -> torch.Tensor:
        out = sum(self.heads[m](self.dropout(batch.inputs[m])) for m in batch.modalities)
        return out.squeeze(-1) if self.output_dim == 1 else out


class Run:
    """One call of the loop on the synthetic data, with everything a test inspects."""

    def __init__(self, data, *, seed=0, lr=1e-2, reseed=True):
        if reseed:  # else the weights come from the global generator as it stands
            torch.manual_seed(seed)
        self.seed = seed
        self.split = data.split(0)
        self.model = TinyNet(data.dims)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr)
        self.batch_epochs: list[int] = []  # epochs for which batches() was called

    def batches(self, epoch):
        self.batch_epochs.append(epoch)
        rng = np.random.default_rng([self.seed, epoch])
        return iterate_batches(self.split["train"], 16, shuffle=True, rng=rng, present=IndependentDropout(0.3))

    def loss(self, batch, epoch):
        return F.l1_loss(self.model(batch), batch.labels)

    def valid_mae(self, epoch):
        valid = self.split["valid"]
        return selection_score(evaluate(self.model, valid, Protocol().settings(valid)), "mae")

    def __call__(self, *, epochs=5, score=None, maximize=False, **options):
        options.setdefault("checkpoint_interval", 0)
        return train(
            self.model,
            self.optimizer,
            epochs=epochs,
            batches=self.batches,
            loss=self.loss,
            score=score or self.valid_mae,
            maximize=maximize,
            **options,
        )


class Interrupt:
    """Callback: Ctrl-C at the end of epoch ``at``."""

    def __init__(self, at: int):
        self.at = at

    def on_epoch_end(self, phase, epoch, logs):
        if epoch == self.at:
            raise KeyboardInterrupt


class Snapshots:
    """Callback: the weights after every epoch, before selection."""

    def __init__(self, model):
        self.model = model
        self.states = []

    def on_epoch_end(self, phase, epoch, logs):
        self.states.append(copy.deepcopy(self.model.state_dict()))


def without_timing(history):
    return [{k: v for k, v in logs.items() if k != "seconds"} for logs in history]


def assert_same_state(first: dict, second: dict):
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def scripted(values):
    return lambda epoch: values[epoch]


@pytest.fixture(autouse=True)
def _restore_determinism_flags():
    # seed_everything switches on deterministic algorithms globally; give other test modules the state they had.
    enabled, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


# -- checkpoints ---------------------------------------------------------------------------------


def test_resume_after_interruption_is_bit_for_bit(synthetic, tmp_path):
    epochs, interrupted_at = 6, 3
    straight = Run(synthetic)
    expected = straight(epochs=epochs, checkpoint=tmp_path / "straight.pt")

    checkpoint = tmp_path / "interrupted.pt"
    with pytest.raises(KeyboardInterrupt):
        Run(synthetic)(epochs=epochs, checkpoint=checkpoint, callbacks=[Interrupt(interrupted_at)])
    assert checkpoint.exists()
    torch.rand(100)  # the global generator moves on between the two processes' lives
    resumed = Run(synthetic)
    result = resumed(epochs=epochs, checkpoint=checkpoint)

    # Epochs before the interrupted one come from the checkpoint; that one runs again.
    assert resumed.batch_epochs == list(range(interrupted_at, epochs))
    assert_same_state(straight.model.state_dict(), resumed.model.state_dict())
    assert_same_state(straight.optimizer.state_dict()["state"][0], resumed.optimizer.state_dict()["state"][0])
    assert without_timing(result.history) == without_timing(expected.history)
    assert (result.best_epoch, result.best_score, result.epochs_run) == (expected.best_epoch, expected.best_score, epochs)


@pytest.mark.parametrize("stopped_early", [False, True])
def test_a_finished_checkpoint_is_restored_without_training(synthetic, tmp_path, stopped_early):
    checkpoint = tmp_path / "phase.pt"
    # Stopped early, a phase is finished although epochs remain; it must not go on.
    options = dict(score=scripted([3.0, 2.0, 2.0, 2.0, 2.0, 2.0]), patience=1) if stopped_early else {}
    first = Run(synthetic)
    expected = first(epochs=6, checkpoint=checkpoint, **options)
    assert expected.stopped_early == stopped_early

    again = Run(synthetic, seed=1)  # other initial weights: all must come from the checkpoint

    def no_batches(epoch):
        raise AssertionError("a finished phase was trained again")

    again.batches = no_batches
    result = again(epochs=6, checkpoint=checkpoint, **options)
    assert_same_state(first.model.state_dict(), again.model.state_dict())
    assert result.to_dict() == expected.to_dict()
    assert not again.model.training


def test_a_method_fit_restores_its_finished_phase_from_workdir(synthetic, tmp_path):
    split = synthetic.split(0)
    first = create_method("late_fusion", epochs=2, batch_size=16).fit(split["train"], split["valid"], context=RunContext(workdir=tmp_path))
    epochs_seen = []

    class Recorder:
        def on_epoch_end(self, phase, epoch, logs):
            epochs_seen.append(epoch)

    again = create_method("late_fusion", epochs=2, batch_size=16).fit(split["train"], split["valid"], context=RunContext([Recorder()], workdir=tmp_path))
    assert epochs_seen == []
    assert_same_state(first.state_dict()["model"], again.state_dict()["model"])


def test_a_checkpoint_of_another_seed_or_config_is_refused(synthetic, tmp_path):
    split = synthetic.split(0)
    create_method("late_fusion", epochs=2, batch_size=16).fit(split["train"], split["valid"], context=RunContext(workdir=tmp_path))
    with pytest.raises(DataError, match="belongs to another run"):
        create_method("late_fusion", epochs=2, batch_size=16).fit(split["train"], split["valid"], seed=5, context=RunContext(workdir=tmp_path))
    with pytest.raises(DataError, match="belongs to another run"):
        create_method("late_fusion", epochs=2, batch_size=8).fit(split["train"], split["valid"], context=RunContext(workdir=tmp_path))


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated", "other_model"])
def test_a_damaged_checkpoint_is_a_data_error_naming_the_file(synthetic, tmp_path, damage):
    checkpoint = tmp_path / "phase.pt"
    if damage == "garbage":
        checkpoint.write_bytes(b"this is not a checkpoint" * 10)
    elif damage == "empty":
        checkpoint.write_bytes(b"")
    else:
        Run(synthetic)(epochs=2, checkpoint=checkpoint)
        if damage == "truncated":
            checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    run = Run(synthetic)
    if damage == "other_model":
        run.model = TinyNet({"l": 3})
        run.optimizer = torch.optim.AdamW(run.model.parameters())
    with pytest.raises(DataError, match="phase.pt"):
        run(epochs=2, checkpoint=checkpoint)


# -- selection and stopping ------------------------------------------------------------------------


@pytest.mark.parametrize("maximize, best", [(True, 1), (False, 3)])
def test_the_model_ends_at_the_best_validation_epoch(synthetic, maximize, best):
    scores = [0.5, 0.9, 0.7, 0.2, 0.6]
    run = Run(synthetic)
    snapshots = Snapshots(run.model)
    result = run(epochs=len(scores), score=scripted(scores), maximize=maximize, callbacks=[snapshots])
    assert (result.best_epoch, result.best_score) == (best, scores[best])
    assert_same_state(run.model.state_dict(), snapshots.states[best])
    assert not torch.equal(snapshots.states[best]["heads.l.weight"], snapshots.states[-1]["heads.l.weight"])
    improved = [logs["best"] for logs in result.history]
    expected = [True, True, False, False, False] if maximize else [True, False, False, True, False]
    assert improved == expected
    assert [logs["score"] for logs in result.history] == scores
    assert not run.model.training


def test_keep_last_leaves_the_last_epoch_and_still_reports_the_best(synthetic):
    scores = [0.5, 0.9, 0.7]
    run = Run(synthetic)
    snapshots = Snapshots(run.model)
    result = run(epochs=len(scores), score=scripted(scores), maximize=True, callbacks=[snapshots], keep_last=True)
    assert result.best_epoch == 1
    assert_same_state(run.model.state_dict(), snapshots.states[-1])
    assert not torch.equal(snapshots.states[1]["heads.l.weight"], snapshots.states[-1]["heads.l.weight"])


def test_select_from_never_selects_an_earlier_epoch(synthetic):
    scores = [0.9, 0.1, 0.5, 0.7, 0.3]
    run = Run(synthetic)
    snapshots = Snapshots(run.model)
    result = run(epochs=len(scores), score=scripted(scores), maximize=True, callbacks=[snapshots], select_from=2, patience=2)
    assert (result.best_epoch, result.best_score) == (3, 0.7)  # epoch 0 scored higher but is before select_from
    assert_same_state(run.model.state_dict(), snapshots.states[3])
    assert [logs["best"] for logs in result.history] == [False, False, True, True, False]
    assert not result.stopped_early  # the two epochs before select_from do not count towards patience


def test_keep_optimizer_state_returns_the_final_state_only_when_asked(synthetic):
    run = Run(synthetic)
    assert run(epochs=2).optimizer_state is None
    kept = run(epochs=1, keep_optimizer_state=True).optimizer_state
    current = run.optimizer.state_dict()
    assert kept["state"].keys() == current["state"].keys()
    for key, values in current["state"].items():
        for name, value in values.items():
            assert torch.equal(kept["state"][key][name], value)
            assert kept["state"][key][name] is not value  # a copy: later steps do not change it


@pytest.mark.parametrize(
    "schedule, factors",
    [
        ("constant", [1, 1, 1, 1]),
        ("cosine", [1.0, 0.5 * (1 + np.cos(np.pi / 4)), 0.5, 0.5 * (1 + np.cos(3 * np.pi / 4))]),
        ("step:1,3", [1, 0.1, 0.1, 0.01]),
    ],
)
def test_lr_schedule_sets_each_epochs_learning_rate(synthetic, schedule, factors):
    from imsa.training import lr_factor

    run, seen = Run(synthetic, lr=0.01), []

    class LearningRate:
        def on_epoch_end(self, phase, epoch, logs):
            seen.append(run.optimizer.param_groups[0]["lr"])

    run(epochs=4, lr_schedule=lr_factor(schedule, 4), callbacks=[LearningRate()])
    assert seen == pytest.approx([0.01 * f for f in factors])


@pytest.mark.parametrize("schedule", ["linear", "step", "step:a,b", "cosine:3", "step:-1"])
def test_an_unknown_lr_schedule_is_a_config_error(schedule):
    with pytest.raises(ConfigError, match="learning-rate schedule"):
        create_method("late_fusion", lr_schedule=schedule)


def test_early_stopping_after_patience_epochs_without_improvement(synthetic):
    scores = [1.0, 2.0, 3.0, 3.0, 2.5, 9.0, 9.0, 9.0]  # a tie is no improvement
    run = Run(synthetic)
    result = run(epochs=len(scores), score=scripted(scores), maximize=True, patience=2)
    assert result.stopped_early
    assert result.epochs_run == 5 and len(result.history) == 5
    assert run.batch_epochs == [0, 1, 2, 3, 4]
    assert (result.best_epoch, result.best_score) == (2, 3.0)

    full = Run(synthetic)(epochs=len(scores), score=scripted(scores), maximize=True, patience=None)
    assert not full.stopped_early and full.epochs_run == len(scores) and full.best_epoch == 5


def test_a_non_finite_loss_stops_with_a_clear_error(synthetic):
    run = Run(synthetic)
    run.loss = lambda batch, epoch: run.model(batch).sum() * float("nan")
    with pytest.raises(FloatingPointError, match=r"warmup: loss became nan at epoch 0"):
        run(epochs=2, phase="warmup")


@pytest.mark.parametrize("epochs", [0, -1])
def test_fewer_than_one_epoch_is_a_config_error(synthetic, epochs):
    with pytest.raises(ConfigError, match="epochs"):
        Run(synthetic)(epochs=epochs)


# -- reproducibility ----------------------------------------------------------------------------


def test_seed_everything_makes_fits_repeat(synthetic):
    def fit():
        seed_everything(7)
        draws = (random.random(), float(np.random.rand()), float(torch.rand(())))
        run = Run(synthetic, seed=7, reseed=False)
        return draws, run(epochs=3), run.model.state_dict()

    (draws1, result1, state1), (draws2, result2, state2) = fit(), fit()
    assert draws1 == draws2
    assert_same_state(state1, state2)
    assert without_timing(result1.history) == without_timing(result2.history)
    seed_everything(8)
    assert not torch.equal(TinyNet(synthetic.dims).heads["l"].weight, state1["heads.l.weight"])


# -- evaluation under many settings -------------------------------------------------------------


@pytest.fixture(scope="module")
def classes():
    from imsa.data.registry import load_dataset

    return load_dataset("synthetic", num_videos=20, min_utterances=3, max_utterances=6, num_classes=3, seed=0)


def reference(predict, subset, mask, level):
    """Predictions under one ``(N_dataset, M)`` mask, computed without :func:`predict_settings`."""
    with torch.no_grad():
        if level == "utterance":
            return predict(tensor_cache(subset.dataset).gather(subset.indices, mask[subset.indices])).numpy()
        batches = iterate_batches(subset, 3, level="video", present=mask)
        return np.concatenate([predict(batch)[batch.index >= 0].numpy() for batch in batches])


@pytest.mark.parametrize("level", ["utterance", "video"])
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_all_settings_in_one_call_equal_each_setting_alone(synthetic, classes, task, level):
    data = synthetic if task == "regression" else classes
    test = data.split(0)["test"]
    torch.manual_seed(0)
    model = TinyNet(data.dims, data.output_dim).eval()
    settings = Protocol().settings(test)
    assert len(settings) == 7
    together = predict_settings(model, test, settings, level=level, batch_size=3)
    assert list(together) == list(settings)
    shape = (len(test),) if task == "regression" else (len(test), data.num_classes)
    for name, mask in settings.items():
        alone = predict_settings(model, test, {name: mask}, level=level, batch_size=5)[name]
        assert together[name].shape == alone.shape == shape
        np.testing.assert_allclose(together[name], alone, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(together[name], reference(model, test, mask, level), rtol=1e-5, atol=1e-6, err_msg=name)
    assert not np.allclose(together["l"], together["a"]), "the masks did not reach the model"

    results = evaluate(model, test, settings, level=level, batch_size=3)
    assert list(results) == list(settings) + ["mean"]
    for name in settings:
        expected = compute_metrics(data.task, together[name], test.labels)
        assert results[name] == pytest.approx(expected, rel=1e-5, abs=1e-6), name
    for key in results["mean"]:
        assert results["mean"][key] == pytest.approx(np.mean([results[name][key] for name in settings]))


def test_a_single_setting_has_no_mean_row(synthetic):
    test = synthetic.split(0)["test"]
    settings = Protocol().settings(test)
    model = TinyNet(synthetic.dims).eval()
    results = evaluate(model, test, {"l,a,v": settings["l,a,v"]})
    assert list(results) == ["l,a,v"]
    assert selection_score(results, "mae") == results["l,a,v"]["mae"]
    with pytest.raises(ConfigError, match="no_such_metric"):
        selection_score(results, "no_such_metric")


def test_gradient_accumulation_sums_groups_and_drops_the_tail():
    """accumulate=2 over 5 batches: two SGD steps on summed gradients, the fifth batch dropped."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False)
    start = model.weight.detach().clone()
    xs = [torch.randn(4, 3) for _ in range(5)]
    seen = []

    def loss(batch, epoch):
        seen.append(batch[0])
        return model(xs[batch[0]]).sum()

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train(model, optimizer, epochs=1, batches=lambda epoch: [[k] for k in range(5)], loss=loss, score=lambda e: 0.0, maximize=False, accumulate=2)
    grad = lambda k: xs[k].sum(0, keepdim=True)  # noqa: E731  d/dW of sum(x W^T)
    expected = start - 0.1 * (grad(0) + grad(1)) - 0.1 * (grad(2) + grad(3))
    assert seen == [0, 1, 2, 3, 4]
    torch.testing.assert_close(model.weight.detach(), expected)


def test_plateau_halves_the_learning_rate_as_pytorchs_scheduler():
    scores = [1.0, 0.9, 0.9, 0.95, 0.91, 0.9, 0.89995, 0.8, 0.8, 0.8, 0.8, 0.8]
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    seen = []

    class LearningRate:
        def on_epoch_end(self, phase, epoch, logs):
            seen.append(logs["lr"])

    train(
        model,
        optimizer,
        epochs=len(scores),
        batches=lambda epoch: [],
        loss=lambda b, e: None,
        score=lambda e: scores[e],
        maximize=False,
        plateau=(0.5, 2),
        callbacks=[LearningRate()],
    )
    reference = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(reference, mode="min", factor=0.5, patience=2)
    expected = []
    for score in scores:
        expected.append(reference.param_groups[0]["lr"])
        scheduler.step(score)
    assert seen == expected and min(seen) < 1.0


def test_seeding_skips_the_nan_fill_that_only_the_strict_mode_keeps():
    from imsa.devices import make_deterministic

    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    try:
        seed_everything(1)
        assert not torch.utils.deterministic.fill_uninitialized_memory  # a tenth of a GCNet epoch, for a check imsa's kernels pass
        make_deterministic()
        assert torch.utils.deterministic.fill_uninitialized_memory
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.utils.deterministic.fill_uninitialized_memory = before[2]
