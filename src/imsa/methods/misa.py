"""MISA (Hazarika, Zimmermann and Poria, ACM MM 2020): modality-invariant and -specific
representations, as MMSA releases it.

Each modality becomes one utterance vector: the text's token states averaged over its
real steps (BERT's in the release), audio and video the final states, both directions,
of two bidirectional LSTMs (each as wide as the modality's features, a layer norm between
them). A projection (Linear, ReLU, LayerNorm) maps each to ``hidden``; a private encoder
per modality and one shared encoder (Linear, sigmoid) split it into a private and a shared
code, and a decoder per modality rebuilds the projection from their sum. The codes
(private text, video, audio, then shared text, video, audio) are six tokens of one
Transformer encoder layer (2 heads, feed-forward 2048, dropout 0.1, as PyTorch builds it);
their concatenation goes through Linear, dropout, ReLU and Linear to the output (no
output activation). Losses: the task's (MSE for regression, cross-entropy for classes) +
``diff_weight`` × the soft orthogonality of each private code to its shared code and to
the other private codes (six pairs, summed) + ``sim_weight`` × the central moment
discrepancy (order 5) between the shared codes (pairs averaged) + ``recon_weight`` × the
reconstruction MSE (modalities averaged); blocks in :mod:`imsa.nn.subspace_losses`.

Recipe (MMSA ``config_regression.json``, ``misa``; ``trains/singleTask/MISA.py``), MOSI's
as the defaults: Adam at lr 1e-4 with no weight decay, batches of 16 whose gradients are
summed over two batches before each step (MMSA's ``update_epochs``; an odd last batch of
an epoch is dropped), every gradient entry clipped to ±0.8 after each backward pass,
early stopping after 8 epochs without a better validation score, hidden 128, dropout
0.2, ``diff_weight`` 0.1, ``sim_weight`` 0.3, ``recon_weight`` 1.0. The text:
``text_encoder=''`` (the default) reads the dataset's precomputed text features, which with
MMSA's 768-d frozen-BERT features is exactly the released ``use_finetune=False`` set-up;
``text_encoder=minilm`` (the packaged all-MiniLM-L6-v2) or a path to a local Hugging Face
folder fine-tunes that encoder on the file's token ids (MMSA's ``text_bert``), at the same
learning rate as the rest, as the release fine-tunes BERT. Like TFN and LMF, a
complete-data model: it trains on complete data by default (``train_missing``) and is
scored with missing modalities zeroed; every protocol's masks apply. Spec and fidelity:
``docs/methods/misa.md``.

Departures from the released code, and why:

* Audio and video are read over their own real steps (their padding masks). The released
  code packs them with the text's word-piece count, and MMSA runs it on unaligned
  features, so it reads the first n of 500 audio and 375 video frames (MOSI), n being the
  utterance's number of word pieces: a defect, not a design.
* A missing modality enters as zeros, by the batch's ``present`` mask (imsa's rule: no
  method reads a missing modality's values): audio and video as a zero sequence of their
  real length, the text as a zero utterance vector. With two modalities there are four
  codes and tokens, the head is ``Linear(4h, 2h)``, and the losses take the pairs there are
  (the released network takes exactly three).
* The projection of the text is as wide as the text (the released module writes in BERT's
  768), so any text features or encoder fit.
* The shared/private discriminator (whose output no loss reads), ``sp_weight`` (which no
  loss reads) and the text layer norm (never called) are left out: they change neither
  the output nor training. ``weight_decay`` is 0, as the released optimiser acts (its
  config value never reaches Adam); a value set here is Adam's L2 penalty.
* ``similarity=adversarial`` (the release's ``use_cmd_sim=False``) works: the modality
  discriminator reads each shared code behind a gradient reversal scaled by
  ``reverse_grad_weight``, with a mean cross-entropy, as the authors' solver defines it.
  MMSA's trainer crashes on that path (it never defines the criterion); its setting, and
  the default here, is ``similarity=cmd``.
* The CMD's norms have gradient 0 where two moments are equal (the released
  ``sqrt`` of the summed squares gives NaN there, e.g. on a training batch of one); the
  values are the same.
* Epochs are selected on validation by imsa's metric (MAE for regression); MMSA selects on
  the validation MSE (its ``Loss``), which imsa does not compute. Training stops at
  ``epochs`` (100) at the latest; MMSA has no limit but the patience.
* Only the LSTM is offered (MMSA's ``rnncell``; the released module also builds GRUs).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..batch import TEXT, Batch
from ..config import COUNT, NON_NEGATIVE, PROBABILITY
from ..errors import ConfigError
from ..missing import make_sampler
from ..nn.layers import masked_mean, reverse_gradient
from ..nn.recurrent import PackedLSTM
from ..nn.subspace_losses import central_moment_discrepancy, soft_orthogonality
from ..nn.text_encoder import TextEncoder
from ..protocols import Protocol
from ..training import RunContext
from .base import Method
from .phase import Phase, task_loss
from .registry import register_method
from .spec import DataSpec, Output, TrainConfig

ORDER = ("l", "v", "a")  # the released order of the codes: text, video, audio


class BiLSTMEncoder(nn.Module):
    """MISA's audio and video encoder: two bidirectional LSTMs as wide as the input, a layer
    norm between them, over each sequence's real steps. The encoding is the final states of
    both LSTMs in both directions, ``[h1 fwd, h2 fwd, h1 bwd, h2 bwd]`` (4 × width)."""

    def __init__(self, width: int):
        super().__init__()
        self.rnn1 = PackedLSTM(width, width, bidirectional=True)
        self.norm = nn.LayerNorm(2 * width)
        self.rnn2 = PackedLSTM(2 * width, width, bidirectional=True)
        self.width = width

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        last = (mask.sum(1) - 1).clamp(min=0)  # a row without steps gives zeros (PackedLSTM's)
        rows = torch.arange(len(x), device=x.device)
        h1 = self.rnn1(x, mask)
        h2 = self.rnn2(self.norm(h1), mask)
        w = self.width
        # A forward direction ends at the last real step, a backward one at the first.
        return torch.cat([h1[rows, last, :w], h2[rows, last, :w], h1[:, 0, w:], h2[:, 0, w:]], dim=1)


class MISANet(nn.Module):
    """The released network over the dataset's modalities (all three, as released, or two)."""

    def __init__(self, spec: DataSpec, cfg: "MISAConfig"):
        super().__init__()
        h = cfg.hidden
        self.task, self.modalities = spec.task, spec.modalities
        self.order = [m for m in ORDER if m in spec.modalities]
        self.text_encoder = TextEncoder.for_token_ids(cfg.text_encoder) if cfg.text_encoder and TEXT in spec.modalities else None
        self.encoders = nn.ModuleDict({m: BiLSTMEncoder(spec.dims[m]) for m in self.order if m != TEXT})
        text_width = self.text_encoder.dim if self.text_encoder is not None else spec.dims.get(TEXT)
        widths = {m: text_width if m == TEXT else 4 * spec.dims[m] for m in self.order}  # the text's own, 4 x an LSTM's
        self.project = nn.ModuleDict({m: nn.Sequential(nn.Linear(widths[m], h), nn.ReLU(), nn.LayerNorm(h)) for m in self.order})
        self.private = nn.ModuleDict({m: nn.Sequential(nn.Linear(h, h), nn.Sigmoid()) for m in self.order})
        self.shared = nn.Sequential(nn.Linear(h, h), nn.Sigmoid())
        self.recon = nn.ModuleDict({m: nn.Linear(h, h) for m in self.order})
        if cfg.similarity == "adversarial":
            self.discriminator = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(h, len(self.order)))
        self.reverse_grad_weight = cfg.reverse_grad_weight
        self.fusion = nn.TransformerEncoderLayer(d_model=h, nhead=2)  # sequence first, PyTorch's defaults, as released
        k = len(self.order)
        self.head = nn.Sequential(nn.Linear(2 * k * h, k * h), nn.Dropout(cfg.dropout), nn.ReLU(), nn.Linear(k * h, spec.output_dim))

    def utterance(self, batch: Batch, modality: str) -> torch.Tensor:
        """``modality``'s utterance vector before its projection, zero input where the batch marks it missing."""
        present = batch.present[:, self.modalities.index(modality)]
        if modality == TEXT:
            if self.text_encoder is not None:
                states, mask = self.text_encoder.token_states(batch)
            else:
                states, mask = batch.inputs[TEXT], batch.padding[TEXT]
            return masked_mean(states, mask, dim=1) * present[:, None].to(states.dtype)
        x = batch.inputs[modality]
        return self.encoders[modality](x * present[:, None, None].to(x.dtype), batch.padding[modality])

    def run(self, batch: Batch) -> dict:
        """The prediction, the fused feature and every code the losses read."""
        projected = {m: self.project[m](self.utterance(batch, m)) for m in self.order}
        private = {m: self.private[m](projected[m]) for m in self.order}
        shared = {m: self.shared(projected[m]) for m in self.order}
        tokens = torch.stack([private[m] for m in self.order] + [shared[m] for m in self.order])  # (2M, B, h)
        fused = self.fusion(tokens)
        feature = fused.permute(1, 0, 2).flatten(1)  # the tokens concatenated, in order: (B, 2M h)
        prediction = self.head(feature)
        if self.task == "regression":
            prediction = prediction.squeeze(-1)
        out = {"prediction": prediction, "feature": feature, "projected": projected, "private": private, "shared": shared}
        out["reconstructed"] = {m: self.recon[m](private[m] + shared[m]) for m in self.order}
        if hasattr(self, "discriminator"):
            out["domain"] = {m: self.discriminator(reverse_gradient(shared[m], self.reverse_grad_weight)) for m in self.order}
        return out

    def forward(self, batch: Batch) -> Output:
        out = self.run(batch)
        return Output(out["prediction"], out["feature"])


