"""TETFN (Wang et al., Pattern Recognition 2023): a text enhanced transformer fusion network, as MMSA releases it.

Text, audio and video become sequences of width ``dim``: the text's token states (or the
file's text features) through a bias-free convolution, audio and video each through an
LSTM over every step and a bias-free convolution. For each target modality two
crossmodal transformers (MulT's blocks, causal mask) bring in the other two: the text
attends to audio and to video directly; audio and video attend to the text directly, and
to each other through a *text enhanced transformer* (the source first attends to the
text, with positions, in one layer; the target then attends to that text-enhanced source
in two). The two streams of a target are concatenated, pass a two-layer self-attention
memory, and its last step is kept; the three are concatenated and a three-layer head
predicts the fused output M. Each modality's sequence, max-pooled over time, has a
three-layer head of its own (T, A, V), trained as Self-MM's on labels of the *unimodal
label generation module* (ULGM, :class:`~imsa.methods.unimodal_labels.UnimodalLabels`).
The prediction is M. Spec, fidelity and results: ``docs/methods/tetfn.md``.

Recipe (MMSA ``config_regression.json``, ``tetfn``; ``trains/multiTask/TETFN.py``, Self-MM's
trainer line for line): Adam with an L2 penalty in five groups (the text encoder's weights
at ``text_lr`` 3e-5 with ``text_weight_decay``, its biases and LayerNorm weights without
decay, the audio sub-network at ``audio_lr``, the video one at ``video_lr``, the rest at
``lr``, each with its decay), batches of 64 whose gradients are summed over
``accumulate`` = 4 batches per step, loss ``|M - y| + sum_s tanh(|y_s - y|) |S - y_s|``,
early stopping after 8 epochs without a better validation score. A complete-data model:
it trains on complete data by default (``train_missing=complete``) and is scored with
missing modalities zeroed; every protocol's masks apply.

Text: ``text_encoder=''`` (the default) reads the dataset's precomputed text features as
the sequence (in MMSA's files frozen BERT states or word vectors); ``minilm`` or the path
of a local Hugging Face model folder fine-tunes that encoder on the file's token ids
(``Batch.tokens``) and reads its token states, as the released code fine-tunes BERT
(``use_finetune=True``).

Fidelity (``docs/methods/tetfn.md``): with the released module's weights copied in and
the same inputs (MOSI's widths and config, MiniLM as the text model of both, word-aligned
50-step sequences), the outputs M, T, A, V and the four features are bit-identical in
eval mode; in training mode without dropout, over three epochs of ULGM on one batch, the
losses and every generated label are bit-identical and parameter gradients differ by at
most 2.6e-8 (largest 0.25). The parameter count at MOSI's widths (768-d BERT states, 5-d
audio, 20-d video), 1,254,224 besides the text encoder, is the released module's.

Departures from the released code, and why:

* A missing modality enters as zeros, by the batch's ``present`` mask (imsa's rule: no
  method reads a missing modality's values): the text sequence (features or token states)
  is zeroed, audio and video frames are zeroed before their LSTMs.
* Two modalities (text and audio or video) are accepted: the text attends to the other
  one, the other one to the text, and no text enhanced transformer is built (it needs two
  non-text modalities); the fusion concatenates two memory outputs. The text is required.
* ``video_kernel`` is the video convolution's kernel. The released network builds it
  with ``conv1d_kernel_size_a`` (``conv1d_kernel_size_v`` is read by nothing); the
  packaged configs set ``video_kernel`` to the value the release therefore uses (1 on
  MOSI and MOSEI, 5 on SIMS), so the released behaviour is the default.
* The LSTMs have one layer and no dropout setting: every released config has one layer,
  where PyTorch's LSTM dropout does nothing.
* When a *training* mask removes modality ``s`` from an utterance (never under the
  default complete-data training), ULGM skips ``s`` for that utterance in that batch, and
  a class centre over an empty class keeps its value, as in Self-MM (``self_mm.py``).
* Epochs are selected on the validation MAE over utterances (MMSA: the mean of batch
  means of the L1 loss, an improvement counted only above 1e-6), at most ``epochs`` (100;
  MMSA has no cap).
* Classification is an extension (the released trainer asserts regression, and ULGM
  needs signed intensities): M gives the logits and is trained with cross-entropy alone.
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
from ..nn.mult import TransformerEncoder
from ..nn.text_encoder import TextEncoder
from ..protocols import Protocol
from ..training import RunContext
from .base import Method
from .phase import Phase, task_loss
from .registry import register_method
from .spec import DataSpec, Output, TrainConfig
from .unimodal_labels import NAMES, UnimodalLabels, released_param_groups, ulgm_loss

ORDER = ("l", "a", "v")  # the released concatenation's order
LAYERS = 2  # every released crossmodal, memory and upper text-enhanced encoder has two layers


@dataclass(frozen=True)
class TETFNConfig(TrainConfig):
    """TETFN's defaults: MMSA's MOSI setting (MMSA's names in brackets).

    Attributes
    ----------
    lr, weight_decay : float
        Adam's rate and L2 penalty of everything but the text encoder and the audio and
        video sub-networks (``learning_rate_other``, ``weight_decay_other``).
    text_lr, text_weight_decay : float
        The same for the text encoder, when one is fine-tuned; its biases and LayerNorm
        weights take no decay (``learning_rate_bert``, ``weight_decay_bert``).
    audio_lr, audio_weight_decay, video_lr, video_weight_decay : float
        The same for the audio and video sub-networks (LSTM and convolution).
    accumulate : int
        Batches whose summed gradients make one optimiser step (``update_epochs``).
    audio_hidden, video_hidden : int
        LSTM widths (``a_lstm_hidden_size``, ``v_lstm_hidden_size``).
    text_kernel, audio_kernel, video_kernel : int
        Kernels of the bias-free convolutions to ``dim`` channels (``conv1d_kernel_size_l``,
        ``conv1d_kernel_size_a``; the released video one is ``conv1d_kernel_size_a`` too).
    dim, heads : int
        Width of every stream (the memories have twice it) and attention heads
        (``dst_feature_dims``, ``nheads``).
    attn_dropout, attn_dropout_a, attn_dropout_v : float
        Attention dropout of the blocks attending to text (also the memories' and the text
        enhanced transformers'), to audio, to video.
    relu_dropout, res_dropout, embed_dropout : float
        The transformer blocks' other dropouts.
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
    """

    lr: float = 3e-4
    weight_decay: float = 0.01
    text_lr: float = 3e-5
    text_weight_decay: float = 1e-3
    audio_lr: float = 5e-4
    audio_weight_decay: float = 0.01
    video_lr: float = 3e-4
    video_weight_decay: float = 0.0
    batch_size: int = 64
    accumulate: int = 4
    patience: int | None = 8
    audio_hidden: int = 16
    video_hidden: int = 64
    text_kernel: int = 1
    audio_kernel: int = 1
    video_kernel: int = 1
    dim: int = 50
    heads: int = 5
    attn_dropout: float = 0.1
    attn_dropout_a: float = 0.0
    attn_dropout_v: float = 0.1
    relu_dropout: float = 0.0
    res_dropout: float = 0.1
    embed_dropout: float = 0.0
    post_fusion_dim: int = 64
    post_text_dim: int = 32
    post_audio_dim: int = 32
    post_video_dim: int = 16
    post_fusion_dropout: float = 0.0
    post_text_dropout: float = 0.0
    post_audio_dropout: float = 0.0
    post_video_dropout: float = 0.0
    label_bound: float = 3.0
    exclude_zero: bool = True
    text_encoder: str = ""

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
                "text_kernel",
                "audio_kernel",
                "video_kernel",
                "dim",
                "heads",
                "post_fusion_dim",
                "post_text_dim",
                "post_audio_dim",
                "post_video_dim",
            )
        },
        **{
            k: PROBABILITY
            for k in (
                "attn_dropout",
                "attn_dropout_a",
                "attn_dropout_v",
                "relu_dropout",
                "res_dropout",
                "embed_dropout",
                "post_fusion_dropout",
                "post_text_dropout",
                "post_audio_dropout",
                "post_video_dropout",
            )
        },
    }
    CHOICES: ClassVar[dict] = {"exclude_zero": (True, False)}

    def __post_init__(self):
        super().__post_init__()
        if self.dim % self.heads:
            raise ConfigError(f"TETFN: dim={self.dim} is not divisible by heads={self.heads}.")


class TextEnhancedTransformer(nn.Module):
    """The source attends to the text (one layer), then the target to that text-enhanced
    source (two layers), both with positions; the output has the target's steps."""

    def __init__(self, dim: int, heads: int, **dropouts):
        super().__init__()
        self.lower_mha = TransformerEncoder(dim, heads, 1, positions=True, **dropouts)
        self.upper_mha = TransformerEncoder(dim, heads, LAYERS, positions=True, **dropouts)

    def forward(self, source: torch.Tensor, target: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.upper_mha(target, self.lower_mha(source, text))


class AudioVideoSubNet(nn.Module):
    """An LSTM over every step (padding included, as released), then a bias-free convolution
    to ``dim`` channels: ``(B, T, D)`` -> ``(B, T - kernel + 1, dim)``."""

    def __init__(self, in_size: int, hidden: int, dim: int, kernel: int):
        super().__init__()
        self.rnn = nn.LSTM(in_size, hidden, batch_first=True)
        self.conv = nn.Conv1d(hidden, dim, kernel, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states, _ = self.rnn(x)
        return self.conv(states.transpose(1, 2)).transpose(1, 2)


class TETFNNet(nn.Module):
    """The released network over the text and one or both of audio and video.

    Parameter names are the released module's (``text_model.model.*`` for a fine-tuned
    encoder, ``audio_model``/``video_model``, ``proj_l``, ``trans_l_with_a`` ..
    ``trans_v_mem``, ``post_fusion_layer_1`` .. ``post_video_layer_3``) down to the
    encoders, whose inner names are those of :mod:`imsa.nn.mult`.
    """

    def __init__(self, spec: DataSpec, cfg: TETFNConfig, text_encoder: TextEncoder | None = None):
        super().__init__()
        self.task, self.modalities = spec.task, spec.modalities
        self.unimodal = tuple(m for m in ORDER if m in spec.modalities)
        out, dim = spec.output_dim, cfg.dim
        self.text_model = text_encoder
        text_width = text_encoder.dim if text_encoder is not None else spec.dims[TEXT]
        if "a" in spec.modalities:
            self.audio_model = AudioVideoSubNet(spec.dims["a"], cfg.audio_hidden, dim, cfg.audio_kernel)
        if "v" in spec.modalities:
            self.video_model = AudioVideoSubNet(spec.dims["v"], cfg.video_hidden, dim, cfg.video_kernel)
        self.proj_l = nn.Conv1d(text_width, dim, cfg.text_kernel, bias=False)
        common = dict(relu_dropout=cfg.relu_dropout, res_dropout=cfg.res_dropout, embed_dropout=cfg.embed_dropout)
        attending = {"l": cfg.attn_dropout, "a": cfg.attn_dropout_a, "v": cfg.attn_dropout_v}
        for t in self.unimodal:  # target t takes every other modality s
            for s in self.sources(t):
                if TEXT in (t, s):
                    block = TransformerEncoder(dim, cfg.heads, LAYERS, positions=False, attn_dropout=attending[s], **common)
                else:
                    block = TextEnhancedTransformer(dim, cfg.heads, attn_dropout=cfg.attn_dropout, **common)
                setattr(self, f"trans_{t}_with_{s}", block)
        width = (len(self.unimodal) - 1) * dim
        for t in self.unimodal:
            setattr(self, f"trans_{t}_mem", TransformerEncoder(width, cfg.heads, LAYERS, positions=False, attn_dropout=cfg.attn_dropout, **common))
        heads = {"fusion": (len(self.unimodal) * width, cfg.post_fusion_dim, cfg.post_fusion_dropout)}
        heads.update({NAMES[m]: (dim, getattr(cfg, f"post_{NAMES[m]}_dim"), getattr(cfg, f"post_{NAMES[m]}_dropout")) for m in self.unimodal})
        for name, (in_width, hidden, dropout) in heads.items():  # the released order: fusion, text, audio, video
            setattr(self, f"post_{name}_dropout", nn.Dropout(dropout))
            setattr(self, f"post_{name}_layer_1", nn.Linear(in_width, hidden))
            setattr(self, f"post_{name}_layer_2", nn.Linear(hidden, hidden))
            setattr(self, f"post_{name}_layer_3", nn.Linear(hidden, out))

    def sources(self, target: str) -> tuple[str, ...]:
        """The modalities ``target`` attends to, in the released concatenation's order."""
        return tuple(m for m in self.unimodal if m != target)

    def sequences(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Each modality's ``(B, T', dim)`` sequence, from zeros where the batch marks it missing."""
        out = {}
        for m in self.unimodal:
            present = batch.present[:, self.modalities.index(m)]
            x = self.text_model.token_states(batch)[0] if m == TEXT and self.text_model is not None else batch.inputs[m]
            x = x * present[:, None, None].to(x.dtype)
            if m == TEXT:
                out[m] = self.proj_l(x.transpose(1, 2)).transpose(1, 2)
            else:
                out[m] = getattr(self, f"{NAMES[m]}_model")(x)
        return out

    def head(self, name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One head: its feature (the first layer's output) and its prediction."""
        feature = F.relu(getattr(self, f"post_{name}_layer_1")(getattr(self, f"post_{name}_dropout")(x)))
        prediction = getattr(self, f"post_{name}_layer_3")(F.relu(getattr(self, f"post_{name}_layer_2")(feature)))
        return feature, prediction.squeeze(-1) if self.task == "regression" else prediction

    def fused(self, seq: dict[str, torch.Tensor]) -> torch.Tensor:
        """The memories' last steps, concatenated in the released order."""
        last = []
        for t in self.unimodal:
            streams = []
            for s in self.sources(t):
                block = getattr(self, f"trans_{t}_with_{s}")
                # a text enhanced block reads the source, the target and the text
                streams.append(block(seq[t], seq[s]) if TEXT in (t, s) else block(seq[s], seq[t], seq[TEXT]))
            last.append(getattr(self, f"trans_{t}_mem")(torch.cat(streams, dim=-1))[:, -1])
        return torch.cat(last, dim=-1)

    def run(self, batch: Batch) -> dict[str, dict[str, torch.Tensor]]:
        """``{"features": ..., "outputs": ...}``, each keyed ``fusion`` and by modality."""
        seq = self.sequences(batch)
        features, outputs = {}, {}
        features["fusion"], outputs["fusion"] = self.head("fusion", self.fused(seq))
        for m in self.unimodal:  # each modality's sequence max-pooled over time
            features[m], outputs[m] = self.head(NAMES[m], seq[m].amax(dim=1))
        return {"features": features, "outputs": outputs}

    def forward(self, batch: Batch) -> Output:
        feature, prediction = self.head("fusion", self.fused(self.sequences(batch)))
        return Output(prediction, feature)


@register_method
class TETFN(Method):
    """TETFN: text enhanced crossmodal transformers, fused and unimodal heads, the unimodal ones on ULGM's labels; a complete-data model."""

    name = "tetfn"
    Config = TETFNConfig
    inputs = "sequence"
    default_threads = 1
    token_text = True
    tiny_config: ClassVar[dict] = {
        "accumulate": 1,
        "audio_hidden": 4,
        "video_hidden": 4,
        "dim": 4,
        "heads": 2,
        "post_fusion_dim": 8,
        "post_text_dim": 4,
        "post_audio_dim": 4,
        "post_video_dim": 4,
    }
    # Tiny widths learn in the check's 15 epochs at a higher rate, the audio and video sub-networks' included.
    learning_config: ClassVar[dict] = {"lr": 1e-2, "audio_lr": 1e-2, "video_lr": 1e-2}
    # The unimodal heads are trained on ULGM's labels only, never by the fused output's loss.
    no_task_gradient: ClassVar[tuple[str, ...]] = tuple(f"post_{name}_layer_{k}" for name in ("text", "audio", "video") for k in (1, 2, 3))

    def data_spec(self, dataset):
        """The dataset's spec, refusing one without the text and audio or video, or with
        sequences shorter than their convolution's kernel."""
        spec = super().data_spec(dataset)
        if TEXT not in spec.modalities or len(spec.modalities) < 2 or not set(spec.modalities) <= set(ORDER):
            raise ConfigError(f"TETFN fuses the text with audio, video or both (l, a, v); {dataset.name} has {', '.join(spec.modalities)}.")
        kernels = {"l": self.config.text_kernel, "a": self.config.audio_kernel, "v": self.config.video_kernel}
        for m in spec.modalities:
            steps = dataset.features[m].shape[1]
            if steps < kernels[m] and not self.encodes_itself(m):  # token ids are as wide as the file's text_bert
                raise ConfigError(f"{dataset.name}: {NAMES[m]} has {steps} steps, fewer than {NAMES[m]}_kernel={kernels[m]}; lower it.")
        return spec

    def build(self, spec: DataSpec) -> nn.Module:
        """The untrained :class:`TETFNNet` for ``spec`` (loading the text encoder, if any)."""
        encoder = TextEncoder.for_token_ids(self.config.text_encoder) if self.config.text_encoder else None
        return TETFNNet(spec, self.config, encoder)

    def param_groups(self, model: TETFNNet) -> list[dict]:
        """MMSA's five Adam groups (:func:`~imsa.methods.unimodal_labels.released_param_groups`)."""
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
                return ulgm_loss(model, batch, epoch, store)
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
