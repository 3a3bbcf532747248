"""MMIN (Zhao, Li and Jin, ACL 2021): imagining the missing modality, with GCNet's AE and CRA baselines.

Per-modality encoders and a fusion classifier are first trained on complete data.
A frozen copy of those encoders (the teacher) then embeds, for every training
utterance, the modalities its mask removes. The trained (student) encoders read
the incomplete input; their concatenation goes through a cascade residual
autoencoder (CRA) whose output must equal the teacher's embedding (forward
imagination), and a second CRA maps that output back to the student's embedding
(backward imagination). The classifier reads the CRA blocks' latent codes. One
model serves every condition. Spec: ``docs/methods/mmin.md``, from the project's notes,
written from the authors' code (github.com/AIM3-RUC/MMIN, "M") and GCNet's port
(github.com/zeroQiaoba/GCNet, ``baseline-mmin/``, "G").

``variant="ae"`` and ``variant="cra"`` are G's AE and CRA baselines from the same
module: one phase, encoders from scratch, a plain autoencoder (AE) or a two-block
CRA over the joint embedding, the classifier on its reconstruction, and
per-modality decoders that reconstruct the raw features of the missing modalities
(a batch sum, as released).

Decisions where the releases differ, are wrong or are silent (spec sections 2.1, 7):

* **Encoders by feature type** (``encoder="auto"``): G's MLP encoders for utterance
  vectors; M's LSTM + max-pool (audio, video) and TextCNN (text) for sequences, with
  padding masked (M's run over padding, so an embedding depends on its batch).
  ``encoder="mlp"`` uses the masked time-mean of sequences, G's convention.
* **Training missingness.** Fixed protocol: each utterance draws one of the
  ``2**M - 2`` incomplete conditions per batch (the ``incomplete`` sampler; M's
  distribution, redrawn every epoch as M does, where G fixes one mask per run).
  Random protocol: masks at its rate, redrawn per batch. ``expand_train`` (every
  utterance under all six conditions per epoch) is not offered.
* **Selection on validation only**, unrounded: phase 1 on the complete validation
  condition, phase 2 on the mean over the protocol's settings, under the fixed
  protocol the incomplete conditions only (the model is never trained complete).
  G selects IEMOCAP epochs on the test session. ``select_metric`` defaults to the
  toolkit's (``mae`` / ``wf1``); G's is ``f1_non0`` / ``wf1``, M's ``ua``.
* **Recipe: G's for GCNet-style features** (lr 1e-3, batch 256, 100 + 100 epochs of
  which 20 constant then linear decay, dropout 0.3 / 0.5, per-module gradient
  clipping at 5, Adam beta1 0.9 then 0.5, no weight decay, kaiming then N(0, 0.02)
  initialisation with zero biases, MSE for regression). Every item is a config key.
* **Imagination target** on present slots is the teacher's embedding of zeros (a
  constant), and the MSE averages over all slots, as both releases;
  ``imagination_slots="missing"`` counts only the missing modalities' slots.
* **Teacher**: a frozen copy held outside the trained module, always in eval mode;
  the student encoders are trained (both releases). ``freeze_encoders`` fixes them.
* **Missing = zeros**: the networks read zeroed inputs (student) and the complement
  (teacher), built from the explicit mask; with ``standardize`` the features are
  standardised first and zeroed after. A real all-zero feature looks missing to
  MMIN, as in both releases.
* **Seeds** everywhere (neither release seeds anything); all 7 conditions are scored.
* **Two modalities** train on each one alone; **one modality** is refused.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..batch import Batch
from ..config import COUNT, NON_NEGATIVE, POSITIVE, PROBABILITY
from ..errors import ConfigError
from ..missing import Complete, fixed_conditions, make_sampler
from ..nn.autoencoders import CascadeResidualAE, PlainAE, init_weights, missing_reconstruction_loss, mlp
from ..nn.layers import Standardize
from ..nn.recurrent import LSTMMaxPool, TextCNN
from ..protocols import Protocol
from ..training import RunContext
from .base import Method
from .common import fit_standardizers, pooled
from .phase import Phase, TrainingMasks, complete_setting, task_loss
from .registry import register_method
from .spec import DataSpec, Output, TrainConfig

VARIANT_DEFAULTS = {  # ae_layers, ae_blocks, mse_weight (G's scripts)
    "mmin": ((256, 128, 64), 5, 4.0),
    "cra": ((256, 128), 2, 0.8),
    "ae": ((256, 128), 1, 0.2),
}


class ModalityEncoders(nn.Module):
    """One encoder per modality; ``forward(batch)`` is their concatenation ``(B, M * embed_dim)``,
    each reading its modality zeroed where ``present`` says it is missing."""

    def __init__(self, spec: DataSpec, *, kind: str, embed_dim: int, layers: tuple[int, ...], dropout: float, standardize: tuple[str, ...]):
        super().__init__()
        self.modalities = spec.modalities
        self.encoders = nn.ModuleDict()
        self.sequence = {}
        for m in spec.modalities:
            self.sequence[m] = spec.sequence[m] and kind != "mlp"
            if not self.sequence[m]:
                self.encoders[m] = mlp(spec.dims[m], layers, embed_dim, dropout=dropout)
            elif m == "l":
                self.encoders[m] = TextCNN(spec.dims[m], embed_dim)
            else:
                self.encoders[m] = LSTMMaxPool(spec.dims[m], embed_dim)
        self.norms = nn.ModuleDict({m: Standardize(spec.dims[m]) for m in standardize})

    def inputs(self, batch: Batch, m: str) -> torch.Tensor:
        x = batch.inputs[m] if self.sequence[m] else pooled(batch, m)
        if m in self.norms:
            x = self.norms[m](x)
        keep = batch.present[..., self.modalities.index(m)]
        return x * keep.reshape(keep.shape + (1,) * (x.dim() - keep.dim())).to(x.dtype)

    def forward(self, batch: Batch) -> torch.Tensor:
        out = []
        for m in self.modalities:
            x = self.inputs(batch, m)
            out.append(self.encoders[m](x, batch.padding[m]) if self.sequence[m] else self.encoders[m](x))
        return torch.cat(out, dim=-1)


def _squeezed(prediction: torch.Tensor, task: str) -> torch.Tensor:
    return prediction.squeeze(-1) if task == "regression" else prediction


class UttFusion(nn.Module):
    """Phase 1: encoders and a fusion classifier on complete data."""

    def __init__(self, encoders: ModalityEncoders, classifier: nn.Module, task: str):
        super().__init__()
        self.encoders, self.classifier, self.task = encoders, classifier, task

    def forward(self, batch: Batch) -> Output:
        h = self.encoders(batch)
        return Output(_squeezed(self.classifier(h), self.task), h)


class MMINNet(nn.Module):
    """What predicts: encoders, the (forward) autoencoder and the classifier.

    ``mmin``: the classifier reads the autoencoder's latents; ``ae`` and ``cra``: its
    reconstruction. ``Output.feature`` is what the classifier reads.
    """

    def __init__(self, encoders: ModalityEncoders, autoencoder: nn.Module, classifier: nn.Module, task: str, variant: str):
        super().__init__()
        self.encoders, self.autoencoder, self.classifier = encoders, autoencoder, classifier
        self.task, self.variant = task, variant

    def run(self, batch: Batch):
        """``(h, autoencoder output, classifier input)``."""
        h = self.encoders(batch)
        out, latent = self.autoencoder(h)
        return h, out, latent if self.variant == "mmin" else out

    def forward(self, batch: Batch) -> Output:
        _, _, feature = self.run(batch)
        return Output(_squeezed(self.classifier(feature), self.task), feature)


class MMINTraining(nn.Module):
    """The trained modules of phase 2: the predicting network plus what only losses use
    (the backward autoencoder of ``mmin``; the input decoders of ``ae`` / ``cra``)."""

    def __init__(self, net: MMINNet, cycle: nn.Module | None, input_decoders: nn.ModuleDict | None):
        super().__init__()
        self.net, self.cycle, self.input_decoders = net, cycle, input_decoders

    def forward(self, batch: Batch) -> Output:
        return self.net(batch)


@dataclass(frozen=True)
class MMINConfig(TrainConfig):
    """MMIN defaults: G's recipe for GCNet-style utterance features (spec section 4).

    Attributes
    ----------
    variant : {"mmin", "ae", "cra"}
        MMIN, or GCNet's AE / CRA baselines (one phase, no teacher).
    autoencoder : {"cra", "plain"}
        ``mmin`` only: the cascade (default) or one plain autoencoder (M's ``mmin_AE``).
    encoder : {"auto", "mlp", "rnn"}
        ``auto``: MLPs for vectors, LSTM / TextCNN for sequences; ``mlp``: MLPs on the
        time-mean; ``rnn``: as auto (vectors always get MLPs).
    embed_dim : int
        Embedding per modality.
    encoder_layers, classifier_layers : tuple of int
        Hidden widths of the MLP encoders and of the classifier.
    ae_layers, ae_blocks : tuple of int, int, optional
        Autoencoder widths and CRA blocks (default by variant: mmin 256,128,64 x 5;
        cra 256,128 x 2; ae 256,128).
    dropout, pretrain_dropout : float
    ce_weight, mse_weight, cycle_weight : float
        Task, imagination (``ae``/``cra``: raw-feature reconstruction; default by
        variant 4 / 0.8 / 0.2) and backward-imagination weights; ``cycle_weight=0``
        builds no backward autoencoder.
    share_weight : bool
        The backward autoencoder is the forward one (M's MSP setting).
    imagination_slots : {"all", "missing"}
    freeze_encoders : bool
        Keep the pretrained encoders fixed in phase 2.
    pretrain_epochs, pretrain_lr, pretrain_betas, pretrain_grad_clip, pretrain_init, pretrain_lr_schedule
        Phase 1 (``mmin`` only).
    betas : tuple of float
        Adam's in phase 2 (beta1 0.5, as released).
    grad_clip : float
        Per module (each encoder, the classifier, each autoencoder, each decoder).
    init : str
        Phase-2 initialisation of new layers (see :func:`imsa.nn.autoencoders.init_weights`).
    standardize : tuple of str
        Modalities standardised with training statistics (none, as G).
    regression_loss : {"mse", "l1"}
    """

    variant: str = "mmin"
    autoencoder: str = "cra"
    encoder: str = "auto"
    embed_dim: int = 128
    encoder_layers: tuple[int, ...] = (128, 128)
    classifier_layers: tuple[int, ...] = (128, 128)
    ae_layers: tuple[int, ...] | None = None
    ae_blocks: int | None = None
    dropout: float = 0.5
    pretrain_dropout: float = 0.3
    ce_weight: float = 1.0
    mse_weight: float | None = None
    cycle_weight: float = 2.0
    share_weight: bool = False
    imagination_slots: str = "all"
    freeze_encoders: bool = False
    pretrain_epochs: int = 100
    pretrain_lr: float = 1e-3
    pretrain_betas: tuple[float, float] = (0.9, 0.999)
    pretrain_grad_clip: float = 5.0
    pretrain_init: str = "kaiming"
    pretrain_lr_schedule: str = "linear:20"
    epochs: int = 100
    lr: float = 1e-3
    batch_size: int = 256
    betas: tuple[float, float] = (0.5, 0.999)
    grad_clip: float | None = 5.0
    init: str = "normal:0.02"
    lr_schedule: str = "linear:20"
    weight_decay: float = 0.0
    patience: int | None = None
    train_missing: str = "incomplete"
    standardize: tuple[str, ...] = ()
    regression_loss: str = "mse"

    DOMAINS: ClassVar[dict] = {
        **TrainConfig.DOMAINS,
        "embed_dim": COUNT,
        "ae_blocks": COUNT,
        "dropout": PROBABILITY,
        "pretrain_dropout": PROBABILITY,
        "ce_weight": NON_NEGATIVE,
        "mse_weight": NON_NEGATIVE,
        "cycle_weight": NON_NEGATIVE,
        "pretrain_epochs": COUNT,
        "pretrain_lr": POSITIVE,
        "pretrain_grad_clip": POSITIVE,
    }
    CHOICES: ClassVar[dict] = {
        "variant": tuple(VARIANT_DEFAULTS),
        "autoencoder": ("cra", "plain"),
        "encoder": ("auto", "mlp", "rnn"),
        "imagination_slots": ("all", "missing"),
        "regression_loss": ("mse", "l1"),
    }

    def __post_init__(self):
        super().__post_init__()
        for name in ("init", "pretrain_init"):
            try:
                init_weights(nn.Module(), getattr(self, name))
            except ValueError as error:
                raise ConfigError(f"{name}: {error}") from None
        for name in ("encoder_layers", "classifier_layers", "ae_layers"):
            value = getattr(self, name)
            if value is not None and (not value or any(not isinstance(w, int) or w < 1 for w in value)):
                raise ConfigError(f"{name} must be a non-empty list of positive widths, got {value!r}.")

    @property
    def resolved(self) -> tuple[tuple[int, ...], int, float]:
        """``(ae_layers, ae_blocks, mse_weight)`` with the variant's defaults filled in."""
        layers, blocks, weight = VARIANT_DEFAULTS[self.variant]
        return (self.ae_layers or layers, self.ae_blocks or blocks, weight if self.mse_weight is None else self.mse_weight)


@register_method
class MMIN(Method):
    """MMIN: complete-data pretraining, then imagination of the missing modalities (or GCNet's AE / CRA baselines)."""

    name = "mmin"
    Config = MMINConfig
    protocols = ("fixed", "random", "mr", "noise")  # it recovers whole modalities; dropped frames give it no target (its spec)
    default_threads = 1
    tiny_config: ClassVar[dict] = {
        "pretrain_epochs": 2,
        "embed_dim": 8,
        "encoder_layers": (16,),
        "classifier_layers": (16,),
        "ae_layers": (16, 8),
        "ae_blocks": 2,
    }
    learning_config: ClassVar[dict] = {"pretrain_epochs": 10, "pretrain_lr": 3e-3, "lr_schedule": "constant", "pretrain_lr_schedule": "constant"}
    # the cascade's last decoder and transition (and a plain autoencoder's decoder) shape
    # only the imagined output, which the classifier does not read
    no_task_gradient: ClassVar[tuple[str, ...]] = ("transition", "last_decoder", "decoder")

    def _encoders(self, spec: DataSpec, dropout: float) -> ModalityEncoders:
        c = self.config
        return ModalityEncoders(spec, kind=c.encoder, embed_dim=c.embed_dim, layers=c.encoder_layers, dropout=dropout, standardize=c.standardize)

    def _autoencoder(self, dim: int) -> tuple[nn.Module, int]:
        """The autoencoder over the joint embedding, and the width the classifier reads."""
        layers, blocks, _ = self.config.resolved
        if self.config.variant == "ae" or (self.config.variant == "mmin" and self.config.autoencoder == "plain"):
            return PlainAE(dim, layers), layers[-1] if self.config.variant == "mmin" else dim
        return CascadeResidualAE(dim, layers, blocks), blocks * layers[-1] if self.config.variant == "mmin" else dim

    def build(self, spec: DataSpec) -> MMINNet:
        c = self.config
        encoders = self._encoders(spec, c.dropout)
        autoencoder, width = self._autoencoder(len(spec.modalities) * c.embed_dim)
        return MMINNet(encoders, autoencoder, mlp(width, c.classifier_layers, spec.output_dim, dropout=c.dropout), spec.task, c.variant)

    def data_spec(self, dataset):
        unknown = [m for m in self.config.standardize if m not in dataset.modalities]
        if unknown:
            raise ConfigError(f"standardize names {unknown}, which {dataset.name} lacks (modalities: {', '.join(dataset.modalities)}).")
        if len(dataset.modalities) < 2:
            raise ConfigError(f"MMIN needs at least two modalities: with only {dataset.modalities[0]!r} of {dataset.name} there is nothing to imagine.")
        return super().data_spec(dataset)

    def fit(self, train, valid, *, protocol=None, seed=0, context=None):
        c = self.config
        protocol, context = protocol or Protocol(), context or RunContext()
        self.spec_ = spec = self.training_spec(train)
        modalities, task = spec.modalities, spec.task
        ae_layers, ae_blocks, mse_weight = c.resolved
        self.phases_ = []

        def supervised(prediction, batch):
            return task_loss(prediction, batch, task, c.regression_loss)

        # -- phase 1 (mmin only): encoders and a fusion classifier on complete data
        pretrained = None
        if c.variant == "mmin":
            torch.manual_seed(seed)
            fusion = UttFusion(
                self._encoders(spec, c.pretrain_dropout),
                mlp(len(modalities) * c.embed_dim, c.classifier_layers, spec.output_dim, dropout=c.pretrain_dropout),
                task,
            )
            init_weights(fusion, c.pretrain_init)
            if fusion.encoders.norms:
                fit_standardizers(fusion.encoders.norms, train)
            self.phases_.append(
                self.train_phase(
                    fusion,
                    train,
                    valid,
                    Phase(
                        sampler=Complete(),
                        settings=complete_setting(valid),
                        loss=lambda model, batch, epoch: supervised(model(batch).prediction, batch),
                        name="pretrain",
                        epochs=c.pretrain_epochs,
                        lr=c.pretrain_lr,
                        optimizer="adam",
                        betas=c.pretrain_betas,
                        grad_clip=c.pretrain_grad_clip,
                        clip_groups=_module_groups(fusion),
                        lr_schedule=c.pretrain_lr_schedule,
                        shared=True,
                    ),
                    protocol=protocol,
                    seed=seed,
                    context=context,
                )
            )
            pretrained = fusion.encoders

        # -- phase 2: the student (from the pretrained encoders), the autoencoders, the classifier
        torch.manual_seed(seed + 1)
        net = self.build(spec)
        dim = len(modalities) * c.embed_dim
        cycle = None
        if c.variant == "mmin" and c.cycle_weight and not c.share_weight:
            cycle = self._autoencoder(dim)[0]
        decoders = None
        if c.variant != "mmin":
            decoders = nn.ModuleDict({m: mlp(dim, c.classifier_layers, spec.dims[m], dropout=c.dropout) for m in modalities})
        trainer = MMINTraining(net, cycle, decoders)
        init_weights(trainer, c.init)
        if pretrained is not None:
            net.encoders.load_state_dict(pretrained.state_dict())
            net.encoders.requires_grad_(not c.freeze_encoders)
            teacher = copy.deepcopy(pretrained).requires_grad_(False).eval()
        elif net.encoders.norms:
            fit_standardizers(net.encoders.norms, train)
        masks = TrainingMasks(protocol.training_sampler(make_sampler(c.train_missing)), modalities, seed, stream=7)
        slot = torch.repeat_interleave(torch.arange(len(modalities)), c.embed_dim)  # modality of each embedding column

        def imagination(out, batch, drawn):
            with torch.no_grad():
                target = teacher(drawn.complete.with_present(~drawn.present))
            if c.imagination_slots == "all":
                return F.mse_loss(out, target)
            weight = (~drawn.present)[..., slot.to(out.device)].to(out.dtype)
            return ((out - target).pow(2) * weight).sum() / weight.sum().clamp(min=1)

        def loss(model, batch, epoch):
            drawn = masks.draw(batch, epoch)
            h, out, feature = model.net.run(drawn.batch)
            value = c.ce_weight * supervised(_squeezed(model.net.classifier(feature), task), drawn.batch)
            if c.variant == "mmin":
                value = value + mse_weight * imagination(out, batch, drawn)
                if c.cycle_weight:
                    backward = model.net.autoencoder if c.share_weight else model.cycle
                    value = value + c.cycle_weight * F.mse_loss(backward(out)[0], h.detach())
            else:
                recon = torch.cat([model.input_decoders[m](out) for m in modalities], dim=-1)
                targets = torch.cat([_raw(model.net.encoders, drawn.complete, m) for m in modalities], dim=-1)
                dims = [spec.dims[m] for m in modalities]
                value = value + mse_weight * missing_reconstruction_loss(recon, targets, dims, ~drawn.present, drawn.batch.index >= 0, reduction="sum")
            return value

        settings = protocol.settings(valid)
        if protocol.kind == "fixed":  # never trained complete: select on the incomplete conditions
            settings.pop(fixed_conditions(modalities)[-1].name)
        self.phases_.append(
            self.train_phase(
                trainer,
                train,
                valid,
                Phase(
                    loss=loss,
                    sampler=Complete(),
                    settings=settings,
                    predict=lambda b: trainer.net(b).prediction,
                    name="mmin" if c.variant == "mmin" else c.variant,
                    optimizer="adam",
                    betas=c.betas,
                    clip_groups=_module_groups(trainer),
                ),
                protocol=protocol,
                seed=seed,
                context=context,
            )
        )
        self.model_ = net
        if pretrained is not None:
            self.teacher_ = teacher
        return self


def _raw(encoders: ModalityEncoders, batch: Batch, m: str) -> torch.Tensor:
    """The utterance vector of ``m`` as the decoders reconstruct it (standardised where configured)."""
    x = pooled(batch, m)
    return encoders.norms[m](x) if m in encoders.norms else x


def _module_groups(module: nn.Module) -> list[list[nn.Parameter]]:
    """One clipping group per network, as MMIN's code clips: each encoder, the classifier,
    each autoencoder, each input decoder."""
    if isinstance(module, UttFusion):
        networks = [*module.encoders.encoders.values(), module.classifier]
    else:
        net = module.net
        decoders = list(module.input_decoders.values()) if module.input_decoders is not None else []
        networks = [*net.encoders.encoders.values(), net.autoencoder, net.classifier, module.cycle, *decoders]
    groups = [[p for p in n.parameters() if p.requires_grad] for n in networks if n is not None]
    return [g for g in groups if g]
