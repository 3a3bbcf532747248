"""The method contract: scikit-learn's ``fit`` / ``predict`` for missing-modality models.

A method stores its config in ``__init__`` and nothing else; ``fit`` builds and trains
its model(s) from the training data's shapes; ``predict`` reads an explicit ``present``
mask. Recipes with several phases call :meth:`Method.train_phase` once per phase, which
runs the one loop of :mod:`imsa.training`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..batch import TEXT, Batch, draw_frames, iterate_batches, tensor_cache
from ..config import COUNT, NON_NEGATIVE, POSITIVE, build_config, check_domains
from ..data.dataset import Dataset, Subset
from ..data.feature_stats import feature_statistics
from ..errors import ConfigError, DataError, NotFittedError, invalid_parameter
from ..frames import FrameDrop
from ..identity import fingerprint
from ..metrics import METRICS
from ..missing import condition_index, fixed_conditions, make_sampler
from ..nn.layers import masked_mean
from ..nn.mult import MulTModel
from ..nn.text_encoder import TextEncoder, check_token_ids
from ..predictions import Predictions
from ..protocols import Protocol
from ..training import RunContext, TrainResult, evaluate, lr_factor, metrics_of, predict_settings, selection_score
from ..training import train as run_training


@dataclass(frozen=True)
class Output:
    """What a model returns: the prediction and, where the method has one, its fused feature.

    ``prediction`` is ``(B, [S])`` for regression and ``(B, [S,] C)`` logits for classification.
    """

    prediction: torch.Tensor
    feature: torch.Tensor | None = None


@dataclass(frozen=True)
class DataSpec:
    """The shapes a model is built for, taken from the training data."""

    modalities: tuple[str, ...]
    dims: dict[str, int]
    sequence: dict[str, bool]
    task: str
    output_dim: int
    class_names: tuple[str, ...] | None = None
    num_speakers: int = 1
    steps: dict[str, int] = dataclasses.field(default_factory=dict)  # time steps of each sequence modality (the file's width)

    def __post_init__(self):  # tuples again after a trip through JSON
        object.__setattr__(self, "modalities", tuple(self.modalities))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(self.class_names))

    @classmethod
    def of(cls, dataset: Dataset) -> "DataSpec":
        return cls(
            modalities=dataset.modalities,
            dims=dataset.dims,
            sequence={m: dataset.is_sequence(m) for m in dataset.modalities},
            task=dataset.task,
            output_dim=dataset.output_dim,
            class_names=dataset.class_names,
            num_speakers=dataset.speakers[1],
            steps={m: int(dataset.features[m].shape[1]) for m in dataset.modalities if dataset.is_sequence(m)},
        )


@dataclass(frozen=True)
class TrainConfig:
    """Settings every method's config shares.

    Attributes
    ----------
    epochs : int
        Epochs of the phase that makes the final model (the only phase of most methods;
        MoMKE's stage 2, CMAD's student). A recipe with earlier phases gives each its
        own key (``stage1_epochs``, ``teacher_epochs``); every method follows this rule.
    batch_size : int
        Utterances per batch (utterance-level methods) or videos (video-level ones).
    lr, weight_decay : float
        AdamW; no decay on biases and normalisation weights.
    patience : int or None
        Early stopping after this many epochs without a better validation score.
    grad_clip : float or None
    select_metric : str or None
        Validation metric, averaged over the protocol's settings, that selects the
        epoch. None: ``mae`` for regression, ``wf1`` for classification.
    eval_batch_size : int
    train_missing : str
        Training mask sampler (see :func:`imsa.missing.make_sampler`); the random
        protocol replaces it with masks at its rate.
    lr_schedule : str
        ``"constant"``, ``"cosine"`` or ``"step:E1,E2,..."``, per epoch of each phase
        (see :func:`imsa.training.lr_factor`).
    """

    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int | None = 20
    grad_clip: float | None = None
    select_metric: str | None = None
    eval_batch_size: int = 256
    train_missing: str = "complete"
    lr_schedule: str = "constant"

    # The domain of every numeric key, checked on construction (CLI, YAML, grids and the
    # Python API all build configs here); a subclass extends it with its own keys.
    DOMAINS: ClassVar[dict] = {
        "epochs": COUNT,
        "batch_size": COUNT,
        "eval_batch_size": COUNT,
        "lr": POSITIVE,
        "weight_decay": NON_NEGATIVE,
        "patience": COUNT,
        "grad_clip": POSITIVE,
    }
    # The allowed values of every key with a fixed set of them; a subclass adds its own.
    CHOICES: ClassVar[dict] = {}

    def __post_init__(self):
        owner = type(self).__qualname__
        check_domains(self)
        for name, allowed in self.CHOICES.items():
            if getattr(self, name) not in allowed:
                raise invalid_parameter(name, owner, " or ".join(repr(a) for a in allowed), getattr(self, name))
        for name, value in dataclasses.asdict(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise invalid_parameter(name, owner, "a finite number", value)
        if self.select_metric is not None and self.select_metric not in METRICS:
            raise invalid_parameter("select_metric", owner, f"one of {', '.join(METRICS)}", self.select_metric)
        make_sampler(self.train_missing)  # refuse bad specs before training starts
        lr_factor(self.lr_schedule, 1)


def pooled(batch: Batch, modality: str) -> torch.Tensor:
    """The modality's utterance vectors: time sequences are averaged over their valid steps."""
    x = batch.inputs[modality]
    if modality in batch.padding:
        return masked_mean(x, batch.padding[modality], dim=-2)
    return x


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


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay matrices, not biases or normalisation weights (chosen by rank)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Method:
    """Base class of every registered method.

    Subclasses set ``name``, ``Config`` (a frozen dataclass extending
    :class:`TrainConfig`) and ``level``, implement :meth:`build` and :meth:`fit`,
    and may override :meth:`forward`. Three class attributes tune the conformance
    checks of :func:`imsa.testing.check_method`: ``tiny_config`` (config values that
    make a fit take seconds, beyond 3 epochs and batches of 16), ``learning_config``
    (further values for the check that a few epochs learn, e.g. a phase's own epochs)
    and ``no_task_gradient`` (parameter-name parts that, by design, get no gradient
    from the final task loss: modules trained only by an earlier phase).

    Parameters
    ----------
    config : Config or dict, optional
        A full config, or a dict of overrides of the defaults.
    **overrides
        Individual config values.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = TrainConfig
    level: ClassVar[str] = "utterance"
    # Torch threads a run uses unless told otherwise (None: as many as the process has);
    # chosen per method by benchmarks/threads.py.
    default_threads: ClassVar[int | None] = None
    tiny_config: ClassVar[dict] = {}
    learning_config: ClassVar[dict] = {}
    no_task_gradient: ClassVar[tuple[str, ...]] = ()
    # The dataset tasks the method's models can be built for (see imsa.data.dataset.TASKS).
    tasks: ClassVar[tuple[str, ...]] = ("regression", "classification")
    # "sequence": the method needs time sequences in every modality; "any": vectors too.
    inputs: ClassVar[str] = "any"
    # The protocols the method can train under (see imsa.protocols.PROTOCOLS).
    protocols: ClassVar[tuple[str, ...]] = ("fixed", "random", "frames")
    # For a method that can train one model per fixed condition: the module that holds them
    # (``module({condition: model}, modalities)``, with the conditions in ``names``), so that
    # state dicts record the conditions and load rebuilds it.
    per_condition_module: ClassVar[type | None] = None
    # Whether a ``text_encoder`` in the config reads the text's token ids (``Batch.tokens``).
    token_text: ClassVar[bool] = False
    # The search space of `imsa tune` for a method without a packaged one
    # (configs/spaces/<name>.yaml), in the same form: {key: {low, high[, log]} or {choices}}.
    search_space: ClassVar[dict | None] = None
    # How to make the method encode raw transcripts itself, for the error on placeholder text features.
    encode_text_hint: ClassVar[str] = ""

    def __init__(self, config=None, **overrides):
        if isinstance(config, self.Config):
            config = dataclasses.asdict(config)
        self.config = build_config(self.Config, config, overrides)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"

    @classmethod
    def own_frame_noise(cls, config) -> bool:
        """Whether training under the frames protocol drops frames by a distribution of its
        own (not at the test rate), so that one model serves every rate."""
        sampler = make_sampler(config.train_missing)
        return isinstance(sampler, FrameDrop) and isinstance(sampler.rate, str)

    @classmethod
    def reads_text_tokens(cls, config) -> bool:
        """Whether the text modality is read as token ids (``Batch.tokens``) by an encoder of
        the method's own, so that a dropped word becomes the tokenizer's unknown token: for
        a method with ``token_text``, where its config names a ``text_encoder``."""
        return cls.token_text and bool(getattr(config, "text_encoder", ""))

    # -- to implement ------------------------------------------------------------------------
    def build(self, spec: DataSpec) -> torch.nn.Module:
        """The untrained model for data of shape ``spec``."""
        raise NotImplementedError

    def fit(self, train: Subset, valid: Subset, *, protocol: Protocol | None = None, seed: int = 0, context: RunContext | None = None) -> "Method":
        """Train on ``train``, selecting on ``valid`` only.

        Parameters
        ----------
        train, valid : Subset
        protocol : Protocol, optional
            The run's protocol (default ``fixed``). The method asks it once, here, for
            the validation settings (``protocol.settings(valid)``) and for its training
            masks (``protocol.training_sampler(own_default)``), and hands both to each
            phase; a phase that trains on something else (complete data for a teacher)
            does not ask.
        seed : int
            Every generator of the recipe derives from it, by one rule: the k-th model
            that is initialised independently (k = 0, 1, ...) is built right after
            ``torch.manual_seed(seed + k)``; the training batches of epoch e come from
            ``np.random.default_rng([seed, e])`` (:func:`epoch_rng`); a recipe's own
            draws in epoch e (e.g. per-sample masks) from ``default_rng([seed, e, s])``
            with a fixed stream number s per purpose. A resumed run therefore draws
            exactly what an uninterrupted one does.
        context : RunContext, optional
            Callbacks, work directory for resume checkpoints, checkpoint interval.
        """
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------
    def forward(self, batch: Batch) -> Output:
        return self.model_(batch)

    def predict(self, batch: Batch, present: torch.Tensor | None = None) -> Output:
        """Predict ``batch``; ``present`` (``(B, [S,] M)`` bool) replaces the batch's mask if given."""
        self._check_fitted()
        batch = batch.to(self.device)
        if present is not None:
            batch = batch.with_present(present)
        self.model_.eval()
        with torch.no_grad():
            return self.forward(batch)

    def predict_settings(self, subset: Subset, settings: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw predictions (regression values or logits) for ``subset`` under each setting,
        aligned with ``subset.indices`` (see :func:`imsa.training.predict_settings`)."""
        self._check_fitted()
        self.model_.eval()
        return predict_settings(
            lambda b: self.forward(b).prediction,
            subset,
            settings,
            level=self.level,
            batch_size=self.config.eval_batch_size,
            device=self.device,
            precision=getattr(self, "precision_", "fp32"),
        )

    def evaluate(self, subset: Subset, settings: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
        """Metrics on ``subset`` under each setting (see :func:`imsa.training.evaluate`)."""
        return metrics_of(self.predict_settings(subset, settings), subset)

    def predict_dataset(self, data: Dataset | Subset, modalities=None, *, present: np.ndarray | None = None) -> Predictions:
        """One prediction per utterance of ``data``, from the given modalities.

        Parameters
        ----------
        data : Dataset or Subset
            Utterances of the shape the model was trained on (modalities, dimensions).
        modalities : iterable of str, optional
            The modalities to use (e.g. ``("l", "a")``); default all of the model's.
        present : ndarray, optional
            ``(N_dataset, M)`` bool: which modalities each utterance has (default: all).
            A modality is used where it is both asked for and present.

        Returns
        -------
        Predictions
            In the order of ``data`` (a subset: its videos, utterances in spoken order).
        """
        self._check_fitted()
        subset = data if isinstance(data, Subset) else Subset(data, list(dict.fromkeys(data.video_ids)))
        dataset = subset.dataset
        self.check_data(dataset)
        names = self.spec_.modalities
        if modalities is not None:
            modalities = tuple(modalities)
            unknown = [m for m in modalities if m not in names]
            if unknown or not modalities:
                what = f"{', '.join(repr(m) for m in unknown)} is not among" if unknown else "none of"
                raise ConfigError(
                    f"Modalities {','.join(modalities) or '(none)'}: {what} the modalities of this {self.name} model; give a comma-separated subset of {','.join(names)}."
                )
        mask = np.ones((len(dataset), len(names)), dtype=bool)
        if modalities is not None:
            mask[:, [m not in modalities for m in names]] = False
        if present is not None:
            mask &= np.asarray(present, dtype=bool)
        empty = ~mask[subset.indices].any(axis=1)
        if empty.any():
            first = [dataset.utterance_ids[i] for i in subset.indices[empty][:3]]
            raise DataError(f"{dataset.name}: {int(empty.sum())} utterance(s) have none of the modalities asked for, e.g. {', '.join(first)}.")
        values = self.predict_settings(subset, {"given": mask})["given"]
        if self.spec_.task != "regression":  # class probabilities; per class (absent, present) for multilabel
            values = torch.softmax(torch.from_numpy(values), dim=-1).numpy()
        return Predictions(
            utterance_ids=[dataset.utterance_ids[i] for i in subset.indices],
            video_ids=[dataset.video_ids[i] for i in subset.indices],
            labels=subset.labels,
            values=values,
            present=mask[subset.indices],
            modalities=names,
            task=self.spec_.task,
            class_names=self.spec_.class_names or dataset.class_names,
        )

    def check_data(self, dataset: Dataset) -> None:
        """Refuse data of another shape than the model's (modalities, dimensions, task), naming what
        differs, and data without the token ids (of the encoder's vocabulary) the model reads."""
        self._check_fitted()
        spec, other = self.spec_, DataSpec.of(dataset)
        for what in ("modalities", "dims", "sequence", "task", "output_dim"):
            if getattr(spec, what) != getattr(other, what):
                raise DataError(f"{dataset.name}: {what} {getattr(other, what)}, but this {self.name} model was trained on {what} {getattr(spec, what)}.")
        if self.reads_text_tokens(self.config):
            check_token_ids(dataset, self.config.text_encoder)

    def save(self, path, **provenance):
        """Write the fitted method as ``<path>.safetensors`` + ``<path>.json`` (see :mod:`imsa.model_files`)."""
        from ..model_files import save_model

        return save_model(self.state_dict(), path, **provenance)

    @property
    def conditions_(self) -> list[str] | None:
        """The conditions of a fitted per-condition model, in order; None for a single model."""
        self._check_fitted()
        return getattr(self.model_, "names", None)

    def state_dict(self) -> dict:
        self._check_fitted()
        state = {"method": self.name, "config": dataclasses.asdict(self.config), "spec": dataclasses.asdict(self.spec_), "model": self.model_.state_dict()}
        if self.per_condition_module is not None:
            state["conditions"] = self.conditions_
        if getattr(self, "feature_stats_", None):
            state["feature_stats"] = self.feature_stats_
        return state

    def load_state_dict(self, state: dict) -> "Method":
        """Rebuild the fitted model from :meth:`state_dict` (the config must match)."""
        self.config = build_config(self.Config, state["config"])
        self.spec_ = DataSpec(**state["spec"])
        self.feature_stats_ = state.get("feature_stats") or {}  # absent from model files before imsa 0.5
        conditions = state.get("conditions")
        if conditions:
            self.model_ = self.per_condition_module({name: self.build(self.spec_) for name in conditions}, self.spec_.modalities)
        else:
            self.model_ = self.build(self.spec_)
        self.model_.load_state_dict(state["model"])
        self.model_.eval()
        return self

    def encodes_itself(self, modality: str) -> bool:
        """Whether the method computes ``modality``'s features itself (from raw transcripts or token ids), not reading the dataset's."""
        return modality == TEXT and self.reads_text_tokens(self.config)

    def training_spec(self, train: Subset) -> DataSpec:
        """The spec of the training data (:meth:`data_spec`), recording as ``feature_stats_``
        the statistics of the training features that ``predict`` compares new inputs with
        (see :mod:`imsa.data.feature_stats`). Every ``fit`` starts here."""
        spec = self.data_spec(train.dataset)
        own = [m for m in train.dataset.modalities if not self.encodes_itself(m)]
        self.feature_stats_ = feature_statistics(train.dataset, train.indices, own)
        return spec

    def data_spec(self, dataset: Dataset) -> DataSpec:
        """The spec of the training data, refusing a modality whose features are all zero
        (a placeholder, e.g. the text of a MAG file loaded with ``word_pieces``) that the
        method would read as if it were data, and a task it cannot model."""
        if dataset.task not in self.tasks:
            hint = " (load a MulT IEMOCAP file with --set data.emotions=classes for one emotion per utterance)" if dataset.task == "multilabel" else ""
            raise ConfigError(
                f"{dataset.source}: {self.name} models {' and '.join(self.tasks)} tasks, not {dataset.task}{hint}; methods that do: {', '.join(_methods_for(dataset.task))}."
            )
        vectors = [m for m in dataset.modalities if not dataset.is_sequence(m) and not self.encodes_itself(m)]
        if self.inputs == "sequence" and vectors:
            raise ConfigError(
                f"{dataset.source}: {self.name} reads time sequences, but modality {', '.join(map(repr, vectors))} holds one vector per utterance. "
                "Use sequence data: an MMSA aligned_50.pkl or unaligned_50.pkl, a MulT *_data.pkl, a MAG pickle, or synthetic with sequence_length (e.g. --set data.sequence_length=50)."
            )
        for m in dataset.modalities:
            if not self.encodes_itself(m) and not np.any(dataset.features[m]):
                hint = f" ({self.encode_text_hint})" if m == TEXT and self.encode_text_hint else ""
                raise DataError(
                    f"{dataset.name}: the features of modality {m!r} are all zero, a placeholder rather than data; "
                    f"{self.name} would train on it as if it were real{hint}. Drop the modality or use a method that encodes it."
                )
        if self.reads_text_tokens(self.config):
            check_token_ids(dataset, self.config.text_encoder)
        return DataSpec.of(dataset)

    @property
    def device(self) -> torch.device:
        """Where the fitted model is (the device its fit ran on, or where :meth:`to` moved it)."""
        self._check_fitted()
        return next(itertools.chain(self.model_.parameters(), self.model_.buffers()), torch.empty(0)).device

    def to(self, device) -> "Method":
        """Move the fitted model to ``device`` (``"cpu"``, ``"cuda:0"``, ...); returns the method."""
        from ..devices import resolve_device

        self._check_fitted()
        self.model_.to(resolve_device(device))
        return self

    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit() first.")

    @property
    def select_metric(self) -> str:
        return self.config.select_metric or {"regression": "mae", "classification": "wf1", "multilabel": "emotion_binary_f1"}[self.spec_.task]

    def train_phase(
        self,
        model: torch.nn.Module,
        train: Subset,
        valid: Subset,
        *,
        protocol: Protocol,
        seed: int,
        loss,
        sampler,
        settings: dict,
        context: RunContext,
        optimizer: str = "adamw",
        phase: str = "train",
        epochs: int | None = None,
        lr: float | None = None,
        predict=None,
        score=None,
        extra_state=None,
        keep_last: bool = False,
        select_from: int = 0,
        optimizer_state: dict | None = None,
        keep_optimizer_state: bool = False,
        grad_clip: float | None | str = "config",
        clip_groups: list | None = None,
        clip_mode: str = "norm",
        betas: tuple[float, float] = (0.9, 0.999),
        lr_schedule: str | None = None,
        accumulate: int = 1,
        plateau: tuple[float, int] | None = None,
        shared: bool = False,
    ) -> TrainResult:
        """Run one training phase of ``model`` with the shared loop, on what it is given.

        ``loss(model, batch, epoch)`` gives the batch loss; ``sampler`` draws the
        training masks and ``settings`` are the validation settings, both chosen by the
        method in ``fit``; ``protocol`` is the run's, recorded in the checkpoint's
        fingerprint only. ``predict(batch)`` scores validation (default:
        ``model(batch).prediction``). The selection score is ``select_metric`` averaged
        over ``settings``, unless ``score(epoch)`` is given. ``optimizer`` is ``"adamw"``
        (decoupled decay, not on biases and norms) or ``"adam"`` (L2 penalty on every
        parameter, as some papers' code); ``optimizer_state``, if given, is loaded into
        it (a phase continuing an earlier phase's optimiser, whose result kept it with
        ``keep_optimizer_state``). ``keep_last`` and ``select_from`` are passed to
        :func:`imsa.training.train`. ``grad_clip`` replaces the config's for this phase;
        ``clip_groups`` (lists of parameters, e.g. one per module) clips each group's
        norm separately; ``clip_mode="value"`` clips entries instead of norms. ``betas``
        are Adam's. The config's ``lr_schedule`` (or the phase's own ``lr_schedule``)
        runs over this phase's epochs. ``accumulate`` and ``plateau`` are passed to
        :func:`imsa.training.train` (gradient accumulation; learning rate cut on a
        plateau of the selection score). ``shared=True`` marks a phase that depends on
        neither the protocol nor anything outside its arguments (complete data, complete
        validation): with ``context.shared`` set, its checkpoint is kept there under a key
        of the data, seed, config, device and precision, and another experiment of the
        same run restores it instead of training it again.
        """
        check_protocol(self.name, self.protocols, protocol)
        cfg = self.config
        predict = predict or (lambda b: model(b).prediction)
        metric = self.select_metric
        device, precision = context.torch_device, context.precision
        model.to(device)
        self.precision_ = precision

        def batches(epoch):
            return iterate_batches(train, cfg.batch_size, level=self.level, shuffle=True, rng=epoch_rng(seed, epoch), present=sampler, device=device)

        def default_score(epoch):
            results = evaluate(predict, valid, settings, level=self.level, batch_size=cfg.eval_batch_size, device=device, precision=precision)
            return selection_score(results, metric)

        # fused: one vectorised kernel per parameter (CPU and CUDA); 3x faster than foreach on CPU
        if optimizer == "adam":
            opt = torch.optim.Adam(model.parameters(), lr=lr or cfg.lr, betas=betas, weight_decay=cfg.weight_decay, fused=True)
        else:
            opt = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=lr or cfg.lr, betas=betas, fused=True)
        if optimizer_state is not None:
            opt.load_state_dict(copy.deepcopy(optimizer_state))  # several phases may continue one state
        run_identity = {
            "method": self.name,
            "seed": seed,
            "config": dataclasses.asdict(cfg),
            "protocol": protocol.to_dict(),
            "sampler": repr(sampler),
            "settings": sorted(settings),
        }
        checkpoint = context.checkpoint(phase)
        if shared and context.shared is not None:
            del run_identity["protocol"]  # the phase does not read it: every protocol's run may restore it
            key = {
                **run_identity,
                "phase": phase,
                "data": train.dataset.checksum,
                "train": _digest(train.indices),
                "valid": _digest(valid.indices),
                "device": context.torch_device.type,
                "precision": precision,
                "epochs": epochs or cfg.epochs,
                "lr": lr or cfg.lr,
            }
            checkpoint = context.shared / f"{self.name}-{phase}-{fingerprint(key)[:24]}.pt"
            run_identity["key"] = checkpoint.stem
        return run_training(
            model,
            opt,
            epochs=epochs or cfg.epochs,
            batches=batches,
            loss=lambda batch, epoch: loss(model, batch, epoch),
            score=score or default_score,
            maximize=METRICS[metric].higher_is_better,
            patience=cfg.patience,
            grad_clip=cfg.grad_clip if grad_clip == "config" else grad_clip,
            clip_groups=clip_groups,
            clip_mode=clip_mode,
            lr_schedule=lr_factor(lr_schedule or cfg.lr_schedule, epochs or cfg.epochs),
            accumulate=accumulate,
            plateau=plateau,
            phase=phase,
            checkpoint=checkpoint,
            checkpoint_interval=context.checkpoint_interval,
            extra_state=extra_state,
            keep_last=keep_last,
            select_from=select_from,
            keep_optimizer_state=keep_optimizer_state,
            device=device,
            precision=precision,
            fingerprint=run_identity,
            callbacks=context.callbacks,
        )


def check_protocol(name: str, supported: tuple[str, ...], protocol: Protocol) -> None:
    """Refuse a protocol (or a composition with frame-level missing) that the method does not run under."""
    if protocol.kind not in supported:
        raise ConfigError(f"{name} does not run under the {protocol.kind} protocol (it supports {', '.join(supported)}).")
    if protocol.frames and "frames" not in supported:
        raise ConfigError(f"{name} does not run with frame-level missing ({protocol.name}); it supports {', '.join(supported)} without frames.")


def _methods_for(task: str) -> list[str]:
    from .registry import METHODS

    return [name for name in METHODS.names() if task in METHODS[name].tasks] or ["none yet"]


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


def check_aligned(dataset: Dataset, method: str, kernel: int) -> None:
    """Refuse sequences whose modalities differ in steps (a method that pairs step t of one
    modality with step t of another needs word-aligned data) or are shorter than ``kernel``."""
    modalities = dataset.modalities
    widths = {m: dataset.features[m].shape[1] for m in modalities}
    unequal = [m for m in modalities if not np.array_equal(dataset.lengths[m], dataset.lengths[modalities[0]])]
    if len(set(widths.values())) > 1 or unequal:
        what = (
            f"widths {widths}" if len(set(widths.values())) > 1 else f"the lengths of {', '.join(unequal)} differ from those of {modalities[0]} per utterance"
        )
        raise ConfigError(
            f"{dataset.name}: {method} pairs step t of one modality with step t of another, so every modality needs the same steps (word-aligned data such as MMSA aligned_50.pkl); here {what}."
        )
    if min(widths.values()) < kernel:
        raise ConfigError(f"{dataset.name}: {min(widths.values())} steps, fewer than conv_kernel={kernel}; lower conv_kernel.")


class MulTBackbone(MulTModel):
    """The MulT model (projections, trunk, head) of a config with MulT's keys, predicting a
    :class:`Batch`: the ``mult`` baseline and the backbone of DiCMoR and IMDer.

    ``dim``, ``heads``, ``layers``, ``conv_kernel``, ``attn_dropout(_a, _v)``,
    ``embed_dropout``, ``output_dropout`` and ``text_dropout`` are required; a config
    without ``relu_dropout``, ``res_dropout``, ``causal`` or ``padding_mask`` gets the
    released values (0, 0, causal, no padding mask). A config with a ``text_encoder``
    reads the text as that encoder's states of the batch's token ids.
    """

    def __init__(self, spec: DataSpec, cfg):
        encoder = TextEncoder.for_token_ids(cfg.text_encoder) if getattr(cfg, "text_encoder", "") else None
        super().__init__(
            spec.modalities,
            {**spec.dims, **({TEXT: encoder.dim} if encoder is not None else {})},
            spec.output_dim,
            spec.task,
            dim=cfg.dim,
            heads=cfg.heads,
            layers=cfg.layers,
            kernel=cfg.conv_kernel,
            attn_dropout=(cfg.attn_dropout, cfg.attn_dropout_a, cfg.attn_dropout_v),
            relu_dropout=getattr(cfg, "relu_dropout", 0.0),
            res_dropout=getattr(cfg, "res_dropout", 0.0),
            embed_dropout=cfg.embed_dropout,
            output_dropout=cfg.output_dropout,
            text_dropout=cfg.text_dropout,
            causal=getattr(cfg, "causal", True),
            padding_mask=getattr(cfg, "padding_mask", False),
        )
        self.text_encoder = encoder

    def inputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The sequences the projections read: the batch's features, the text encoded from its token ids where there is an encoder."""
        if self.text_encoder is None:
            return batch.inputs
        return {**batch.inputs, TEXT: self.text_encoder.token_states(batch)[0]}

    def forward(self, batch: Batch) -> Output:
        return Output(*super().forward(self.inputs(batch), batch.padding, batch.present))


class PerCondition(torch.nn.Module):
    """One model per fixed condition (utterance level): each utterance goes to the model of
    its own ``present`` pattern (DiCMoR's per-condition recipe)."""

    def __init__(self, models: dict[str, torch.nn.Module], modalities: tuple[str, ...]):
        super().__init__()
        self.names = list(models)
        self.models = torch.nn.ModuleDict(models)
        self.conditions = [c.name for c in fixed_conditions(modalities)]
        self.lookup = {i: name for i, name in enumerate(self.conditions) if name in models}  # condition index -> model

    def forward(self, batch: Batch) -> Output:
        conditions = condition_index(batch.present.cpu().numpy())
        prediction = feature = None
        for index in np.unique(conditions):
            if int(index) not in self.lookup:
                raise ConfigError(f"No model was trained for condition {self.conditions[int(index)]}; trained: {', '.join(self.names)}.")
            rows = torch.from_numpy(np.flatnonzero(conditions == index)).to(batch.present.device)
            out = self.models[self.lookup[int(index)]](batch.select(rows))
            if prediction is None:
                prediction = out.prediction.new_zeros((len(batch),) + out.prediction.shape[1:])
                feature = None if out.feature is None else out.feature.new_zeros((len(batch),) + out.feature.shape[1:])
            prediction[rows] = out.prediction
            if feature is not None:
                feature[rows] = out.feature
        return Output(prediction, feature)


def fit_standardizers(norms: torch.nn.ModuleDict, train: Subset) -> None:
    """Fit each modality's :class:`~imsa.nn.layers.Standardize` on the training utterances."""
    batch = tensor_cache(train.dataset).gather(train.indices)
    for m, norm in norms.items():
        norm.fit(pooled(batch, m))


class SinglePhaseMethod(Method):
    """A method trained in one phase on the task loss, with ``config.train_missing`` masks
    (the random protocol's rate under that protocol).

    The model's ``norms`` (per-modality :class:`~imsa.nn.layers.Standardize`), if it has
    them, are fitted on the training data first.
    """

    def fit(self, train, valid, *, protocol=None, seed=0, context=None):
        protocol, context = protocol or Protocol(), context or RunContext()
        torch.manual_seed(seed)
        self.spec_ = self.training_spec(train)
        model = self.build(self.spec_)
        if hasattr(model, "norms"):
            fit_standardizers(model.norms, train)
        self.model_ = model
        result = self.train_phase(
            model,
            train,
            valid,
            protocol=protocol,
            seed=seed,
            loss=lambda model, batch, epoch: task_loss(model(batch).prediction, batch, self.spec_.task),
            sampler=protocol.training_sampler(make_sampler(self.config.train_missing)),
            settings=protocol.settings(valid),
            context=context,
        )
        self.phases_ = [result]
        return self