def misa_losses(out: dict, order: list[str], *, moments: int = 5) -> dict[str, torch.Tensor]:
    """MISA's auxiliary losses of :meth:`MISANet.run`'s output: ``difference`` (private vs
    shared per modality, and private vs private per pair, summed), ``cmd`` (shared codes per
    pair, averaged), ``reconstruction`` (MSE per modality, averaged) and, with a
    discriminator, ``adversarial`` (its cross-entropy over every shared code)."""
    private, shared = out["private"], out["shared"]
    pairs = list(itertools.combinations(order, 2))
    difference = sum(soft_orthogonality(private[m], shared[m]) for m in order) + sum(soft_orthogonality(private[m], private[n]) for m, n in pairs)
    cmd = sum(central_moment_discrepancy(shared[m], shared[n], moments) for m, n in pairs) / len(pairs)
    reconstruction = sum(F.mse_loss(out["reconstructed"][m], out["projected"][m]) for m in order) / len(order)
    losses = {"difference": difference, "cmd": cmd, "reconstruction": reconstruction}
    if "domain" in out:
        logits = torch.cat([out["domain"][m] for m in order])
        labels = torch.cat([torch.full((len(out["domain"][m]),), k, dtype=torch.long, device=logits.device) for k, m in enumerate(order)])
        losses["adversarial"] = F.cross_entropy(logits, labels)
    return losses


