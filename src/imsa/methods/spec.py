"""What every method shares before any training: the data spec a model is built for, what
a model returns, the config keys every method has, and which protocols a method runs under."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..batch import TEXT
from ..config import COUNT, NON_NEGATIVE, POSITIVE, check_domains
from ..data.dataset import Dataset
from ..errors import ConfigError, DataError, invalid_parameter
from ..metrics import METRICS
from ..missing import make_sampler
from ..nn.text_encoder import check_token_ids
from ..protocols import Protocol
from ..training import lr_factor


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

    # Keys renamed since a release (old name -> new; the old is accepted with a warning for one
    # release) and keys added with a default that reproduces the behaviour from before them
    # (key -> that value): both keep the identity of artefacts of that release (imsa.identity).
    RENAMED: ClassVar[dict] = {}
    ADDED: ClassVar[dict] = {}

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


def check_protocol(name: str, supported: tuple[str, ...], protocol: Protocol) -> None:
    """Refuse a protocol (or a composition with frame-level missing) that the method does not run under."""
    if protocol.kind not in supported:
        raise ConfigError(f"{name} does not run under the {protocol.kind} protocol (it supports {', '.join(supported)}).")
    if protocol.frames and "frames" not in supported:
        raise ConfigError(f"{name} does not run with frame-level missing ({protocol.name}); it supports {', '.join(supported)} without frames.")


def method_data_spec(method, dataset: Dataset) -> DataSpec:
    """The spec of ``method``'s training data, refusing a task it cannot model, vectors where it
    reads sequences, and a modality whose features are all zero (a placeholder, e.g. the text of
    a MAG file loaded with ``word_pieces``) that it would read as if it were data."""
    if dataset.task not in method.tasks:
        hint = " (load a MulT IEMOCAP file with --set data.emotions=classes for one emotion per utterance)" if dataset.task == "multilabel" else ""
        raise ConfigError(
            f"{dataset.source}: {method.name} models {' and '.join(method.tasks)} tasks, not {dataset.task}{hint}; methods that do: {', '.join(_methods_for(dataset.task))}."
        )
    vectors = [m for m in dataset.modalities if not dataset.is_sequence(m) and not method.encodes_itself(m)]
    if method.inputs == "sequence" and vectors:
        raise ConfigError(
            f"{dataset.source}: {method.name} reads time sequences, but modality {', '.join(map(repr, vectors))} holds one vector per utterance. "
            "Use sequence data: an MMSA aligned_50.pkl or unaligned_50.pkl, a MulT *_data.pkl, a MAG pickle, an imsa extract folder with --set data.features=sequences, "
            "or synthetic with sequence_length (e.g. --set data.sequence_length=50)."
        )
    for m in dataset.modalities:
        if not method.encodes_itself(m) and not np.any(dataset.features[m]):
            hint = f" ({method.encode_text_hint})" if m == TEXT and method.encode_text_hint else ""
            raise DataError(
                f"{dataset.name}: the features of modality {m!r} are all zero, a placeholder rather than data; "
                f"{method.name} would train on it as if it were real{hint}. Drop the modality or use a method that encodes it."
            )
    if method.reads_text_tokens(method.config):
        check_token_ids(dataset, method.config.text_encoder)
    return DataSpec.of(dataset)


def _methods_for(task: str) -> list[str]:
    from .registry import METHODS

    return [name for name in METHODS.names() if task in METHODS[name].tasks] or ["none yet"]
