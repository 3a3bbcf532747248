"""One training phase of a method, and what its losses draw from.

:class:`Phase` holds how a phase trains (its loss, training masks, validation settings,
optimiser, epochs, clipping, schedule, checkpoint sharing); :func:`run_phase` runs it with
the one loop of :mod:`imsa.training`, and is what :meth:`Method.train_phase` calls.
:class:`TrainingMasks` is the one way a recipe sees what its masks remove.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..batch import Batch, draw_frames, iterate_batches
from ..data.dataset import Dataset, Subset
from ..errors import ConfigError
from ..evaluation import evaluate, selection_score
from ..identity import canonical, fingerprint
from ..metrics import METRICS
from ..missing import fixed_conditions
from ..protocols import Protocol
from ..training import RunContext, TrainResult, lr_factor
from ..training import train as run_training
from .spec import check_protocol


@dataclass(frozen=True)
class Phase:
    """How one training phase runs. Only ``loss``, ``sampler`` and ``settings`` have no default.

    Parameters
    ----------
    loss : callable
        ``loss(model, batch, epoch)``: the batch loss.
    sampler
        Draws the training masks (chosen by the method in ``fit``).
    settings : dict
        The validation settings (chosen by the method in ``fit``).
    name : str
        The phase's name in checkpoints, logs and run files.
    optimizer : {"adamw", "adam"}
        ``"adamw"``: decoupled decay, not on biases and norms; ``"adam"``: an L2 penalty on
        every parameter, as some papers' code.
    param_groups : list of dict, optional
        The parameters the optimiser trains, in groups as ``torch.optim`` takes them
        (``{"params": [...], "lr": ...}``; a group without ``lr`` takes the phase's), instead
        of every parameter of the model at one rate: a recipe with a rate per module, or
        with tensors it leaves untrained. With ``"adamw"`` each group is split as
        :func:`parameter_groups` splits a model.
    epochs, lr : optional
        The phase's own, instead of the config's ``epochs`` and ``lr``.
    predict : callable, optional
        ``predict(batch)`` that scores validation (default ``model(batch).prediction``).
    score : callable, optional
        ``score(epoch)``, the selection score (default: the method's ``select_metric``
        averaged over ``settings``).
    extra_state : optional
        An object with ``state_dict``/``load_state_dict`` checkpointed with the model.
    keep_last, select_from, accumulate, plateau
        Passed to :func:`imsa.training.train` (keep the last epoch; select from this epoch
        on; gradient accumulation; learning rate cut on a plateau of the selection score).
    optimizer_state : dict, optional
        Loaded into the optimiser: a phase continuing an earlier phase's optimiser, whose
        result kept it with ``keep_optimizer_state``.
    grad_clip : float, None or "config"
        Replaces the config's ``grad_clip`` for this phase.
    clip_groups : list, optional
        Lists of parameters whose norms are clipped separately (e.g. one per module).
    clip_mode : {"norm", "value"}
    betas : (float, float)
        Adam's.
    lr_schedule : str, optional
        The phase's own schedule instead of the config's, over this phase's epochs.
    shared : bool
        The phase depends on neither the protocol nor anything outside its arguments
        (complete data, complete validation): with ``context.shared`` set, its checkpoint
        is kept there under a key of the data, seed, config, device and precision, and
        another experiment of the same run restores it instead of training it again.
    """

    loss: Callable
    sampler: object
    settings: dict
    name: str = "train"
    optimizer: str = "adamw"
    param_groups: list | None = None
    epochs: int | None = None
    lr: float | None = None
    predict: Callable | None = None
    score: Callable | None = None
    extra_state: object = None
    keep_last: bool = False
    select_from: int = 0
    optimizer_state: dict | None = None
    keep_optimizer_state: bool = False
    grad_clip: float | None | str = "config"
    clip_groups: list | None = None
    clip_mode: str = "norm"
    betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: str | None = None
    accumulate: int = 1
    plateau: tuple[float, int] | None = None
    shared: bool = False


def run_phase(method, model: torch.nn.Module, train: Subset, valid: Subset, phase: Phase, *, protocol: Protocol, seed: int, context: RunContext) -> TrainResult:
    """Run ``phase`` of ``method`` on ``model`` with the shared loop of :mod:`imsa.training`.

    ``protocol`` is the run's, recorded in the checkpoint's identity only; the masks and
    validation settings are the phase's. Returns the loop's :class:`~imsa.training.TrainResult`.
    """
    check_protocol(method.name, method.protocols, protocol)
    cfg = method.config
    predict = phase.predict or (lambda b: model(b).prediction)
    metric = method.select_metric
    device, precision = context.torch_device, context.precision
    model.to(device)
    method.precision_ = precision

    def batches(epoch):
        return iterate_batches(train, cfg.batch_size, level=method.level, shuffle=True, rng=epoch_rng(seed, epoch), present=phase.sampler, device=device)

    def default_score(epoch):
        results = evaluate(predict, valid, phase.settings, level=method.level, batch_size=cfg.eval_batch_size, device=device, precision=precision)
        return selection_score(results, metric)

    # fused: one vectorised kernel per parameter (CPU and CUDA); 3x faster than foreach on CPU
    if phase.optimizer == "adam":
        params = model.parameters() if phase.param_groups is None else phase.param_groups
        opt = torch.optim.Adam(params, lr=phase.lr or cfg.lr, betas=phase.betas, weight_decay=cfg.weight_decay, fused=True)
    else:
        groups = [{"params": list(model.parameters())}] if phase.param_groups is None else phase.param_groups
        split = [{**group, **part} for group in groups for part in parameter_groups(group["params"], cfg.weight_decay)]
        opt = torch.optim.AdamW(split, lr=phase.lr or cfg.lr, betas=phase.betas, fused=True)
    if phase.optimizer_state is not None:
        opt.load_state_dict(copy.deepcopy(phase.optimizer_state))  # several phases may continue one state
    run_identity = {
        "method": method.name,
        "seed": seed,
        "config": dataclasses.asdict(cfg),
        "protocol": protocol.to_dict(),
        "sampler": repr(phase.sampler),
        "settings": sorted(phase.settings),
    }
    checkpoint = context.checkpoint(phase.name)
    if phase.shared and context.shared is not None:
        del run_identity["protocol"]  # the phase does not read it: every protocol's run may restore it
        key = {
            **run_identity,
            "phase": phase.name,
            "data": train.dataset.checksum,
            "train": _digest(train.indices),
            "valid": _digest(valid.indices),
            "device": context.torch_device.type,
            "precision": precision,
            "epochs": phase.epochs or cfg.epochs,
            "lr": phase.lr or cfg.lr,
        }
        checkpoint = context.shared / f"{method.name}-{phase.name}-{fingerprint(key, method.Config)[:24]}.pt"
        run_identity["key"] = checkpoint.stem
    return run_training(
        model,
        opt,
        epochs=phase.epochs or cfg.epochs,
        batches=batches,
        loss=lambda batch, epoch: phase.loss(model, batch, epoch),
        score=phase.score or default_score,
        maximize=METRICS[metric].higher_is_better,
        patience=cfg.patience,
        grad_clip=cfg.grad_clip if phase.grad_clip == "config" else phase.grad_clip,
        clip_groups=phase.clip_groups,
        clip_mode=phase.clip_mode,
        lr_schedule=lr_factor(phase.lr_schedule or cfg.lr_schedule, phase.epochs or cfg.epochs),
        accumulate=phase.accumulate,
        plateau=phase.plateau,
        phase=phase.name,
        checkpoint=checkpoint,
        checkpoint_interval=context.checkpoint_interval,
        extra_state=phase.extra_state,
        keep_last=phase.keep_last,
        select_from=phase.select_from,
        keep_optimizer_state=phase.keep_optimizer_state,
        device=device,
        precision=precision,
        fingerprint=canonical(run_identity, method.Config),
        callbacks=context.callbacks,
    )


REGRESSION_LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss}


def task_loss(prediction: torch.Tensor, batch: Batch, task: str, regression_loss: str = "l1") -> torch.Tensor:
    """L1 (or MSE) for regression, cross-entropy for classes, cross-entropy of each class's
    (absent, present) logits for multilabel (as MulT); padded utterances excluded."""
    keep = batch.index >= 0
    if task == "regression":
        return REGRESSION_LOSSES[regression_loss](prediction[keep].float(), batch.labels[keep])
    if task == "multilabel":
        return F.cross_entropy(prediction[keep].float().reshape(-1, 2), batch.labels[keep].reshape(-1))
    return F.cross_entropy(prediction[keep].float(), batch.labels[keep])


def parameter_groups(params, weight_decay: float) -> list[dict]:
    """AdamW groups of a model's (or a list's) trainable parameters: decay matrices, not
    biases or normalisation weights (chosen by rank)."""
    params = list(params.parameters() if isinstance(params, torch.nn.Module) else params)
    decay = [p for p in params if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in params if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _digest(indices) -> str:
    """A short sha256 of an index array."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(indices, dtype=np.int64)).tobytes()).hexdigest()[:24]