@dataclass(frozen=True)
class MISAConfig(TrainConfig):
    """MISA's defaults: MMSA's MOSI setting.

    Attributes
    ----------
    lr : float
        Adam's learning rate, of every parameter (a fine-tuned text encoder's too).
    weight_decay : float
        Adam's L2 penalty (0: the released optimiser has none).
    batch_size : int
        Utterances per batch (16 on MOSI).
    accumulate : int
        Batches whose summed gradients make one step (MMSA's ``update_epochs``, 2).
    grad_clip : float or None
        Every gradient entry is clipped to ``[-grad_clip, grad_clip]`` after each backward
        pass (on the running sum of the accumulated batches); None: no clipping.
    hidden : int
        Width of the projections, codes and fusion tokens (MMSA's ``hidden_size``); even
        (two attention heads).
    dropout : float
        Dropout of the head (and of the discriminator).
    diff_weight, sim_weight, recon_weight : float
        Weights of the difference, similarity and reconstruction losses.
    similarity : {"cmd", "adversarial"}
        The similarity loss: the central moment discrepancy between the shared codes
        (MMSA's ``use_cmd_sim``), or a modality discriminator behind a gradient reversal.
    reverse_grad_weight : float
        The gradient reversal's scale (``similarity=adversarial`` only).
    cmd_moments : int
        Highest central moment the CMD matches (5).
    text_encoder : str
        ``""`` reads the precomputed text features; ``minilm`` or a local Hugging Face
        model folder fine-tunes that encoder on the dataset's token ids (``text_bert``).
    """

    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 16
    epochs: int = 100
    patience: int | None = 8
    accumulate: int = 2
    grad_clip: float | None = 0.8
    hidden: int = 128
    dropout: float = 0.2
    diff_weight: float = 0.1
    sim_weight: float = 0.3
    recon_weight: float = 1.0
    similarity: str = "cmd"
    reverse_grad_weight: float = 0.8
    cmd_moments: int = 5
    text_encoder: str = ""

    DOMAINS: ClassVar[dict] = {
        **TrainConfig.DOMAINS,
        **{k: COUNT for k in ("accumulate", "hidden", "cmd_moments")},
        **{k: NON_NEGATIVE for k in ("diff_weight", "sim_weight", "recon_weight", "reverse_grad_weight")},
        "dropout": PROBABILITY,
    }
    CHOICES: ClassVar[dict] = {"similarity": ("cmd", "adversarial")}

    def __post_init__(self):
        super().__post_init__()
        if self.hidden % 2:
            raise ConfigError(f"MISA: hidden={self.hidden} must be even (its fusion layer has two attention heads).")


