"""The one training loop, reused by every method and by every phase of a recipe.

It owns what every phase needs and none should copy: seeded shuffling, optimiser
steps, validation after each epoch, validation-only selection of the best epoch,
early stopping, checkpoints that let an interrupted phase resume exactly where it
stopped (:mod:`imsa.checkpoints`), and progress reports through callbacks. Scoring under
many missing-modality settings and the selection score are :mod:`imsa.evaluation`.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable
from typing import Protocol as TypingProtocol

import numpy as np
import torch

from .batch import Batch
from .checkpoints import resume_checkpoint, save_checkpoint
from .devices import autocast, check_precision, grad_scaler, resolve_device
from .errors import ConfigError
from .logs import check_loggers

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch, and ask torch for deterministic kernels.

    With the same seed and thread count, a CPU run then repeats bit for bit.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Under deterministic algorithms PyTorch fills every new tensor with NaN, a check for
    # kernels that read uninitialised memory; it cost a tenth of a GCNet epoch on the CPU.
    # The strict mode (devices.make_deterministic, --deterministic) keeps the check.
    torch.utils.deterministic.fill_uninitialized_memory = False


LR_SCHEDULES = ("constant", "cosine", "step:E1,E2,...", "linear:N", "warmup_cosine:W")


def lr_factor(schedule: str, epochs: int) -> Callable[[int], float]:
    """``factor(epoch)``: the learning rate of an epoch relative to the configured one.

    ``"constant"``: 1. ``"cosine"``: ``0.5 * (1 + cos(pi * epoch / epochs))``, set per
    epoch. ``"step:E1,E2,..."``: 0.1 for every milestone ``Ek <= epoch``, e.g.
    ``"step:180,200"``. (CMAD's released code offers these two.) ``"linear:N"``: 1 for
    the first N epochs, then down by ``1 / (epochs - N + 1)`` per epoch, to
    ``1 / (epochs - N + 1)`` at the last (MMIN's "linear" policy). ``"warmup_cosine:W"``:
    ``epoch / W`` for the first W + 1 epochs (the first at 0, filling Adam's moments
    only), then ``0.5 * (1 + cos(pi * (epoch - W - 1) / (epochs - W)))`` (LNLN's released
    schedule: warm-up over a tenth of the epochs, then cosine to 0).
    """
    kind, _, argument = str(schedule).strip().partition(":")
    if kind == "constant" and not argument:
        return lambda epoch: 1.0
    if kind == "cosine" and not argument:
        return lambda epoch: 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    if kind == "linear" and argument.isdigit():
        constant = int(argument)
        return lambda epoch: 1.0 - max(0, epoch + 1 - constant) / (max(epochs - constant, 0) + 1)
    if kind == "warmup_cosine" and argument.isdigit() and int(argument) > 0:
        warmup = int(argument)
        return lambda epoch: epoch / warmup if epoch <= warmup else 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup - 1) / max(epochs - warmup, 1)))
    if kind == "step" and argument:
        try:
            milestones = [int(m) for m in argument.split(",")]
        except ValueError:
            milestones = None
        if milestones and all(m >= 0 for m in milestones):
            return lambda epoch: 0.1 ** sum(epoch >= m for m in milestones)
    raise ConfigError(
        f"Unknown learning-rate schedule {schedule!r}. Valid forms: {', '.join(LR_SCHEDULES)} (e.g. step:180,200, linear:20 or warmup_cosine:20)."
    )


class Callback(TypingProtocol):
    """Progress reports from the loop. Every hook is optional."""

    def on_phase_start(self, phase: str, epochs: int, start_epoch: int) -> None: ...
    def on_epoch_end(self, phase: str, epoch: int, logs: dict) -> None: ...
    def on_phase_end(self, phase: str, result: "TrainResult") -> None: ...


def notify(callbacks, hook: str, *args) -> None:
    """Call ``hook(*args)`` on every callback that has it."""
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(*args)


@dataclass(frozen=True)
class RunContext:
    """How a fit runs, as opposed to what it computes: the same for every method.

    It travels from the caller (``imsa run``, a grid backend, your script) through
    ``Method.fit`` into every phase of the training loop. Callbacks, checkpoints and
    threads never change a result (a resumed run equals an uninterrupted one); the
    device and the precision change it in the last bits (fp32) or more (bf16, fp16),
    and are recorded with each run.

    Parameters
    ----------
    callbacks : iterable of Callback
        Progress hooks.
    workdir : path, optional
        Where phases keep resume checkpoints (``<workdir>/<phase>.pt``); None: no checkpoints.
    checkpoint_interval : float
        Seconds between checkpoint writes within a phase (0: after every epoch).
    threads : int, optional
        Torch CPU threads for each run; None: the method's ``default_threads`` (capped
        by the threads this process has, e.g. a grid worker's share of the cores).
    device : str
        ``auto`` (a GPU where PyTorch sees one, else the CPU), ``cpu``, ``cuda``,
        ``cuda:N``; resolved on construction (see :func:`imsa.devices.resolve_device`).
    precision : {"fp32", "bf16", "fp16"}
        Autocast of the forward passes (fp16 with a gradient scaler).
    deterministic : bool
        PyTorch's deterministic algorithms, strictly (see :func:`imsa.devices.make_deterministic`).
    log : tuple of str
        Mirror each run's per-epoch log and final metrics to ``csv``, ``tensorboard`` and/or
        ``mlflow`` (see :mod:`imsa.logs`; the run JSON stays the record).
    shared : path, optional
        Where phases that train on complete data only (a teacher, a pretrained backbone)
        keep their checkpoints under a key of the data, seed, config and device, so that
        the other experiments of a grid (other protocols, other rates) restore them instead
        of training them again; None: each run trains its own.
    """

    callbacks: tuple = ()
    workdir: Path | None = None
    checkpoint_interval: float = 30.0
    threads: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    deterministic: bool = False
    log: tuple = ()
    shared: Path | None = None

    def __post_init__(self):
        object.__setattr__(self, "callbacks", tuple(self.callbacks))
        object.__setattr__(self, "log", check_loggers(self.log))
        object.__setattr__(self, "device", str(resolve_device(self.device)))
        check_precision(self.precision, self.torch_device)
        for name in ("workdir", "shared"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        if not self.checkpoint_interval >= 0:  # also refuses NaN
            raise ConfigError(f"The 'checkpoint_interval' parameter of RunContext must be at least 0 seconds. Got {self.checkpoint_interval!r} instead.")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"The 'threads' parameter of RunContext must be an integer of at least 1. Got {self.threads!r} instead.")

    @property
    def torch_device(self) -> torch.device:
        """The run's device as a :class:`torch.device`."""
        return torch.device(self.device)

    def checkpoint(self, phase: str) -> Path | None:
        """The resume checkpoint of ``phase``, or None without a workdir."""
        return self.workdir / f"{phase}.pt" if self.workdir is not None else None


@dataclass
class TrainResult:
    """What a phase did: the selected epoch, its validation score, and per-epoch logs."""

    phase: str
    best_epoch: int
    best_score: float
    epochs_run: int
    stopped_early: bool
    history: list[dict] = field(default_factory=list)
    optimizer_state: dict | None = field(default=None, repr=False)  # only when asked for (keep_optimizer_state)

    def to_dict(self) -> dict:
        return {
            "phase": self.phase,
            "best_epoch": self.best_epoch,
            "best_score": self.best_score,
            "epochs_run": self.epochs_run,
            "stopped_early": self.stopped_early,
            "history": self.history,
        }


def train(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    batches: Callable[[int], Iterable[Batch]],
    loss: Callable[[Batch, int], torch.Tensor],
    score: Callable[[int], float],
    maximize: bool,
    patience: int | None = None,
    grad_clip: float | None = None,
    clip_groups: list | None = None,
    clip_mode: str = "norm",
    phase: str = "train",
    checkpoint: str | os.PathLike | None = None,
    checkpoint_interval: float = 30.0,
    extra_state=None,
    fingerprint: dict | None = None,
    callbacks: Iterable[Callback] = (),
    keep_last: bool = False,
    select_from: int = 0,
    keep_optimizer_state: bool = False,
    lr_schedule: Callable[[int], float] | None = None,
    accumulate: int = 1,
    plateau: tuple[float, int] | None = None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> TrainResult:
    """Train ``model`` for up to ``epochs`` epochs and leave it at the best validation epoch.

    Parameters
    ----------
    model, optimizer
        The model is left in eval mode with the weights of the selected epoch.
    batches : callable
        ``batches(epoch)`` yields the training batches of that epoch; it must derive
        its randomness from the epoch (e.g. ``np.random.default_rng([seed, epoch])``)
        so that a resumed run sees the same batches.
    loss : callable
        ``loss(batch, epoch)`` returns the scalar loss of one batch.
    score : callable
        ``score(epoch)`` returns the validation score after an epoch (validation data only).
    maximize : bool
        Whether a higher score is better.
    patience : int, optional
        Stop after this many epochs without improvement; None trains all epochs.
    grad_clip : float, optional
        Clip the global gradient norm to this value.
    clip_groups : list of lists of parameters, optional
        Clip each group's norm to ``grad_clip`` separately (per-module clipping, as
        MMIN's code) instead of the norm of all parameters together.
    clip_mode : {"norm", "value"}
        Clip gradient norms, or every gradient entry to ``[-grad_clip, grad_clip]``
        (``clip_grad_value_``, as DiCMoR's and IMDer's code).
    phase : str
        Name in logs, callbacks and results.
    checkpoint : path, optional
        File to save progress to and resume from. A finished phase found there is
        restored without training again.
    checkpoint_interval : float
        Seconds between checkpoint writes (0: after every epoch); the last epoch is always saved.
    extra_state : object, optional
        Anything else to checkpoint, with ``state_dict()`` and ``load_state_dict()``.
    fingerprint : dict, optional
        What identifies the run (seed, config); a checkpoint saved under another
        fingerprint is refused instead of silently resumed.
    callbacks : iterable of Callback
    keep_last : bool
        Leave the model at its last epoch instead of the best one (the best is still
        reported); for a phase whose result a later phase selects from.
    select_from : int
        Epochs before this one are never selected (nor count towards ``patience``); the
        last epoch is selected if none from it on was scored yet.
    keep_optimizer_state : bool
        Return the optimiser's final state in the result, for a later phase that
        continues with the same optimiser.
    lr_schedule : callable, optional
        ``factor(epoch)`` (see :func:`lr_factor`): each parameter group's learning rate
        in that epoch is its initial one times the factor.
    accumulate : int
        Optimiser steps every ``accumulate`` batches, on their summed gradients (losses
        not divided; clipping after every backward, on the running sum; an incomplete
        last group of an epoch is dropped), as DiCMoR's released loop.
    plateau : (factor, patience), optional
        Multiply every learning rate by ``factor`` once the selection score has not
        improved (by 1e-4 relative) for more than ``patience`` epochs, as PyTorch's
        ``ReduceLROnPlateau``; on top of ``lr_schedule``.
    device, precision
        Where the batches are (the model must be there too) and the autocast precision
        of the loss's forward pass; fp16 scales the gradients.
    """
    if epochs < 1:
        raise ConfigError(f"The 'epochs' parameter of phase {phase} must be at least 1. Got {epochs} instead.")
    callbacks = list(callbacks)
    checkpoint = Path(checkpoint) if checkpoint else None
    sign = 1.0 if maximize else -1.0
    state = {
        "next_epoch": 0,
        "best_score": float("-inf") if maximize else float("inf"),
        "best_epoch": -1,
        "best_state": None,
        "bad_epochs": 0,
        "history": [],
        "finished": False,
        "stopped_early": False,
        "plateau_best": float("-inf") if maximize else float("inf"),
        "plateau_bad": 0,
        "plateau_scale": 1.0,
    }
    if checkpoint is not None and checkpoint.exists():
        state = {**state, **resume_checkpoint(checkpoint, model, optimizer, extra_state, phase, fingerprint)}
    if accumulate < 1:
        raise ConfigError(f"accumulate must be at least 1, got {accumulate!r}.")

    initial_lrs = [group.setdefault("initial_lr", group["lr"]) for group in optimizer.param_groups]
    device = torch.device(device)
    scaler = grad_scaler(device, precision)
    groups = [list(g) for g in clip_groups] if clip_groups else [list(model.parameters())]

    if clip_mode not in ("norm", "value"):
        raise ConfigError(f"clip_mode must be 'norm' or 'value', got {clip_mode!r}.")

    def clip():
        for group in groups:
            if clip_mode == "value":
                torch.nn.utils.clip_grad_value_(group, grad_clip)
            else:
                torch.nn.utils.clip_grad_norm_(group, grad_clip)

    notify(callbacks, "on_phase_start", phase, epochs, state["next_epoch"])
    last_save = time.monotonic()
    epoch = state["next_epoch"]
    while not state["finished"] and epoch < epochs:
        # -- one pass over the training data
        started = time.perf_counter()
        if lr_schedule is not None or plateau is not None:
            for group, initial in zip(optimizer.param_groups, initial_lrs):
                group["lr"] = initial * (lr_schedule(epoch) if lr_schedule is not None else 1.0) * state["plateau_scale"]
        model.train()
        total, count = torch.zeros((), dtype=torch.float64, device=device), 0  # summed on the device: no sync per step
        for step, batch in enumerate(batches(epoch)):
            if step % accumulate == 0:
                optimizer.zero_grad(set_to_none=True)
            with autocast(device, precision):
                value = loss(batch, epoch)
            if device.type == "cpu" and not torch.isfinite(value):  # on a GPU: checked once, after the epoch
                raise FloatingPointError(f"{phase}: loss became {value.item()} at epoch {epoch}; lower the learning rate.")
            last_of_group = (step + 1) % accumulate == 0
            if scaler is not None:
                scaler.scale(value).backward()
                if grad_clip and last_of_group:  # fp16: the scaled sum is unscaled once, before its step
                    scaler.unscale_(optimizer)
                    clip()
                if last_of_group:
                    scaler.step(optimizer)
                    scaler.update()
            else:
                value.backward()
                if grad_clip:
                    clip()
                if last_of_group:
                    optimizer.step()
            total += value.detach().double() * len(batch)
            count += len(batch)
        total = total.item()
        if not np.isfinite(total):
            raise FloatingPointError(f"{phase}: loss became {total} at epoch {epoch}; lower the learning rate.")
        # -- validation and selection
        model.eval()
        with torch.no_grad():
            current = float(score(epoch))
        improved = epoch >= select_from and sign * current > sign * state["best_score"]
        if improved:
            state.update(best_score=current, best_epoch=epoch, best_state=copy.deepcopy(model.state_dict()), bad_epochs=0)
        elif epoch >= select_from:
            state["bad_epochs"] += 1
        if plateau is not None:
            factor, plateau_patience = plateau
            best = state["plateau_best"]
            if (current > best * (1 + 1e-4)) if maximize else (current < best * (1 - 1e-4)):  # ReduceLROnPlateau's "rel" test
                state.update(plateau_best=current, plateau_bad=0)
            else:
                state["plateau_bad"] += 1
                if state["plateau_bad"] > plateau_patience:
                    state.update(plateau_scale=state["plateau_scale"] * factor, plateau_bad=0)
        logs = {
            "epoch": epoch,
            "loss": total / max(count, 1),
            "score": current,
            "best": improved,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started,
        }
        state["history"].append(logs)
        notify(callbacks, "on_epoch_end", phase, epoch, logs)
        epoch += 1
        state["next_epoch"] = epoch
        if patience is not None and state["bad_epochs"] >= patience:
            state["stopped_early"] = True
            break
        # -- checkpoint, now and then
        if checkpoint is not None and epoch < epochs and time.monotonic() - last_save >= checkpoint_interval:
            save_checkpoint(checkpoint, model, optimizer, extra_state, state, fingerprint)
            last_save = time.monotonic()

    if state["best_state"] is not None and not state["finished"] and not keep_last:
        model.load_state_dict(state["best_state"])
    state["finished"] = True
    if checkpoint is not None:
        save_checkpoint(checkpoint, model, optimizer, extra_state, state, fingerprint)
    model.eval()
    result = TrainResult(phase, state["best_epoch"], state["best_score"], state["next_epoch"], state["stopped_early"], state["history"])
    if keep_optimizer_state:
        result.optimizer_state = copy.deepcopy(optimizer.state_dict())
    notify(callbacks, "on_phase_end", phase, result)
    return result
