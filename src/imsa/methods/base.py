"""The method contract: scikit-learn's ``fit`` / ``predict`` for missing-modality models.

A method stores its config in ``__init__`` and nothing else; ``fit`` builds and trains
its model(s) from the training data's shapes; ``predict`` reads an explicit ``present``
mask. Recipes with several phases call :meth:`Method.train_phase` once per phase, which
runs the one loop of :mod:`imsa.training`.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import ClassVar

import numpy as np
import torch

from ..batch import TEXT, Batch
from ..config import build_config
from ..data.dataset import Dataset, Subset
from ..data.feature_stats import feature_statistics
from ..errors import DataError, NotFittedError
from ..evaluation import metrics_of, predict_settings
from ..frames import FrameDrop
from ..missing import make_sampler
from ..nn.text_encoder import check_token_ids
from ..predictions import Predictions, modality_mask
from ..protocols import Protocol
from ..training import RunContext, TrainResult
from .phase import Phase, run_phase
from .spec import DataSpec, Output, TrainConfig, method_data_spec


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
    protocols: ClassVar[tuple[str, ...]] = ("fixed", "random", "frames", "mr", "noise")
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
        """The fitted model's output on ``batch`` (which modalities it reads is the batch's ``present`` mask)."""
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
        aligned with ``subset.indices`` (see :func:`imsa.evaluation.predict_settings`)."""
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
        """Metrics on ``subset`` under each setting (see :func:`imsa.evaluation.evaluate`)."""
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
        mask = modality_mask(subset, names, modalities, present, owner=f"this {self.name} model")
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
        """The fitted method as plain data: its name, config, data spec and model weights (what a model file stores)."""
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
        """The spec of the training data (see :func:`~imsa.methods.spec.method_data_spec`)."""
        return method_data_spec(self, dataset)

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
        """The validation metric epochs are selected on: the config's ``select_metric``, else MAE, weighted F1 or the multilabel F1 by task."""
        return self.config.select_metric or {"regression": "mae", "classification": "wf1", "multilabel": "emotion_binary_f1"}[self.spec_.task]

    def train_phase(
        self, model: torch.nn.Module, train: Subset, valid: Subset, phase: Phase, *, protocol: Protocol, seed: int, context: RunContext
    ) -> TrainResult:
        """Run one training phase of ``model`` (see :class:`~imsa.methods.phase.Phase`) with the shared loop."""
        return run_phase(self, model, train, valid, phase, protocol=protocol, seed=seed, context=context)