@register_method
class MISA(Method):
    """MISA: shared and private codes per modality, fused by a Transformer layer; a complete-data model."""

    name = "misa"
    Config = MISAConfig
    inputs = "sequence"
    default_threads = 1
    token_text = True
    no_task_gradient = ("recon", "discriminator")  # trained by the reconstruction and adversarial losses only
    tiny_config: ClassVar[dict] = {"hidden": 8, "lr": 1e-3}
    learning_config: ClassVar[dict] = {"hidden": 32}
    encode_text_hint = "set text_encoder to the model folder the file's text_bert ids come from, so that MISA encodes the token ids itself"  # 8 units learn too slowly for 15 epochs with the auxiliary losses

    def data_spec(self, dataset):
        """The spec of the training data, refusing one without two or three of text, audio and video."""
        spec = super().data_spec(dataset)
        if len(spec.modalities) < 2 or not set(spec.modalities) <= set(ORDER):
            raise ConfigError(
                f"MISA splits two or three of text, audio and video (l, a, v) into shared and private codes; {dataset.name} has {', '.join(spec.modalities)}."
            )
        return spec

    def build(self, spec: DataSpec) -> nn.Module:
        """The untrained :class:`MISANet` for ``spec``."""
        return MISANet(spec, self.config)

    def loss(self, model: MISANet, batch: Batch) -> torch.Tensor:
        """The task loss plus the weighted difference, similarity and reconstruction losses of one batch."""
        c = self.config
        out = model.run(batch)
        aux = misa_losses(out, model.order, moments=c.cmd_moments)
        similarity = aux["cmd"] if c.similarity == "cmd" else aux["adversarial"]
        task = task_loss(out["prediction"], batch, self.spec_.task, regression_loss="mse")
        return task + c.diff_weight * aux["difference"] + c.sim_weight * similarity + c.recon_weight * aux["reconstruction"]

    def fit(self, train, valid, *, protocol=None, seed=0, context=None):
        protocol, context = protocol or Protocol(), context or RunContext()
        torch.manual_seed(seed)
        self.spec_ = self.training_spec(train)
        model = self.build(self.spec_)
        self.model_ = model
        phase = Phase(
            loss=lambda model, batch, epoch: self.loss(model, batch),
            sampler=protocol.training_sampler(make_sampler(self.config.train_missing)),
            settings=protocol.settings(valid),
            optimizer="adam",
            clip_mode="value",
            accumulate=self.config.accumulate,
        )
        self.phases_ = [self.train_phase(model, train, valid, phase, protocol=protocol, seed=seed, context=context)]
        return self
