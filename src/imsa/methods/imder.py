"""IMDer (Wang et al., NeurIPS 2023): missing modalities sampled by score-based diffusion.

A MulT backbone is first trained on complete data (phase 0). Then (phase 1), with the
projections frozen, one conditional score network per modality learns, by denoising
score matching on a variance-exploding SDE, the distribution of that modality's
projected sequence given the available ones (one available: its sequence; two: a 1x1
convolution of both). A missing modality is sampled with an Euler-Maruyama solver,
refined by a residual channel-attention network, and fed to the backbone; the loss is
``L1 + 0.1 (score losses + reconstruction MSE)``. Spec: ``docs/methods/imder.md``, from the project's notes (github.com/mdswyz/IMDer at 1901a92).

Decisions where the released code is silent or wrong (spec section 7):

* **Phase 0 is implemented** (the released code downloads a checkpoint trained with
  unreleased code): MulT on complete data, L1 loss, Adam lr 1e-4, value clipping,
  epoch chosen on complete validation data. Phase 1 freezes the projections
  (``requires_grad`` off; ``freeze_backbone=true`` freezes all of phase 0).
* **Per-utterance masks** (the released code picks one pattern per batch in a fixed
  batch order, so realised rates drift from the nominal ones): each missing modality is
  recovered on the rows that miss it, conditioned on each row's own available
  modalities. To keep the released balance in expectation, each modality's summed score
  loss and summed squared reconstruction error are divided by the full batch size.
  The true features of what a mask removes come through
  :class:`~imsa.methods.phase.TrainingMasks`; rate 0 skips phase 1.
* **Reproducible sampling**: at prediction the sampler's noise comes from one generator
  per utterance, seeded by (``sample_seed``, dataset utterance index, modality), so a
  prediction does not depend on its batch and repeats exactly; in training it comes
  from the run's torch generator. ``sampling_steps`` (100 as released) trades accuracy
  for speed.
* **As released**: sigma 25, score loss a per-sample sum over channels and steps,
  condition perturbed with the target's noise in training and fresh noise in sampling
  (``condition_noise``), score networks trained only on rows missing their modality,
  MulT without padding masks (last step read out), Adam with lr 2e-3 in phase 1, value
  clipping at 1.0, the learning rate halved when the selection score has not improved
  for more than 24 epochs (MOSI; ``plateau_patience``, 5 on MOSEI), early stopping
  after 20 epochs (so on MOSI the plateau never fires, as released). Projected
  sequences are zero-padded to a length divisible by 8 for the U-Net and cropped back
  (48 steps at MOSI's shapes need none).
* **Padding** (spec 7.12): as released by default, nothing masks padded steps, so on
  data with utterances of different lengths a prediction reads padding and depends on
  its batch's width. ``padding_mask=true`` follows the spec's recommendation and goes
  further: MulT hides padded keys and reads the last real step; the score networks keep
  padded steps at zero, hide them from attention and from GroupNorm's statistics; the
  refiners keep them at zero and out of the channel attention's mean; the sampler's
  noise is drawn per utterance at its own length (rounded up to 8); the score loss sums
  over real steps and the reconstruction error is each row's mean over its real steps.
  An utterance's prediction then does not depend on its batch (tested). Positions stay
  as released (padding is at the end, so real steps keep theirs).
* **Measured: the released condition noise teaches a shortcut the sampler cannot use.**
  With the target's own noise realisation on the condition, ``x_t - c_t = x0 - c``: the
  noise cancels, and a network trained so reads it off the pair. In
  ``benchmarks/imder_score.py`` (the score network alone, 2,000 steps, a toy target
  ``x0 = B c + noise``) such a network's held-out loss is 5.1-68 per time band with
  shared noise but 40-104 with fresh condition noise (what sampling gives it); trained
  with fresh noise it reaches 11-81 either way. None of the three modes samples usefully
  at that budget: 100-step sample MSE 14.5 (shared), 7.8 (independent), 11.8 (none),
  against 0.27 for the zero sequence, and the same with shuffled conditions. So
  ``condition_noise=independent`` is the consistent choice; the default stays the
  release's.
* **Text**: the dataset's precomputed text sequence by default (the release encodes the
  token ids with BERT, fine-tuned in the unreleased pretraining and frozen in the IMDer
  stage); ``text_encoder=PATH`` does that with a local encoder of the ids' tokenizer.
* **Data**: word-aligned sequences (one length per utterance in every modality), two or
  three modalities; the fixed protocol trains one model on ``train_missing=uniform`` and
  scores every condition.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..batch import Batch
from ..config import COUNT, NON_NEGATIVE, POSITIVE, PROBABILITY
from ..errors import ConfigError
from ..missing import Complete, make_sampler
from ..nn.diffusion import VESDE, ScoreUNet, euler_maruyama, pad_to_multiple, sampler_noise_shape, score_matching_loss
from ..nn.layers import masked_mean
from ..nn.mult import released_order
from ..nn.rcan import Refiner
from ..protocols import Protocol
from ..training import RunContext
from .base import Method
from .common import MulTBackbone, MulTBackboneConfig, check_aligned
from .phase import Phase, TrainingMasks, complete_setting, task_loss
from .registry import register_method
from .spec import DataSpec, Output


class IMDerNet(nn.Module):
    def __init__(self, spec: DataSpec, cfg: "IMDerConfig"):
        super().__init__()
        self.modalities, self.steps, self.sample_seed, self.padding_mask = spec.modalities, cfg.sampling_steps, cfg.sample_seed, cfg.padding_mask
        self.sde = VESDE(cfg.sigma)
        self.backbone = MulTBackbone(spec, cfg)
        self.scores = nn.ModuleDict(
            {m: ScoreUNet(cfg.dim, self.sde, cfg.unet_channels, cfg.unet_embed_dim, cfg.heads, cfg.unet_layers, cfg.unet_groups) for m in spec.modalities}
        )
        self.conditions = (
            nn.ModuleDict({m: nn.Conv1d((len(spec.modalities) - 1) * cfg.dim, cfg.dim, 1) for m in spec.modalities}) if len(spec.modalities) > 2 else None
        )
        self.refiners = nn.ModuleDict({m: Refiner(cfg.dim, cfg.rec_blocks, cfg.rec_reduction) for m in spec.modalities})

    def condition(self, x: dict, present: torch.Tensor, m: str) -> torch.Tensor:
        """``(B, dim, T)``: the one available modality's sequence, or the 1x1 convolution of both."""
        sources = released_order(self.modalities, m)
        available = present[:, [self.modalities.index(s) for s in sources]]
        out = torch.zeros_like(x[m]).transpose(1, 2)
        for j, s in enumerate(sources):
            only = available[:, j] & (available.sum(1) == 1)
            out = torch.where(only[:, None, None], x[s].transpose(1, 2), out)
        if self.conditions is not None:
            merged = self.conditions[m](torch.cat([x[s].transpose(1, 2) for s in sources], dim=1))
            out = torch.where(available.all(1)[:, None, None], merged, out)
        return out

    def sample(self, m: str, condition: torch.Tensor, index: torch.Tensor | None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Samples of ``m`` given ``condition`` ``(B, dim, T)``; noise per utterance where
        ``index`` is given. With ``mask`` (``(B, T)`` real steps) padded steps stay zero and
        an utterance's noise is drawn at its own padded length, whatever its batch's width."""
        steps, length = self.steps, condition.shape[-1]
        padded = pad_to_multiple(condition)
        real = None if mask is None else pad_to_multiple(mask)
        shape = (sampler_noise_shape(steps),) + padded.shape[1:]
        if index is None:
            noise = torch.randn((padded.shape[0],) + shape, device=padded.device, dtype=padded.dtype)
        else:
            k = self.modalities.index(m)
            widths = [shape[-1]] * len(index) if real is None else [-(-int(n) // 8) * 8 for n in real.sum(1).tolist()]
            noise = torch.stack(
                [
                    F.pad(
                        torch.randn(
                            shape[:-1] + (width,),
                            generator=torch.Generator().manual_seed(int(np.random.SeedSequence([self.sample_seed, int(i), k]).generate_state(1)[0])),
                        ),
                        (0, shape[-1] - width),
                    )
                    for i, width in zip(index.tolist(), widths)
                ]
            ).to(padded.device, padded.dtype)
        if real is not None:
            noise = noise * real[:, None, None, :].to(noise.dtype)
        score = self.scores[m] if real is None else partial(self.scores[m], mask=real)
        return euler_maruyama(score, padded, self.sde, noise, steps=steps)[..., :length]

    def recover(self, x: dict, present: torch.Tensor, index: torch.Tensor | None, mask: dict | None = None) -> dict:
        """Each row's missing modalities sampled and refined; present ones kept. Rows are
        sampled only where their modality is missing; ``mask`` (real steps per modality)
        keeps padding out of the diffusion and the refiners."""
        out = dict(x)
        for k, m in enumerate(self.modalities):
            rows = torch.nonzero(~present[:, k]).squeeze(1)
            if not len(rows):
                continue
            real = None if mask is None else mask[m][rows]
            condition = self.condition({s: v[rows] for s, v in x.items()}, present[rows], m)
            sampled = self.sample(m, condition, None if index is None else index[rows], real)
            refined = self.refiners[m](sampled, real).transpose(1, 2)
            out[m] = x[m].index_put((rows,), refined)
        return out

    def forward(self, batch: Batch) -> Output:
        x, mask = self.backbone.projections(self.backbone.inputs(batch), batch.padding, batch.present)
        return Output(*self.backbone.head(self.recover(x, batch.present, batch.index, mask if self.padding_mask else None), mask))


@dataclass(frozen=True)
class IMDerConfig(MulTBackboneConfig):
    """IMDer defaults: the released MOSI settings (the IMDer spec, sections 3 and 4.2).

    Attributes
    ----------
    dim, heads, depth, conv_kernel, attn_dropout(_a, _v), relu_dropout, res_dropout, embed_dropout, output_dropout, text_dropout, causal
        The MulT backbone (:class:`~imsa.methods.common.MulTBackboneConfig`; MOSI 32 / 8 / 4 / 3 width, heads, depth, kernel).
    text_encoder : str
        ``""`` reads the precomputed text features; a local Hugging Face model folder, or
        ``minilm``, encodes the dataset's token ids (``text_bert``) with that encoder,
        fine-tuned in phase 0 with the backbone and frozen in phase 1, as released.
    sigma : float
        The VE SDE's sigma.
    sampling_steps : int
        Euler-Maruyama steps (100 as released); fewer is faster and coarser.
    sample_seed : int
        Seeds the per-utterance sampler noise at prediction.
    condition_noise : {"shared", "independent", "none"}
        How score matching perturbs the condition (the target's noise, as released).
    unet_channels, unet_embed_dim, unet_layers, unet_groups
        The score network: level widths (the first equals ``dim``), time embedding,
        transformer layers per level, GroupNorm groups (first level, the others).
    rec_blocks, rec_reduction : int
    score_weight, recon_weight : float
    freeze_backbone : bool
        Phase 1 trains score networks, condition convolutions and refiners only.
    padding_mask : bool
        Keep padded steps out of everything (off, as released): MulT's key-padding masks
        and last-real-step readout, and in the score networks, the sampler, the refiners
        and both recovery losses.
    pretrain_epochs, pretrain_lr
        Phase 0 (complete data).
    plateau_factor, plateau_patience : float, int or None
        Learning-rate cut on a plateau of the selection score (None: off).
    grad_clip_mode : {"value", "norm"}
    """

    sigma: float = 25.0
    sampling_steps: int = 100
    sample_seed: int = 0
    condition_noise: str = "shared"
    unet_channels: tuple[int, ...] = (32, 64, 128, 256)
    unet_embed_dim: int = 256
    unet_layers: int = 2
    unet_groups: tuple[int, ...] = (4, 32)
    rec_blocks: int = 20
    rec_reduction: int = 16
    score_weight: float = 0.1
    recon_weight: float = 0.1
    freeze_backbone: bool = False
    pretrain_epochs: int = 100
    pretrain_lr: float = 1e-4
    epochs: int = 200
    lr: float = 2e-3
    batch_size: int = 32
    weight_decay: float = 0.0
    patience: int | None = 20
    plateau_factor: float = 0.5
    plateau_patience: int | None = 24
    grad_clip: float | None = 1.0
    grad_clip_mode: str = "value"
    train_missing: str = "uniform"

    DOMAINS: ClassVar[dict] = {
        **MulTBackboneConfig.DOMAINS,
        **{
            k: COUNT
            for k in (
                "sampling_steps",
                "unet_embed_dim",
                "unet_layers",
                "rec_blocks",
                "rec_reduction",
                "pretrain_epochs",
            )
        },
        "sigma": POSITIVE,
        "sample_seed": NON_NEGATIVE,
        "score_weight": NON_NEGATIVE,
        "recon_weight": NON_NEGATIVE,
        "pretrain_lr": POSITIVE,
        "plateau_factor": PROBABILITY,
        "plateau_patience": NON_NEGATIVE,
    }
    RENAMED: ClassVar[dict] = {**MulTBackboneConfig.RENAMED, "rec_weight": "recon_weight"}  # imsa 0.4's names
    ADDED: ClassVar[dict] = {"relu_dropout": 0.0, "res_dropout": 0.0, "causal": True}  # the backbone's keys it lacked in 0.4, at 0.4's behaviour
    CHOICES: ClassVar[dict] = {"condition_noise": ("shared", "independent", "none"), "grad_clip_mode": ("value", "norm")}

    def __post_init__(self):
        super().__post_init__()
        if self.sigma == 1:
            raise ConfigError("sigma must not be 1 (the SDE's std divides by ln sigma).")
        channels, groups = self.unet_channels, self.unet_groups
        if len(channels) != 4 or channels[0] != self.dim or len(groups) != 2:
            raise ConfigError(f"unet_channels needs 4 widths, the first equal to dim={self.dim} (got {channels}); unet_groups needs 2 counts (got {groups}).")
        if channels[0] % groups[0] or any(c % groups[1] for c in channels) or any(c % self.heads for c in channels):
            raise ConfigError(f"unet_channels {channels} must be divisible by unet_groups {groups} (first level by the first) and by heads={self.heads}.")
        if self.dim % self.heads or (2 * self.dim) // self.rec_reduction < 1:
            raise ConfigError(f"dim={self.dim} must be divisible by heads={self.heads}, and 2 * dim at least rec_reduction={self.rec_reduction}.")


@register_method
class IMDer(Method):
    """IMDer: score-based diffusion samples the missing modalities for a MulT backbone."""

    name = "imder"
    Config = IMDerConfig
    protocols = ("fixed", "random", "mr", "noise")  # it recovers whole modalities; dropped frames give it no target (its spec)
    inputs = "sequence"
    default_threads = 2
    token_text = True
    tiny_config: ClassVar[dict] = {
        "dim": 8,
        "heads": 2,
        "depth": 1,
        "conv_kernel": 1,
        "sampling_steps": 2,
        "unet_channels": (8, 8, 8, 8),
        "unet_embed_dim": 8,
        "unet_layers": 1,
        "unet_groups": (2, 2),
        "rec_blocks": 1,
        "rec_reduction": 4,
        "pretrain_epochs": 2,
    }
    learning_config: ClassVar[dict] = {"batch_size": 64, "epochs": 5, "pretrain_epochs": 15, "pretrain_lr": 3e-3, "grad_clip": None}
    # trained by score matching only: the sampler runs without gradient
    no_task_gradient: ClassVar[tuple[str, ...]] = ("scores", "conditions")

    def build(self, spec: DataSpec) -> nn.Module:
        return IMDerNet(spec, self.config)

    def data_spec(self, dataset):
        spec = super().data_spec(dataset)
        if len(spec.modalities) not in (2, 3):
            raise ConfigError(
                f"IMDer recovers a modality from one or two others: it needs 2 or 3 modalities, {dataset.name} has {len(spec.modalities)} ({', '.join(spec.modalities)})."
            )
        check_aligned(dataset, "IMDer", self.config.conv_kernel)
        return spec

    def fit(self, train, valid, *, protocol=None, seed=0, context=None):
        c = self.config
        protocol, context = protocol or Protocol(), context or RunContext()
        self.spec_ = spec = self.training_spec(train)
        modalities, task = spec.modalities, spec.task
        clip = dict(grad_clip=c.grad_clip, clip_mode=c.grad_clip_mode, plateau=None if c.plateau_patience is None else (c.plateau_factor, c.plateau_patience))

        # -- phase 0: the backbone on complete data
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
                    loss=lambda model, batch, epoch: task_loss(model(batch).prediction, batch, task, "l1"),
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
        torch.manual_seed(seed + 1)
        net = self.build(spec)
        net.backbone.load_state_dict(copy.deepcopy(backbone.state_dict()))
        (net.backbone if c.freeze_backbone else net.backbone.projections).requires_grad_(False)
        if net.backbone.text_encoder is not None:  # frozen in the released recovery stage
            net.backbone.text_encoder.requires_grad_(False)
        self.model_ = net
        if protocol.kind == "random" and protocol.rate == 0:  # nothing to recover: phase 0's model
            return self

        # -- phase 1: score networks, condition convolutions, refiners (and the backbone unless frozen)
        masks = TrainingMasks(protocol.training_sampler(make_sampler(c.train_missing)), modalities, seed, stream=7)

        def loss(model, batch, epoch):
            drawn = masks.draw(batch, epoch)
            x, mask = model.backbone.projections(model.backbone.inputs(batch), batch.padding, torch.ones_like(drawn.present))
            present, size = drawn.present, len(batch)
            visible = {m: v * present[:, k].to(v.dtype)[:, None, None] for k, (m, v) in enumerate(x.items())}
            scores, squared = 0.0, 0.0
            recovered = dict(visible)
            for k, m in enumerate(modalities):
                rows = torch.nonzero(~present[:, k]).squeeze(1)
                if not len(rows):
                    continue
                real = mask[m][rows] if c.padding_mask else None
                condition = model.condition({s: v[rows] for s, v in visible.items()}, present[rows], m)
                target = x[m][rows].transpose(1, 2)
                padded_real = None if real is None else pad_to_multiple(real)
                scores = (
                    scores
                    + score_matching_loss(
                        model.scores[m], pad_to_multiple(target), pad_to_multiple(condition), model.sde, condition_noise=c.condition_noise, mask=padded_real
                    ).sum()
                    / size
                )
                refined = model.refiners[m](model.sample(m, condition, None, real), real)
                error = (refined - target.detach()).pow(2)
                if real is None:
                    squared = squared + error.sum() / (size * target[0].numel())
                else:  # each row's mean over its real steps, as the release's over all for unpadded rows
                    squared = squared + masked_mean(error.transpose(1, 2), real, 1).mean(-1).sum() / size
                recovered[m] = visible[m].index_put((rows,), refined.transpose(1, 2))
            prediction = model.backbone.head(recovered, mask)[0]
            return task_loss(prediction, drawn.batch, task, "l1") + c.score_weight * scores + c.recon_weight * squared

        self.phases_.append(
            self.train_phase(
                net,
                train,
                valid,
                Phase(loss=loss, sampler=Complete(), settings=protocol.settings(valid), name="recovery", optimizer="adam", **clip),
                protocol=protocol,
                seed=seed,
                context=context,
            )
        )
        return self
