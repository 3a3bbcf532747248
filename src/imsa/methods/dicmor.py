"""DiCMoR (Wang et al., ICCV 2023): distribution-consistent recovery of missing modalities.

Each modality's sequence is projected by a 1-D convolution (MulT's shallow feature
extractor) and mapped by a normalizing flow into a latent space where every class
(the rounded sentiment, or the emotion) has its own Gaussian, shared by all
modalities. A missing modality m is recovered from an available s through the
latent space, ``F_m^{-1}(F_s(X_s))``, refined by a residual channel-attention network
(two available modalities: both transfers, merged by a 1x1 convolution first); the
MulT backbone then predicts from the available and recovered sequences. Phase 1
trains the backbone on complete data; phase 2 freezes the projections and trains the
flows and class priors (likelihood in bits per dimension), the refiners (MSE to the
true projected features of what the mask removed) and the backbone (task loss).
Spec: ``docs/methods/dicmor.md``, from the project's notes (github.com/mdswyz/DiCMoR at
3d7e617).

Decisions where the released code is silent or departs from the paper (spec section 7):

* **Phase 1 is implemented** (the released code downloads a complete-data checkpoint):
  projections, MulT and head on complete data, L1 loss (cross-entropy for classes),
  Adam lr 1e-4, epoch chosen on complete validation data. Flows, priors and refiners
  start fresh in phase 2 from the run's seed; the projections are frozen there
  (``requires_grad`` off), as the maintainer says they must be.
* **Flows as released** (``flow_step="coupling"``): 32 affine couplings, no ActNorm, no
  invertible 1x1 convolution, no permutation, so half of every latent is the input
  itself (which breaks class transfer; ``tests/test_dicmor.py`` reproduces the gap).
  ``flow_step="glow"`` adds ActNorm (initialised on the first phase-2 batch) and the
  invertible linear map before each coupling, as Glow and the paper describe. The
  never-run modules of the released Glow are not built.
* **Likelihood clamped at zero** per modality and batch, as released (``clamp_nll``).
* **Classes**: ``round_half_even(clip(y, -3, 3)) + 3`` for sentiment (7 priors, numpy's
  rounding as released); the label for classification. Labels reach the likelihood in
  the loss only; the prediction never reads them.
* **Per-sample masks** (the released code draws one pattern per batch, in a batch-order
  curriculum): each sample is recovered by its own ``present`` row; a batch whose
  samples share one pattern gives exactly the released per-batch path (two available:
  transfers concatenated in the order l, v, a, as released). The true features of the
  removed modalities come through :class:`~imsa.methods.phase.TrainingMasks`.
* **Reconstruction loss**: per sample, the mean over its missing modalities of the MSE
  to the (detached) true projection, averaged over the batch (complete samples count
  0); on a batch of one pattern this is the released value.
* **Padding**: as released by default, nothing masks padded steps. ``padding_mask=true``
  hides them in MulT (key masks, last real step read out), keeps them at zero and out
  of the channel attention's mean in the refiners, and out of the reconstruction error,
  so an utterance's prediction does not depend on its batch (tested). The flows act on
  each step alone, so padded steps never reach a real step's transfer; their
  likelihood still counts padded steps (zero inputs), as released.
* **Protocols**: the fixed protocol trains one phase-2 model per condition, each
  trained and validated on its condition, all from one phase 1 (``per_condition``; the
  spec's reading of the released fixed setting); each utterance is predicted by its
  condition's model. ``per_condition=false`` trains one model on ``train_missing``
  (default ``uniform``) instead. The random protocol trains at its rate, and at rate 0
  the model is phase 1's. Selection on validation only (toolkit default metric).
* **Recipe as released**, in both phases: Adam lr 1e-4, no weight decay, micro-batches
  of 4 utterances with gradients summed over 8 of them (``accumulate=8``: losses not
  divided, value clipping at 0.6 after every backward, an incomplete last group
  dropped), the learning rate halved when the selection score has not improved for
  more than 5 epochs (``plateau_factor``, ``plateau_patience``; the release steps it
  on the validation L1 loss, the same quantity), early stopping after 10 epochs.
* **Text**: the dataset's precomputed text sequence by default (a documented deviation:
  the release encodes the token ids with BERT, frozen under ``no_grad`` in its
  training); ``text_encoder=PATH`` encodes them with a local encoder of the ids'
  tokenizer, fine-tuned in phase 1 and frozen in phase 2.
* **Data**: sequences of one length in every modality (word-aligned), two or three
  modalities; anything else is refused.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..batch import Batch
from ..config import COUNT, NON_NEGATIVE, POSITIVE, PROBABILITY
from ..errors import ConfigError
from ..missing import Complete, FixedCondition, fixed_conditions, make_sampler
from ..nn.flows import ClassPrior, Flow, bits_per_dim_nll
from ..nn.layers import masked_mean
from ..nn.mult import released_order
from ..nn.rcan import Refiner
from ..protocols import Protocol
from ..training import RunContext
from .base import Method
from .common import MulTBackbone, MulTBackboneConfig, PerCondition, check_aligned
from .phase import Phase, TrainingMasks, complete_setting, task_loss
from .registry import register_method
from .spec import DataSpec, Output


class DiCMoRNet(nn.Module):
    """The backbone plus one flow and one refiner per modality, shared class priors, and a
    merge convolution per modality (three modalities)."""

    def __init__(self, spec: DataSpec, cfg: "DiCMoRConfig", num_classes: int):
        super().__init__()
        self.modalities, self.padding_mask = spec.modalities, cfg.padding_mask
        self.backbone = MulTBackbone(spec, cfg)
        self.flows = nn.ModuleDict({m: Flow(cfg.dim, cfg.flow_steps, cfg.flow_hidden, cfg.flow_step) for m in spec.modalities})
        self.priors = ClassPrior(num_classes, cfg.dim)
        self.refiners = nn.ModuleDict({m: Refiner(cfg.dim, cfg.rec_blocks, cfg.rec_reduction) for m in spec.modalities})
        self.merges = (
            nn.ModuleDict({m: nn.Conv1d((len(spec.modalities) - 1) * cfg.dim, cfg.dim, 1) for m in spec.modalities}) if len(spec.modalities) > 2 else None
        )

    def recover(self, x: dict, present: torch.Tensor, mask: dict | None = None, latents: dict | None = None) -> dict:
        """Each sample's missing modalities recovered from its available ones; present ones
        kept. ``mask`` (real steps per modality) keeps padding out of the refiners;
        ``latents``: flow outputs of ``x`` already computed (the loss's likelihood pass).
        Only the transfers the samples use are computed; without gradients, only for the
        samples missing the modality (in training every sample, so gradients sum as before)."""
        latents = dict(latents or {})
        out = {}
        for k, m in enumerate(self.modalities):
            missing = ~present[:, k]
            if not missing.any():
                out[m] = x[m]
                continue
            subset = not torch.is_grad_enabled()
            rows = torch.nonzero(missing).squeeze(1) if subset else slice(None)
            sources = released_order(self.modalities, m)
            available = present[rows][:, [self.modalities.index(s) for s in sources]]  # (rows, M - 1)
            alone = available & (available.sum(1, keepdim=True) == 1)  # exactly one other modality available: its transfer
            merge = self.merges is not None and bool(available.all(1).any())
            transfers = {}
            for j, s in enumerate(sources):
                if merge or bool(alone[:, j].any()):
                    if s not in latents:
                        latents[s] = self.flows[s](x[s])[0]
                    transfers[s] = self.flows[m].inverse(latents[s][rows]).detach()
            source = torch.zeros_like(x[m][rows])
            for j, s in enumerate(sources):
                if s in transfers:
                    source = torch.where(alone[:, j, None, None], transfers[s], source)
            if self.merges is not None and (merge or torch.is_grad_enabled()):  # unused in training, it still gets (zero) gradients, as Adam expects
                inputs = (
                    torch.cat([transfers[s] for s in sources], dim=-1) if merge else source.new_zeros(source.shape[:-1] + (len(sources) * source.shape[-1],))
                )
                merged = self.merges[m](inputs.transpose(1, 2)).transpose(1, 2)
                source = torch.where(available.all(1)[:, None, None], merged, source)
            real = None if mask is None else mask[m][rows]
            refined = self.refiners[m](source.transpose(1, 2), real).transpose(1, 2)
            out[m] = x[m].index_put((rows,), refined) if subset else torch.where(missing[:, None, None], refined, x[m])
        return out

    def forward(self, batch: Batch) -> Output:
        x, mask = self.backbone.projections(self.backbone.inputs(batch), batch.padding, batch.present)
        return Output(*self.backbone.head(self.recover(x, batch.present, mask if self.padding_mask else None), mask))


def squared_error(recovered: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per sample, the mean squared error of ``(B, T, C)`` sequences over all steps, or over the real ones of ``mask``."""
    error = (recovered - target).pow(2)
    return error.mean((1, 2)) if mask is None else masked_mean(error, mask, 1).mean(-1)


def sentiment_classes(labels: torch.Tensor) -> torch.Tensor:
    """Prior index of continuous sentiment labels: ``round_half_even(clip(y, -3, 3)) + 3``."""
    return torch.round(labels.clamp(-3, 3)).long() + 3  # torch rounds half to even, as numpy


@dataclass(frozen=True)
class DiCMoRConfig(MulTBackboneConfig):
    """DiCMoR defaults: the released MOSI settings (the DiCMoR spec, section 3.7).

    Attributes
    ----------
    dim, heads, depth, conv_kernel, attn_dropout(_a, _v), relu_dropout, res_dropout, embed_dropout, output_dropout, text_dropout, causal
        The MulT backbone (:class:`~imsa.methods.common.MulTBackboneConfig`; MOSI 32 / 8 / 4 / 5 width, heads, depth, kernel).
    text_encoder : str
        ``""`` reads the precomputed text features; a local Hugging Face model folder, or
        ``minilm``, encodes the dataset's token ids (``text_bert``) with that encoder,
        fine-tuned in phase 1 with the backbone and frozen in phase 2, as released.
    padding_mask : bool
        Keep padded steps out (off, as released): MulT's key-padding masks and
        last-real-step readout, the refiners (zero padding, real-step channel means) and
        the reconstruction error (each sequence's mean over its real steps).
    flow_steps, flow_hidden : int
        Steps per flow and the couplings' hidden width.
    flow_step : {"coupling", "glow"}
        Couplings only (released) or ActNorm + invertible linear + coupling.
    clamp_nll : bool
        Clamp each flow's batch NLL at 0 (released).
    rec_blocks, rec_reduction : int
        Refiner depth (residual channel-attention blocks) and channel reduction.
    nll_weight, recon_weight : float
        Weights of the summed flow NLLs and of the reconstruction MSE.
    pretrain_epochs, pretrain_lr : int, float
        Phase 1 (complete data).
    batch_size, accumulate : int
        Utterances per micro-batch, and micro-batches per optimiser step (released 4 x 8).
    plateau_factor, plateau_patience : float, int or None
        Learning-rate cut on a plateau of the selection score (None: off).
    grad_clip_mode : {"value", "norm"}
        How ``grad_clip`` clips (by value, as released).
    per_condition : bool
        Under the fixed protocol, one phase-2 model per condition (trained and validated
        on it, all from one phase 1); false: one model trained with ``train_missing``.
    """

    conv_kernel: int = 5
    attn_dropout: float = 0.3
    output_dropout: float = 0.5
    text_dropout: float = 0.5
    flow_steps: int = 32
    flow_hidden: int = 64
    flow_step: str = "coupling"
    clamp_nll: bool = True
    rec_blocks: int = 20
    rec_reduction: int = 16
    nll_weight: float = 0.1
    recon_weight: float = 0.1
    pretrain_epochs: int = 100
    pretrain_lr: float = 1e-4
    epochs: int = 100
    lr: float = 1e-4
    batch_size: int = 4
    accumulate: int = 8
    plateau_factor: float = 0.5
    plateau_patience: int | None = 5
    weight_decay: float = 0.0
    patience: int | None = 10
    grad_clip: float | None = 0.6
    grad_clip_mode: str = "value"
    train_missing: str = "uniform"
    per_condition: bool = True

    DOMAINS: ClassVar[dict] = {
        **MulTBackboneConfig.DOMAINS,
        **{k: COUNT for k in ("flow_steps", "flow_hidden", "rec_blocks", "rec_reduction", "pretrain_epochs", "accumulate")},
        "plateau_factor": PROBABILITY,
        "plateau_patience": NON_NEGATIVE,
        "nll_weight": NON_NEGATIVE,
        "recon_weight": NON_NEGATIVE,
        "pretrain_lr": POSITIVE,
    }
    RENAMED: ClassVar[dict] = {**MulTBackboneConfig.RENAMED, "rec_weight": "recon_weight"}  # imsa 0.4's names
    ADDED: ClassVar[dict] = {"relu_dropout": 0.0, "res_dropout": 0.0, "causal": True}  # the backbone's keys it lacked in 0.4, at 0.4's behaviour
    CHOICES: ClassVar[dict] = {"flow_step": ("coupling", "glow"), "grad_clip_mode": ("value", "norm")}

    def __post_init__(self):
        super().__post_init__()
        if self.dim % self.heads or self.dim % 2 or (2 * self.dim) // self.rec_reduction < 1:
            raise ConfigError(f"dim={self.dim} must be even, divisible by heads={self.heads}, and 2 * dim at least rec_reduction={self.rec_reduction}.")


@register_method
class DiCMoR(Method):
    """DiCMoR: class-specific flows recover missing modalities for a MulT backbone."""

    name = "dicmor"
    Config = DiCMoRConfig
    protocols = ("fixed", "random", "mr", "noise")  # it recovers whole modalities; dropped frames give it no target (its spec)
    inputs = "sequence"
    per_condition_module = PerCondition
    default_threads = 2
    token_text = True
    tiny_config: ClassVar[dict] = {
        "dim": 8,
        "heads": 2,
        "depth": 1,
        "conv_kernel": 1,
        "flow_steps": 2,
        "flow_hidden": 8,
        "rec_blocks": 1,
        "rec_reduction": 4,
        "pretrain_epochs": 2,
        "accumulate": 1,
        "per_condition": False,
    }
    learning_config: ClassVar[dict] = {"batch_size": 64, "epochs": 8, "pretrain_epochs": 15, "pretrain_lr": 3e-3, "grad_clip": None, "plateau_patience": None}
    # trained by the likelihood alone: the transfers into the backbone are detached
    no_task_gradient: ClassVar[tuple[str, ...]] = ("flows", "priors")

    def build(self, spec: DataSpec) -> nn.Module:
        return DiCMoRNet(spec, self.config, self._num_classes(spec))

    @staticmethod
    def _num_classes(spec: DataSpec) -> int:
        return 7 if spec.task == "regression" else spec.output_dim

    def data_spec(self, dataset):
        spec = super().data_spec(dataset)
        if len(spec.modalities) not in (2, 3):
            raise ConfigError(
                f"DiCMoR recovers a modality from one or two others: it needs 2 or 3 modalities, {dataset.name} has {len(spec.modalities)} ({', '.join(spec.modalities)})."
            )
        if spec.task == "multilabel":
            raise ConfigError("DiCMoR's class priors need one class per utterance; load the data with --set data.emotions=classes.")
        check_aligned(dataset, "DiCMoR", self.config.conv_kernel)
        return spec

    def fit(self, train, valid, *, protocol=None, seed=0, context=None):
        c = self.config
        protocol, context = protocol or Protocol(), context or RunContext()
        self.spec_ = spec = self.training_spec(train)
        modalities, task = spec.modalities, spec.task
        regression_loss = "l1"
        clip = dict(
            grad_clip=c.grad_clip,
            clip_mode=c.grad_clip_mode,
            accumulate=c.accumulate,
            plateau=None if c.plateau_patience is None else (c.plateau_factor, c.plateau_patience),
        )

        # -- phase 1: the backbone on complete data
        torch.manual_seed(seed)
        backbone = MulTBackbone(spec, c)
        self.phases_ = [
            self.train_phase(
                backbone,
                train,
                valid,
                Phase(
                    sampler=Complete(),
                    settings=complete_setting(valid),
                    loss=lambda model, batch, epoch: task_loss(model(batch).prediction, batch, task, regression_loss),
                    name="pretrain",
                    epochs=c.pretrain_epochs,
                    lr=c.pretrain_lr,
                    optimizer="adam",
                    shared=True,
                    **clip,
                ),
                protocol=protocol,
                seed=seed,
                context=context,
            )
        ]
        sampler = protocol.training_sampler(make_sampler(c.train_missing))
        if protocol.kind == "random" and protocol.rate == 0:  # nothing to recover: phase 1's model
            torch.manual_seed(seed + 1)
            self.model_ = self.build(spec)
            self.model_.backbone.load_state_dict(backbone.state_dict())
            return self

        # -- phase 2: frozen projections; flows, priors, refiners fresh; backbone and head go on training
        if protocol.kind == "fixed" and c.per_condition:  # one phase-2 model per condition, all from phase 1
            every = protocol.settings(valid)
            models = {
                cond.name: self._recovery(
                    backbone,
                    train,
                    valid,
                    protocol,
                    seed,
                    k + 1,
                    FixedCondition(cond),
                    {cond.name: every[cond.name]},
                    f"recovery-{cond.name.replace(',', '')}",
                    context,
                    clip,
                )
                for k, cond in enumerate(fixed_conditions(modalities))
            }
            self.model_ = PerCondition(models, modalities)
        else:
            self.model_ = self._recovery(backbone, train, valid, protocol, seed, 1, sampler, protocol.settings(valid), "recovery", context, clip)
        return self

    def _recovery(self, backbone, train, valid, protocol, seed, k, sampler, settings, phase, context, clip) -> nn.Module:
        """Phase 2 from phase 1's ``backbone``: the ``k``-th model of the recipe, trained on ``sampler``'s masks."""
        c, modalities, task = self.config, self.spec_.modalities, self.spec_.task
        regression_loss = "l1"
        torch.manual_seed(seed + k)
        net = self.build(self.spec_)
        net.backbone.load_state_dict(copy.deepcopy(backbone.state_dict()))
        net.backbone.projections.requires_grad_(False)
        if net.backbone.text_encoder is not None:
            net.backbone.text_encoder.requires_grad_(False)
        masks = TrainingMasks(sampler, modalities, seed, stream=7)

        def loss(model, batch, epoch):
            drawn = masks.draw(batch, epoch)
            x, mask = model.backbone.projections(model.backbone.inputs(batch), batch.padding, torch.ones_like(drawn.present))
            present = drawn.present
            classes = sentiment_classes(batch.labels) if task == "regression" else batch.labels
            nll, latents = 0.0, {}
            for m in modalities:  # the likelihood of every true projected sequence
                latents[m], logdet = model.flows[m](x[m])
                nll = nll + bits_per_dim_nll(logdet, model.priors.log_prob(latents[m], classes), x[m][0].numel(), clamp=c.clamp_nll)
            visible = {m: x[m] * present[:, k].to(x[m].dtype)[:, None, None] for k, m in enumerate(modalities)}
            real = mask if c.padding_mask else None
            recovered = model.recover(visible, present, real, latents)  # a transfer reads its source only where the source is present
            errors = torch.stack([squared_error(recovered[m], x[m].detach(), None if real is None else real[m]) for m in modalities], dim=1)  # (B, M)
            missing = (~present).to(errors.dtype)
            reconstruction = ((errors * missing).sum(1) / missing.sum(1).clamp(min=1)).mean()
            prediction = model.backbone.head(recovered, mask)[0]
            return task_loss(prediction, drawn.batch, task, regression_loss) + c.nll_weight * nll + c.recon_weight * reconstruction

        self.phases_.append(
            self.train_phase(
                net,
                train,
                valid,
                Phase(loss=loss, sampler=Complete(), settings=settings, name=phase, optimizer="adam", **clip),
                protocol=protocol,
                seed=seed,
                context=context,
            )
        )
        return net