def epoch_rng(seed: int, epoch: int, *stream: int) -> np.random.Generator:
    """The generator of epoch ``epoch`` (batches), or of a recipe's own ``stream`` in it (see ``Method.fit``)."""
    return np.random.default_rng([seed, epoch, *stream])


@dataclass(frozen=True)
class MaskedBatch:
    """A training batch under a drawn mask, with the truth the mask hides.

    ``batch`` is what the model may read (missing modalities zeroed); ``complete`` is
    the same utterances with every modality, for targets only (imagination,
    reconstruction, a teacher); ``present`` is the drawn ``(B, [S,] M)`` mask.
    """

    batch: Batch
    complete: Batch
    present: torch.Tensor


class TrainingMasks:
    """The one way a recipe sees what its training masks remove (MMIN, GCNet, CMAD's teacher).

    The phase batches complete data (``sampler=Complete()``) and the loss calls
    :meth:`draw` on each batch: the masks come from ``sampler`` with
    ``default_rng([seed, epoch, stream])`` (the seeding rule of ``Method.fit``, so a
    resumed run draws the same ones), one row per utterance (padded ones included,
    then cleared, at video level). The original features of the masked modalities are
    those of ``MaskedBatch.complete``. Evaluation never passes through here: at
    prediction time a model gets only what ``present`` leaves.
    """

    def __init__(self, sampler, modalities: tuple[str, ...], seed: int, stream: int, dataset: Dataset | None = None):
        self.sampler, self.modalities, self.seed, self.stream, self.dataset = sampler, tuple(modalities), seed, stream, dataset
        self._epoch, self._rng = None, None

    def draw(self, batch: Batch, epoch: int) -> MaskedBatch:
        if self._epoch != epoch:
            self._epoch, self._rng = epoch, epoch_rng(self.seed, epoch, self.stream)
        shape = batch.present.shape
        drawn = self.sampler.sample(int(np.prod(shape[:-1])), self.modalities, self._rng).reshape(shape)
        masked = batch.with_present(torch.from_numpy(drawn).to(batch.present.device))
        if hasattr(self.sampler, "sample_frames"):
            if self.dataset is None:
                raise ConfigError("frame-level training masks need the dataset: TrainingMasks(..., dataset=train.dataset).")
            masked = masked.with_frames(draw_frames(self.sampler, batch, self.dataset, self._rng))
        return MaskedBatch(masked, batch, masked.present)

    def __repr__(self) -> str:
        return f"TrainingMasks({self.sampler!r}, stream={self.stream})"


def complete_setting(valid: Subset) -> dict[str, np.ndarray]:
    """The one validation setting of a complete-data phase: every modality present."""
    modalities = valid.dataset.modalities
    return {fixed_conditions(modalities)[-1].name: np.ones((len(valid.dataset), len(modalities)), dtype=bool)}
