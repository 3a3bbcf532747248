"""MMIM (Han, Chen and Poria, EMNLP 2021): hierarchical mutual information maximisation, as
MMSA releases it.

A late-fusion network trained with mutual-information (MI) terms. The text is the
``[CLS]`` state of a BERT-style encoder; audio and video each go through an LSTM over
their real steps (its final states, dropout, a linear layer). The three vectors,
concatenated, go through dropout, Linear, tanh, Linear, tanh to the fused vector and a
last Linear to the prediction. Two kinds of MI estimate are trained with it:

* per pair of modalities (text-video, text-audio and, with ``add_va``, video-audio), an
  MMILB module: MLPs of ``x`` give a Gaussian mean and log-variance for ``y``, whose
  likelihood ``lld`` (without the log-variance term, as released) is one bound; an
  entropy ``H`` of the projected ``y`` per sentiment side, estimated with a memory of the
  last ``mem_size`` batches, is the other half;
* per modality, a CPC module: the fused vector predicts the modality's vector, scored
  against the batch's other utterances (``nce``, an InfoNCE loss).

Each epoch is two passes over the training data: a likelihood pass that fits the MMILB
modules alone (loss ``-lld``, their own Adam), then the main pass (loss
``task + alpha * nce - beta * lld - beta * H``, the other parameters' Adam). Spec,
fidelity and results: ``docs/methods/mmim.md``.

Fidelity, measured against MMSA's module and trainer on shared weights and batches at
MOSI's widths: outputs differ by at most 2.4e-7 (outputs of order 1; 1.8e-7 with MiniLM
fine-tuned on both sides), ``lld``, ``nce`` and the main loss with its memory not at all,
gradients by 1.5e-7, and the weights after one epoch of both passes by 4.2e-6 (moves of
up to 4e-3), all from the CPU LSTM's rounding: with the packed path (a GPU's) forward
values, losses and gradients are equal and the epoch's weights differ by 7.6e-8 (fused
against plain Adam). 281,673 parameters at MOSI's widths, BERT excluded, as released.

Recipe (MMSA ``config_regression.json``, ``mmim``; ``trains/singleTask/MMIM.py``), MOSI's as
the defaults: Adam with an L2 penalty, the main network at ``lr`` 1e-3 with decay 1e-4, a
fine-tuned text encoder at ``text_lr`` 5e-5 with decay 1e-4, the MMILB modules at
``mmilb_lr`` 1e-3 with decay 1e-4 in a separate optimiser; batches of 32, one step per
batch; the gradient norm of all parameters clipped to 1.0 in both passes; the main
rates halved after ``plateau_patience`` (20) epochs without a better validation score;
early stopping after 8; L1 task loss; ``alpha = beta = 0.1``, ``mem_size`` 1; LSTMs
16 wide, bidirectional, one layer; vectors of 16; fusion 128; dropouts 0.1; every weight
matrix outside the text encoder initialised ``xavier_normal_``. A complete-data model: it
trains on complete data by default (``train_missing=complete``) and is scored with
missing modalities zeroed; every protocol's masks apply.

Text: ``text_encoder=''`` (the default) reads the dataset's precomputed text features and
takes their first step, in MMSA's files the ``[CLS]`` state of a frozen BERT (the released
``use_finetune=False``); ``minilm`` or a local Hugging Face model folder fine-tunes that
encoder on the file's token ids and takes its ``[CLS]`` state (``use_finetune=True``).

The likelihood pass runs inside the main loss's first call of each epoch (before that
batch's forward pass), over batches of its own seeded stream, with its own optimiser
(checkpointed with the phase as ``extra_state``); so the shared training loop needed no
change. The main loop's clipping covers every parameter, the MMILB modules' gradients
(from ``-beta * lld - beta * H``, never stepped there) included, as released.

Departures from the released code, and why:

* A missing modality enters as zeros, by the batch's ``present`` mask (imsa's rule: no
  method reads a missing modality's values): a zero text vector (with a text encoder its
  ``[CLS]`` state is zeroed), zero audio or video frames over the real length. With two
  modalities the fusion reads two vectors and the MI terms are those of the modalities
  there are (audio and video alone need ``add_va``: the released pairs all have text).
* When a *training* mask removes a modality (never under the default complete-data
  training), each MI term reads only the utterances that have what it reads: a pair's
  likelihood and entropy those with both, a modality's contrastive term those with it,
  and the memory keeps only such vectors. A zeroed modality's vector is the same for
  every utterance of a length: as a likelihood target it is trivially predictable, in
  the entropy it collapses the covariance (whose log-determinant the loss then rewards
  pushing apart), as a contrastive positive it is indistinguishable from other zeroed
  rows. The task loss sees the batch as it is.
* The contrastive term leaves out an utterance whose modality vector is zero, as a
  precomputed text is where a frame-level mask drops its first (``[CLS]``) step or, with
  ``text_readout=mean``, every step: the released term divides each vector by its norm,
  and a zero norm makes the loss NaN. Never the case on complete data.
* A pair whose positive or negative side has no more vectors (memory and batch) than the
  projection's width adds no entropy for that batch: its covariance is singular and the
  released ``logdet`` gives -inf or NaN, an infinite loss. Never the case with MMSA's
  batches of 32 and 4-wide projections.
* With ``lstm_layers > 1`` the encoders read the top layer's final states. The released
  one reads ``h_n[0]`` and ``h_n[1]``, the first layer's (bidirectional; the layers above
  then train on nothing) or fails (unidirectional). One layer, every released config,
  is the same either way.
* Each modality is packed with its own length (MMSA's aligned mode, which no released
  config sets, packs audio and video with the text's word-piece count); a sequence
  without real steps gives the LSTM's zero state (PyTorch cannot pack it).
* Epochs are selected, and the plateau schedule cut, on the validation MAE over
  utterances (MMSA: the mean of batch means of the L1 loss, an improvement counted above
  1e-6), at most ``epochs`` (100; MMSA has no cap).
* ``mmilb_fraction`` replaces the released test of the dataset's name (``mosei``: the
  likelihood pass stops after half the batches); the packaged ``mmim/mosei`` sets 0.5.
* ``mmilb_last_activation`` (built, never applied) and ``update_epochs`` (read by nothing
  in this trainer) are not settings.
* ``contrast=false`` runs as the authors' code runs it (no likelihood pass, loss
  ``task - beta * H``); MMSA's trainer crashes on it (its log line reads the pass's loss).
* Classification is an extension (the released trainer hands ``CrossEntropyLoss`` a
  column of labels, which it refuses, and its entropy splits sides by the label's
  sign): cross-entropy plus ``alpha * nce - beta * lld``, the likelihood pass as
  released, no entropy term and no memory.
* With ``precision=fp16`` the likelihood pass runs in fp32 (its gradients are not scaled).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..batch import TEXT, Batch, iterate_batches
from ..config import COUNT, NON_NEGATIVE, POSITIVE, PROBABILITY, Interval
from ..errors import ConfigError
from ..missing import make_sampler
from ..nn.recurrent import PackedLSTM
from ..nn.text_encoder import TextEncoder
from ..protocols import Protocol
from ..training import RunContext
from .base import Method
from .common import text_vector
from .phase import Phase, epoch_rng, task_loss
from .registry import register_method
from .spec import DataSpec, Output, TrainConfig

ORDER = ("l", "a", "v")  # the released concatenation: text, audio, video
SHORT = {"l": "t", "a": "a", "v": "v"}  # the released module names: cpc_zt, mi_tv, ...
PAIRS = (("l", "v"), ("l", "a"))  # (x, y) of mi_tv and mi_ta
VA = ("v", "a")  # mi_va, with add_va
ACTIVATIONS = ("ReLU", "Tanh", "ELU", "LeakyReLU", "GELU", "Sigmoid", "SELU")
PLATEAU_FACTOR = 0.5  # the released ReduceLROnPlateau's
STREAM = 1  # the likelihood pass's batch stream (epoch_rng(seed, epoch, STREAM))


@dataclass(frozen=True)
class MMIMConfig(TrainConfig):
    """MMIM's defaults: MMSA's MOSI setting (MMSA's names in brackets).

    Attributes
    ----------
    lr, weight_decay : float
        Adam's rate and L2 penalty of the main network (``lr_main``, ``weight_decay_main``).
    text_lr, text_weight_decay : float
        The same for the text encoder, when one is fine-tuned (``lr_bert``, ``weight_decay_bert``).
    mmilb_lr, mmilb_weight_decay : float
        The MMILB modules' own Adam (``lr_mmilb``, ``weight_decay_mmilb``).
    grad_clip : float or None
        The global gradient norm, clipped in both passes.
    plateau_patience : int
        Epochs without a better validation score before the main rates halve (``when``).
    audio_hidden, video_hidden, audio_out, video_out : int
        LSTM widths and vector widths (``d_ah``, ``d_vh``, ``d_aout``, ``d_vout``); the
        vector widths are at least 4 (the entropy projection is a quarter as wide).
    lstm_layers, bidirectional : int, bool
        The LSTMs' (``n_layer``, ``bidirectional``).
    audio_dropout, video_dropout : float
        Dropout between LSTM layers and on the final states, with more than one layer
        only (``dropout_a``, ``dropout_v``).
    fusion_hidden, fusion_dropout : int, float
        The fused vector's width and the dropout on the concatenation (``d_prjh``, ``dropout_prj``).
    cpc_layers, cpc_activation : int, str
        The CPC maps' depth and the activation after their first layer.
    mmilb_activation : str
        The MMILB MLPs' middle activation (``mmilb_mid_activation``).
    alpha, beta : float
        Weights of ``nce`` and of ``lld`` and ``H`` in the main loss.
    contrast : bool
        The likelihood pass and the ``nce`` and ``lld`` terms (``H`` is used either way, as released).
    add_va : bool
        A third MMILB pair, video to audio.
    mem_size : int
        Batches of projected vectors the entropy memory holds.
    mmilb_fraction : float
        Share of the batches the likelihood pass reads (0.5 on MOSEI, as released).
    text_encoder : str
        ``""`` reads the precomputed text features; ``minilm`` or a local Hugging Face
        model folder fine-tunes that encoder on the dataset's token ids.
    text_readout : str
        ``first`` (the ``[CLS]`` state, as released) or ``mean`` (over the real steps).
    """

    lr: float = 1e-3
    weight_decay: float = 1e-4
    text_lr: float = 5e-5
    text_weight_decay: float = 1e-4
    mmilb_lr: float = 1e-3
    mmilb_weight_decay: float = 1e-4
    batch_size: int = 32
    patience: int | None = 8
    grad_clip: float | None = 1.0
    plateau_patience: int = 20
    audio_hidden: int = 16
    video_hidden: int = 16
    audio_out: int = 16
    video_out: int = 16
    lstm_layers: int = 1
    bidirectional: bool = True
    audio_dropout: float = 0.1
    video_dropout: float = 0.1
    fusion_hidden: int = 128
    fusion_dropout: float = 0.1
    cpc_layers: int = 1
    cpc_activation: str = "Tanh"
    mmilb_activation: str = "ReLU"
    alpha: float = 0.1
    beta: float = 0.1
    contrast: bool = True
    add_va: bool = False
    mem_size: int = 1
    mmilb_fraction: float = 1.0
    text_encoder: str = ""
    text_readout: str = "first"

    DOMAINS: ClassVar[dict] = {
        **TrainConfig.DOMAINS,
        **{k: POSITIVE for k in ("text_lr", "mmilb_lr")},
        **{k: NON_NEGATIVE for k in ("text_weight_decay", "mmilb_weight_decay", "alpha", "beta")},
        **{k: COUNT for k in ("plateau_patience", "audio_hidden", "video_hidden", "lstm_layers", "fusion_hidden", "cpc_layers", "mem_size")},
        **{k: Interval(4) for k in ("audio_out", "video_out")},
        **{k: PROBABILITY for k in ("audio_dropout", "video_dropout", "fusion_dropout")},
        "mmilb_fraction": Interval(0, 1, low_open=True),
    }
    CHOICES: ClassVar[dict] = {
        "cpc_activation": ACTIVATIONS,
        "mmilb_activation": ACTIVATIONS,
        "bidirectional": (True, False),
        "contrast": (True, False),
        "add_va": (True, False),
        "text_readout": ("first", "mean"),
    }


class RNNEncoder(nn.Module):
    """An LSTM over each sequence's real steps; its top layer's final states (forward, and
    backward when bidirectional), dropout and a linear layer: ``(B, T, D)`` -> ``(B, out)``."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, *, layers: int, dropout: float, bidirectional: bool):
        super().__init__()
        dropout = dropout if layers > 1 else 0.0  # the released rule
        self.rnn = PackedLSTM(in_dim, hidden, layers=layers, bidirectional=bidirectional, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.linear_1 = nn.Linear((2 if bidirectional else 1) * hidden, out_dim)
        self.hidden, self.bidirectional = hidden, bidirectional

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = self.rnn(x, mask)  # the top layer's states, zeros at padding
        rows = torch.arange(len(x), device=x.device)
        last = (mask.sum(1) - 1).clamp(min=0)  # a row without steps: zeros, the LSTM's zero state
        h = states[rows, last, : self.hidden]  # the forward direction ends at the last real step
        if self.bidirectional:  # the backward one at the first
            h = torch.cat([h, states[:, 0, self.hidden :]], dim=-1)
        return self.linear_1(self.dropout(h))


class MMILB(nn.Module):
    """One pair's MI lower bound: a Gaussian for ``y`` with mean and log-variance from ``x``
    (``mlp_mu``, ``mlp_logvar``), and the projection of ``y`` for the entropy (``entropy_prj``)."""

    def __init__(self, x_dim: int, y_dim: int, activation: str):
        super().__init__()
        act = getattr(nn, activation)
        self.mlp_mu = nn.Sequential(nn.Linear(x_dim, y_dim), act(), nn.Linear(y_dim, y_dim))
        self.mlp_logvar = nn.Sequential(nn.Linear(x_dim, y_dim), act(), nn.Linear(y_dim, y_dim))
        self.entropy_prj = nn.Sequential(nn.Linear(y_dim, y_dim // 4), nn.Tanh())

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per utterance, ``sum_k -(mu_k - y_k)^2 / (2 exp(logvar_k))`` (the released ``lld``
        before its batch mean: no log-variance term)."""
        mu, logvar = self.mlp_mu(x), self.mlp_logvar(x)
        return torch.sum(-((mu - y) ** 2) / 2.0 / torch.exp(logvar), dim=-1)


class CPC(nn.Module):
    """The fused vector's prediction of a modality's vector, scored contrastively (InfoNCE)."""

    def __init__(self, x_dim: int, fused_dim: int, layers: int, activation: str):
        super().__init__()
        if layers == 1:
            self.net = nn.Linear(fused_dim, x_dim)
        else:  # the released stack: an activation after the first layer only
            parts = [nn.Linear(fused_dim, x_dim), getattr(nn, activation)()]
            parts += [nn.Linear(x_dim, x_dim) for _ in range(layers - 1)]
            self.net = nn.Sequential(*parts)

    def forward(self, x: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        """``nce``: minus the batch mean of ``<x_i, p_i> - log sum_j exp <x_i, p_j>`` on unit vectors."""
        prediction = self.net(fused)
        prediction = prediction / prediction.norm(dim=1, keepdim=True)
        x = x / x.norm(dim=1, keepdim=True)
        positive = torch.sum(x * prediction, dim=-1)
        negative = torch.logsumexp(x @ prediction.t(), dim=-1)
        return -(positive - negative).mean()


class Fusion(nn.Module):
    """Dropout, Linear, tanh, Linear, tanh: the fused vector; a last Linear: the output."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.linear_1 = nn.Linear(in_dim, hidden)
        self.linear_2 = nn.Linear(hidden, hidden)
        self.linear_3 = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fused = torch.tanh(self.linear_2(torch.tanh(self.linear_1(self.drop(x)))))
        return fused, self.linear_3(fused)


def gaussian_entropy(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor | None:
    """``(log det S+ + log det S-) / 4`` of the two sides' covariances (mean outer product of the
    centred vectors), or None where a side has no more vectors than dimensions (singular)."""
    width = positive.shape[-1]
    if len(positive) <= width or len(negative) <= width:
        return None
    means = [side.mean(dim=0) for side in (positive, negative)]
    # the outer products as batched (k, 1) x (1, k) products, as released (so gradients round alike)
    sigmas = [torch.mean(torch.bmm((side - mean).unsqueeze(-1), (side - mean).unsqueeze(1)), dim=0) for side, mean in zip((positive, negative), means)]
    return 0.25 * (torch.logdet(sigmas[0]) + torch.logdet(sigmas[1]))


class MMIMNet(nn.Module):
    """The released network over the dataset's modalities (all three, as released, or two).

    Parameter names are the released module's (``acoustic_enc``, ``visual_enc``, ``mi_tv``,
    ``mi_ta``, ``mi_va``, ``cpc_zt``, ``cpc_za``, ``cpc_zv``, ``fusion_prj``) but for the text
    encoder's (``text_model``, the released ``bertmodel``) and the LSTMs' tensors, under
    ``rnn.lstm.`` here.
    """

    def __init__(self, spec: DataSpec, cfg: MMIMConfig, text_encoder: TextEncoder | None = None):
        super().__init__()
        self.task, self.modalities, self.readout = spec.task, spec.modalities, cfg.text_readout
        self.order = tuple(m for m in ORDER if m in spec.modalities)
        self.text_model = text_encoder
        widths = {"a": cfg.audio_out, "v": cfg.video_out}
        if TEXT in spec.modalities:
            widths[TEXT] = text_encoder.dim if text_encoder is not None else spec.dims[TEXT]
        rnn = dict(layers=cfg.lstm_layers, bidirectional=cfg.bidirectional)
        if "v" in spec.modalities:
            self.visual_enc = RNNEncoder(spec.dims["v"], cfg.video_hidden, cfg.video_out, dropout=cfg.video_dropout, **rnn)
        if "a" in spec.modalities:
            self.acoustic_enc = RNNEncoder(spec.dims["a"], cfg.audio_hidden, cfg.audio_out, dropout=cfg.audio_dropout, **rnn)
        self.pairs = tuple(p for p in PAIRS + ((VA,) if cfg.add_va else ()) if set(p) <= set(spec.modalities))
        for x, y in self.pairs:
            setattr(self, self.mmilb_name((x, y)), MMILB(widths[x], widths[y], cfg.mmilb_activation))
        for m in ("l", "v", "a"):  # the released order
            if m in spec.modalities:
                setattr(self, f"cpc_z{SHORT[m]}", CPC(widths[m], cfg.fusion_hidden, cfg.cpc_layers, cfg.cpc_activation))
        self.fusion_prj = Fusion(sum(widths[m] for m in self.order), cfg.fusion_hidden, spec.output_dim, cfg.fusion_dropout)
        with torch.no_grad():  # the released trainer's initialisation of every weight matrix but the text encoder's
            for name, p in self.named_parameters():
                if p.dim() > 1 and not name.startswith("text_model."):
                    nn.init.xavier_normal_(p)

    @staticmethod
    def mmilb_name(pair: tuple[str, str]) -> str:
        return f"mi_{SHORT[pair[0]]}{SHORT[pair[1]]}"

    def mmilb_parameters(self) -> list[nn.Parameter]:
        """The parameters of the MMILB modules (the likelihood pass's optimiser)."""
        return [p for pair in self.pairs for p in getattr(self, self.mmilb_name(pair)).parameters()]

    def vectors(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Each modality's vector, from zeros where the batch marks it missing."""
        out = {}
        for m in self.order:
            present = batch.present[:, self.modalities.index(m)]
            if m == TEXT:
                out[m] = text_vector(batch, self.text_model, self.readout)
            else:
                x = batch.inputs[m] * present[:, None, None].to(batch.inputs[m].dtype)
                out[m] = (self.acoustic_enc if m == "a" else self.visual_enc)(x, batch.padding[m])
        return out

    def fuse(self, vectors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused vector and the prediction."""
        fused, prediction = self.fusion_prj(torch.cat([vectors[m] for m in self.order], dim=-1))
        return fused, prediction.squeeze(-1) if self.task == "regression" else prediction

    def forward(self, batch: Batch) -> Output:
        fused, prediction = self.fuse(self.vectors(batch))
        return Output(prediction, fused)

    def present_rows(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Per modality, the real utterances of the batch that have it."""
        real = batch.index >= 0
        return {m: batch.present[:, self.modalities.index(m)] & real for m in self.order}

    def pair_terms(self, vectors: dict[str, torch.Tensor], rows: dict[str, torch.Tensor], labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """``lld`` (per pair, the mean log-likelihood over the utterances with both modalities;
        summed) and, given regression labels, per pair the projected ``y`` of those utterances
        split into positive (label > 0) and negative (label < 0) ones. Pair by pair, likelihood
        then projection, as the released modules run (so gradients accumulate in its order)."""
        total, sides = vectors[self.order[0]].new_zeros(()), {}
        for x, y in self.pairs:
            module, keep = getattr(self, self.mmilb_name((x, y))), rows[x] & rows[y]
            if keep.any():
                total = total + module.log_likelihood(_take(vectors[x], keep), _take(vectors[y], keep)).mean()
            if labels is not None:
                projected = module.entropy_prj(vectors[y])
                sides[(x, y)] = (projected[keep & (labels > 0)], projected[keep & (labels < 0)])
        return total, sides

    def contrastive(self, vectors: dict[str, torch.Tensor], fused: torch.Tensor, rows: dict[str, torch.Tensor]) -> torch.Tensor:
        """``nce``: per modality, the CPC loss over the utterances that have it and whose vector is not
        zero (a zero vector has no direction to score: the released normalisation divides it by its
        zero norm, NaN); summed."""
        total = fused.new_zeros(())
        for m in ("l", "v", "a"):  # the released order of the sum
            if m not in self.order:
                continue
            keep = rows[m] & (vectors[m].detach().abs().amax(dim=1) > 0)
            if keep.any():
                total = total + getattr(self, f"cpc_z{SHORT[m]}")(_take(vectors[m], keep), _take(fused, keep))
        return total


def _take(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The rows of ``x`` that ``keep`` marks; ``x`` itself when it marks all (no copy, and the
    gradient reaches ``x`` as the released code's does, bit for bit)."""
    return x if bool(keep.all()) else x[keep]


class EntropyMemory:
    """The main pass's memory: per pair, the projected positive and negative vectors of the last
    ``size`` batches (detached), filled in order, then each batch replacing slot ``i mod size``
    (``i`` the batch's place in the epoch). Emptied at each epoch's start."""

    def __init__(self, size: int):
        self.size = size
        self.slots: list[dict] = []

    def clear(self) -> None:
        self.slots = []

    @property
    def full(self) -> bool:
        return len(self.slots) >= self.size

    def entropy(self, sides: dict) -> torch.Tensor | None:
        """``H`` summed over the pairs, each side stacked with its memory; None if no pair has one."""
        total = None
        for pair, (positive, negative) in sides.items():
            h = gaussian_entropy(torch.cat([s[pair][0] for s in self.slots] + [positive]), torch.cat([s[pair][1] for s in self.slots] + [negative]))
            if h is not None:
                total = h if total is None else total + h
        return total

    def store(self, sides: dict, step: int) -> None:
        entry = {pair: (p.detach(), n.detach()) for pair, (p, n) in sides.items()}
        if len(self.slots) < self.size:
            self.slots.append(entry)
        else:
            self.slots[step % self.size] = entry


class MMIMTraining:
    """The recipe's state besides the weights: the MMILB optimiser, the entropy memory and the
    batch counter of the epoch; runs the likelihood pass at each epoch's first main batch.

    Checkpointed with the phase (``state_dict``: the optimiser and the passes' mean losses);
    the memory and counter start afresh at every epoch, as released.
    """

    def __init__(self, method: "MMIM", model: MMIMNet, train, sampler, seed: int, device: torch.device):
        c = method.config
        self.method, self.model, self.train, self.sampler, self.seed, self.device = method, model, train, sampler, seed, device
        self.optimizer = torch.optim.Adam(model.mmilb_parameters(), lr=c.mmilb_lr, weight_decay=c.mmilb_weight_decay, fused=True)
        self.memory = EntropyMemory(c.mem_size)
        self.epoch, self.step = None, 0
        self.history: list[float] = []  # the likelihood pass's mean -lld per epoch

    def start(self, epoch: int) -> None:
        """At a batch of ``epoch``: on its first, empty the memory and run the likelihood pass."""
        if epoch == self.epoch:
            return
        self.epoch, self.step = epoch, 0
        self.memory.clear()
        if self.method.config.contrast:
            self.likelihood_pass(epoch)

    def likelihood_pass(self, epoch: int) -> None:
        """One pass of ``-lld`` steps on the MMILB modules (gradients of every parameter clipped together)."""
        c, model = self.method.config, self.model
        params = list(model.parameters())
        units = len(self.train)
        batches = math.ceil(units / c.batch_size)
        precision = getattr(self.method, "precision_", "fp32")
        total, count = 0.0, 0
        context = torch.autocast(self.device.type, enabled=False) if precision == "fp16" else contextlib.nullcontext()
        with context:
            rng = epoch_rng(self.seed, epoch, STREAM)
            for i, batch in enumerate(
                iterate_batches(self.train, c.batch_size, level="utterance", shuffle=True, rng=rng, present=self.sampler, device=self.device)
            ):
                if i / batches >= c.mmilb_fraction:
                    break
                model.zero_grad(set_to_none=True)
                lld, _ = model.pair_terms(model.vectors(batch), model.present_rows(batch))
                if not lld.requires_grad:  # no utterance of the batch has both modalities of any pair
                    continue
                loss = -lld
                if self.device.type == "cpu" and not torch.isfinite(loss):
                    raise FloatingPointError(f"mmim: the likelihood pass's loss became {loss.item()} at epoch {epoch}; lower mmilb_lr.")
                loss.backward()
                if c.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, c.grad_clip)
                self.optimizer.step()
                total, count = total + float(loss.detach()) * len(batch), count + len(batch)
        model.zero_grad(set_to_none=True)
        self.history.append(total / max(count, 1))

    def loss(self, model: MMIMNet, batch: Batch, epoch: int) -> torch.Tensor:
        """The main pass's loss of one batch (after the epoch's likelihood pass, on its first)."""
        self.start(epoch)
        for p in model.mmilb_parameters():  # the main loop zeroes its own optimiser's gradients only
            p.grad = None
        c, task = self.method.config, model.task
        step, self.step = self.step, self.step + 1
        vectors, rows = model.vectors(batch), model.present_rows(batch)
        lld, sides = model.pair_terms(vectors, rows, batch.labels if task == "regression" else None)  # the released order: MMILB, fusion, CPC
        fused, prediction = model.fuse(vectors)
        loss = task_loss(prediction, batch, task)
        if c.contrast:
            loss = loss + c.alpha * model.contrastive(vectors, fused, rows) - c.beta * lld
        if task == "regression":
            entropy = self.memory.entropy(sides) if step >= c.mem_size and self.memory.full else None
            self.memory.store(sides, step)
            if step > c.mem_size and entropy is not None:
                loss = loss - c.beta * entropy
        return loss

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = list(state["history"])


@register_method
class MMIM(Method):
    """MMIM: late fusion with pairwise (MMILB) and fusion-to-modality (CPC) MI terms, a complete-data model."""

    name = "mmim"
    Config = MMIMConfig
    inputs = "sequence"
    default_threads = 1
    token_text = True
    tiny_config: ClassVar[dict] = {"audio_hidden": 4, "video_hidden": 4, "audio_out": 4, "video_out": 4, "fusion_hidden": 8}
    # Trained by the MI terms only, never by the task loss.
    no_task_gradient: ClassVar[tuple[str, ...]] = ("mi_tv", "mi_ta", "mi_va", "cpc_zt", "cpc_za", "cpc_zv")

    def data_spec(self, dataset):
        """The dataset's spec, refusing one without two or three of text, audio and video, or
        audio and video alone without ``add_va``."""
        spec = super().data_spec(dataset)
        if len(spec.modalities) < 2 or not set(spec.modalities) <= set(ORDER):
            raise ConfigError(f"MMIM fuses two or three of text, audio and video (l, a, v); {dataset.name} has {', '.join(spec.modalities)}.")
        if TEXT not in spec.modalities and not self.config.add_va:
            raise ConfigError(f"MMIM's MI pairs are text-video and text-audio; {dataset.name} has no text: set add_va=true for the video-audio pair.")
        return spec

    def build(self, spec: DataSpec) -> nn.Module:
        """The untrained :class:`MMIMNet` for ``spec`` (loading the text encoder, if any)."""
        encoder = TextEncoder.for_token_ids(self.config.text_encoder) if self.config.text_encoder and TEXT in spec.modalities else None
        return MMIMNet(spec, self.config, encoder)

    def param_groups(self, model: MMIMNet) -> list[dict]:
        """The main optimiser's groups: the text encoder at ``text_lr`` and ``text_weight_decay``,
        every other parameter outside the MMILB modules at ``lr`` and ``weight_decay``."""
        c = self.config
        mmilb = {id(p) for p in model.mmilb_parameters()}
        text = list(model.text_model.parameters()) if model.text_model is not None else []
        own = mmilb | {id(p) for p in text}
        groups = [{"params": text, "lr": c.text_lr, "weight_decay": c.text_weight_decay}]
        groups.append({"params": [p for p in model.parameters() if id(p) not in own], "lr": c.lr, "weight_decay": c.weight_decay})
        return [g for g in groups if g["params"]]

    def fit(self, train, valid, *, protocol=None, seed=0, context=None):
        protocol, context = protocol or Protocol(), context or RunContext()
        torch.manual_seed(seed)
        self.spec_ = self.training_spec(train)
        model = self.build(self.spec_)
        self.model_ = model
        c = self.config
        model.to(context.torch_device)  # before the MMILB optimiser is made
        sampler = protocol.training_sampler(make_sampler(c.train_missing))
        training = MMIMTraining(self, model, train, sampler, seed, context.torch_device)
        result = self.train_phase(
            model,
            train,
            valid,
            Phase(
                loss=training.loss,
                sampler=sampler,
                settings=protocol.settings(valid),
                optimizer="adam",
                param_groups=self.param_groups(model),
                extra_state=training,
                plateau=(PLATEAU_FACTOR, c.plateau_patience),
            ),
            protocol=protocol,
            seed=seed,
            context=context,
        )
        self.phases_ = [result]
        self.training_ = training  # the MMILB optimiser and the memory at the end of training
        self.likelihood_history_ = list(training.history)  # the likelihood pass's mean -lld per epoch
        return self
