"""Self-MM (Yu et al., AAAI 2021): self-supervised multi-task learning, as MMSA releases it.

One network, four outputs. The text is the ``[CLS]`` state of a BERT-style encoder;
audio and video each go through a one-layer LSTM over their real steps (its final state,
dropout, a linear layer). The three representations are concatenated and a three-layer
head predicts the fused output M; each representation also has a three-layer head of its
own (T, A, V). M is trained on the labels; T, A and V on labels that the *unimodal label
generation module* (ULGM, :class:`~imsa.methods.unimodal_labels.UnimodalLabels`) makes per utterance from the distances
of its features to the positive and negative class centres of each task, moved with
momentum towards a new value once per epoch from the second on. The prediction is M.
Spec, fidelity and results: ``docs/methods/self_mm.md``.

Recipe (MMSA ``config_regression.json``, ``self_mm``; ``trains/multiTask/SELF_MM.py``):
Adam with an L2 penalty in five groups (the text encoder's weights at ``text_lr`` 5e-5 with
``text_weight_decay``, its biases and LayerNorm weights at ``text_lr`` without decay, the
audio sub-network at ``audio_lr``, the video one at ``video_lr``, the heads at ``lr``, each
with its decay), batches of 16 whose gradients are summed over ``accumulate`` = 4 batches
per step, loss ``|M - y| + sum_s tanh(|y_s - y|) |S - y_s|``, early stopping after 8 epochs
without a better validation score. A complete-data model: it trains on complete data by
default (``train_missing=complete``, as the missing-modality papers compare it) and is
scored with missing modalities zeroed; every protocol's masks apply.

Text: ``text_encoder=''`` (the default) reads the dataset's precomputed text features and
takes their first step, in MMSA's files the ``[CLS]`` state of a frozen BERT (the released
``use_finetune=False`` set-up); ``minilm`` or the path of a local Hugging Face model folder
fine-tunes that encoder on the file's token ids (``Batch.tokens``) and takes its ``[CLS]``
state, as the released code fine-tunes BERT (``use_finetune=True``).

Departures from the released code, and why:

* A missing modality enters as zeros, by the batch's ``present`` mask (imsa's rule: no
  method reads a missing modality's values): a zero text representation (with a text
  encoder its ``[CLS]`` state is zeroed), zero audio or video frames over the real
  length. With two modalities the fusion concatenates two representations and there are
  two unimodal heads (the released network takes exactly three).
* When a *training* mask removes modality ``s`` from an utterance (never under the
  default complete-data training), ULGM skips ``s`` for that utterance in that batch: no
  loss on its head, no label update, its stored feature kept. The representation of
  zeros is the same for every utterance, so its distance to the class centres says
  nothing about the utterance, and storing it would drag both centres of ``s`` towards
  one point for every utterance; the last feature seen with ``s`` present stays the best
  estimate. The fused label, feature and loss are kept: M is trained on what it sees.
* A class centre over an empty class (no stored label of that task positive, or none
  negative) keeps its previous value: the released mean of an empty set is NaN, which
  makes every later label of that task NaN.
* The LSTMs have one layer and no layer setting: the released sub-network fails with
  more (it keeps the layer axis of the final state). MMSA's ``text_out`` and
  ``t_bert_dropout`` are not settings: the first must equal the encoder's width, the
  second is read by nothing.
* Each modality is packed with its own length; MMSA's aligned mode (not used by any
  released config) packs audio and video with the text's word-piece count.
* Epochs are selected on the validation MAE over utterances (MMSA: the mean of batch
  means of the L1 loss, an improvement counted only above 1e-6), at most ``epochs`` (100;
  MMSA has no cap).
* ``text_readout=mean`` (not in the release; ``first`` is) averages the text states over
  the real steps, for precomputed text features without a ``[CLS]`` step (word vectors).
* Classification is an extension (the released trainer asserts regression, and ULGM
  needs signed intensities): M gives the logits and is trained with cross-entropy alone;
  ULGM and the unimodal heads take no part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..batch import TEXT, Batch
from ..config import COUNT, NON_NEGATIVE, POSITIVE, PROBABILITY
from ..errors import ConfigError
from ..missing import make_sampler
from ..nn.subnets import TextSubNet
from ..nn.text_encoder import TextEncoder
from ..protocols import Protocol
from ..training import RunContext
from .base import Method
from .common import text_vector
from .phase import Phase, task_loss
from .registry import register_method
from .spec import DataSpec, Output, TrainConfig
from .unimodal_labels import NAMES, UnimodalLabels, released_param_groups, ulgm_loss

ORDER = ("l", "a", "v")  # the released concatenation's order
self_mm_loss = ulgm_loss  # the released multi-task loss with ULGM's update, under Self-MM's name


@dataclass(frozen=True)
class SelfMMConfig(TrainConfig):
    """Self-MM's defaults: MMSA's MOSI setting (MMSA's names in brackets).

    Attributes
    ----------
    lr, weight_decay : float
        Adam's rate and L2 penalty of the four heads (``learning_rate_other``,
        ``weight_decay_other``).
    text_lr, text_weight_decay : float
        The same for the text encoder, when one is fine-tuned; its biases and LayerNorm
        weights take no decay (``learning_rate_bert``, ``weight_decay_bert``).
    audio_lr, audio_weight_decay, video_lr, video_weight_decay : float
        The same for the audio and video sub-networks.
    accumulate : int
        Batches whose summed gradients make one optimiser step (``update_epochs``).
    audio_hidden, video_hidden : int
        LSTM widths (``a_lstm_hidden_size``, ``v_lstm_hidden_size``).
    audio_out, video_out : int
        Widths of the audio and video representations.
    audio_lstm_dropout, video_lstm_dropout : float
        Dropout on the LSTMs' final states (``a_lstm_dropout``, ``v_lstm_dropout``).
    post_fusion_dim, post_text_dim, post_audio_dim, post_video_dim : int
        Widths of the four heads; the first layer's output is the feature ULGM stores.
    post_fusion_dropout, post_text_dropout, post_audio_dropout, post_video_dropout : float
        Dropout on each head's input.
    label_bound : float
        Generated labels are clipped to ``[-label_bound, label_bound]`` (``H``).
    exclude_zero : bool
        The positive class is ``label > 0`` (``>= 0`` if False) (``excludeZero``).
    text_encoder : str
        ``""`` reads the precomputed text features; ``minilm`` or a local Hugging Face
        model folder fine-tunes that encoder on the dataset's token ids (``text_bert``).
    text_readout : str
        ``first`` (the ``[CLS]`` state, as released) or ``mean`` (over the real steps).
    """

    lr: float = 1e-3
    weight_decay: float = 1e-3
    text_lr: float = 5e-5
    text_weight_decay: float = 1e-3
    audio_lr: float = 5e-3
    audio_weight_decay: float = 1e-3
    video_lr: float = 5e-3
    video_weight_decay: float = 1e-3
    batch_size: int = 16
    accumulate: int = 4
    patience: int | None = 8
    audio_hidden: int = 16
    video_hidden: int = 32
    audio_out: int = 16
    video_out: int = 32
    audio_lstm_dropout: float = 0.0
    video_lstm_dropout: float = 0.0
    post_fusion_dim: int = 128
    post_text_dim: int = 32
    post_audio_dim: int = 16
    post_video_dim: int = 32
    post_fusion_dropout: float = 0.0
    post_text_dropout: float = 0.1
    post_audio_dropout: float = 0.1
    post_video_dropout: float = 0.0
    label_bound: float = 3.0
    exclude_zero: bool = True
    text_encoder: str = ""
    text_readout: str = "first"

    DOMAINS: ClassVar[dict] = {
        **TrainConfig.DOMAINS,
        **{k: POSITIVE for k in ("text_lr", "audio_lr", "video_lr", "label_bound")},
        **{k: NON_NEGATIVE for k in ("text_weight_decay", "audio_weight_decay", "video_weight_decay")},
        **{
            k: COUNT
            for k in (
                "accumulate",
                "audio_hidden",
                "video_hidden",
                "audio_out",
                "video_out",
                "post_fusion_dim",
                "post_text_dim",
                "post_audio_dim",
                "post_video_dim",
            )
        },
        **{
            k: PROBABILITY
            for k in (
                "audio_lstm_dropout",
                "video_lstm_dropout",
                "post_fusion_dropout",
                "post_text_dropout",
                "post_audio_dropout",
                "post_video_dropout",
            )
        },
    }
    CHOICES: ClassVar[dict] = {"text_readout": ("first", "mean"), "exclude_zero": (True, False)}


class SelfMMNet(nn.Module):
    """The released network over the dataset's modalities (all three, as released, or two).

    Parameter names are the released module's (``text_model.model.*`` for a fine-tuned
    encoder, ``audio_model``/``video_model``, ``post_fusion_layer_1``.. ``post_video_layer_3``),
    but for the LSTMs' tensors, under ``rnn.lstm.`` here.
    """

    def __init__(self, spec: DataSpec, cfg: SelfMMConfig, text_encoder: TextEncoder | None = None):
        super().__init__()
        self.task, self.modalities, self.readout = spec.task, spec.modalities, cfg.text_readout
        self.unimodal = tuple(m for m in ORDER if m in spec.modalities)
        out = spec.output_dim
        self.text_model = text_encoder
        widths = {"a": cfg.audio_out, "v": cfg.video_out}
        if TEXT in spec.modalities:
            widths[TEXT] = text_encoder.dim if text_encoder is not None else spec.dims[TEXT]
        if "a" in spec.modalities:
            self.audio_model = TextSubNet(spec.dims["a"], cfg.audio_hidden, cfg.audio_out, cfg.audio_lstm_dropout)
        if "v" in spec.modalities:
            self.video_model = TextSubNet(spec.dims["v"], cfg.video_hidden, cfg.video_out, cfg.video_lstm_dropout)
        heads = {"fusion": (sum(widths[m] for m in self.unimodal), cfg.post_fusion_dim, cfg.post_fusion_dropout)}
        heads.update({NAMES[m]: (widths[m], getattr(cfg, f"post_{NAMES[m]}_dim"), getattr(cfg, f"post_{NAMES[m]}_dropout")) for m in self.unimodal})
        for name, (width, dim, dropout) in heads.items():  # the released order: fusion, text, audio, video
            setattr(self, f"post_{name}_dropout", nn.Dropout(dropout))
            setattr(self, f"post_{name}_layer_1", nn.Linear(width, dim))
            setattr(self, f"post_{name}_layer_2", nn.Linear(dim, dim))
            setattr(self, f"post_{name}_layer_3", nn.Linear(dim, out))

    def representations(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Each modality's representation, from zeros where the batch marks it missing."""
        out = {}
        for m in self.unimodal:
            present = batch.present[:, self.modalities.index(m)]
            if m == TEXT:
                out[m] = text_vector(batch, self.text_model, self.readout)
            else:
                x = batch.inputs[m] * present[:, None, None].to(batch.inputs[m].dtype)
                out[m] = getattr(self, f"{NAMES[m]}_model")(x, batch.padding[m])
        return out

    def head(self, name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One head: its feature (the first layer's output) and its prediction."""
        feature = F.relu(getattr(self, f"post_{name}_layer_1")(getattr(self, f"post_{name}_dropout")(x)))
        prediction = getattr(self, f"post_{name}_layer_3")(F.relu(getattr(self, f"post_{name}_layer_2")(feature)))
        return feature, prediction.squeeze(-1) if self.task == "regression" else prediction

    def run(self, batch: Batch) -> dict[str, dict[str, torch.Tensor]]:
        """``{"features": ..., "outputs": ...}``, each keyed ``fusion`` and by modality."""
        representation = self.representations(batch)
        features, outputs = {}, {}
        features["fusion"], outputs["fusion"] = self.head("fusion", torch.cat([representation[m] for m in self.unimodal], dim=-1))
        for m in self.unimodal:
            features[m], outputs[m] = self.head(NAMES[m], representation[m])
        return {"features": features, "outputs": outputs}

    def forward(self, batch: Batch) -> Output:
        representation = self.representations(batch)
        feature, prediction = self.head("fusion", torch.cat([representation[m] for m in self.unimodal], dim=-1))
        return Output(prediction, feature)


@register_method
class SelfMM(Method):
    """Self-MM: fused and unimodal heads, the unimodal ones on self-generated labels (ULGM), a complete-data model."""

    name = "self_mm"
    Config = SelfMMConfig
    inputs = "sequence"
    default_threads = 1
    token_text = True
    tiny_config: ClassVar[dict] = {
        "accumulate": 1,
        "audio_hidden": 4,
        "video_hidden": 4,
        "audio_out": 4,
        "video_out": 4,
        "post_fusion_dim": 8,
        "post_text_dim": 4,
        "post_audio_dim": 4,
        "post_video_dim": 4,
    }
    # The unimodal heads are trained on ULGM's labels only, never by the fused output's loss.
    no_task_gradient: ClassVar[tuple[str, ...]] = tuple(f"post_{name}_layer_{k}" for name in ("text", "audio", "video") for k in (1, 2, 3))

    def data_spec(self, dataset):
        """The dataset's spec, refusing one without two or three of text, audio and video."""
        spec = super().data_spec(dataset)
        if len(spec.modalities) < 2 or not set(spec.modalities) <= set(ORDER):
            raise ConfigError(f"Self-MM fuses two or three of text, audio and video (l, a, v); {dataset.name} has {', '.join(spec.modalities)}.")
        return spec

    def build(self, spec: DataSpec) -> nn.Module:
        """The untrained :class:`SelfMMNet` for ``spec`` (loading the text encoder, if any)."""
        encoder = TextEncoder.for_token_ids(self.config.text_encoder) if self.config.text_encoder and TEXT in spec.modalities else None
        return SelfMMNet(spec, self.config, encoder)

    def param_groups(self, model: SelfMMNet) -> list[dict]:
        """MMSA's five Adam groups: the text encoder's weights and its biases and LayerNorm
        weights (no decay) at ``text_lr``, audio and video at their own rates and decays,
        the heads at ``lr`` and ``weight_decay``; empty groups left out."""
        return released_param_groups(model, self.config)

    def fit(self, train, valid, *, protocol=None, seed=0, context=None):
        protocol, context = protocol or Protocol(), context or RunContext()
        torch.manual_seed(seed)
        self.spec_ = self.training_spec(train)
        model = self.build(self.spec_)
        self.model_ = model
        task, c = self.spec_.task, self.config
        if task == "regression":
            widths = {"fusion": c.post_fusion_dim, **{m: getattr(c, f"post_{NAMES[m]}_dim") for m in model.unimodal}}
            store = UnimodalLabels.for_training(train, widths, device=context.torch_device, bound=c.label_bound, exclude_zero=c.exclude_zero)

            def loss(model, batch, epoch):
                return self_mm_loss(model, batch, epoch, store)
        else:  # an extension: the fused output alone, with cross-entropy
            store = None

            def loss(model, batch, epoch):
                return task_loss(model(batch).prediction, batch, task)

        result = self.train_phase(
            model,
            train,
            valid,
            Phase(
                loss=loss,
                sampler=protocol.training_sampler(make_sampler(c.train_missing)),
                settings=protocol.settings(valid),
                optimizer="adam",
                param_groups=self.param_groups(model),
                accumulate=c.accumulate,
                extra_state=store,
            ),
            protocol=protocol,
            seed=seed,
            context=context,
        )
        self.phases_ = [result]
        self.ulgm_ = store  # the label store at the end of training (None for classes)
        return self
