"""MPLMM (Guo et al., ACL 2024): multimodal prompt learning with missing modalities.

A MulT network (kernel-1 projections, crossmodal transformers, self-attention memories,
a residual head) is first trained on complete data; its transformers and the first two
layers of its head are then frozen, and three kinds of prompts learn the missing
modalities (github.com/zrguo/MPLMM at c6f8d18, ``src/model.py``'s ``PromptModel``):

* **generative prompts**, one ``(dim, prompt_length)`` sequence per modality: a missing
  modality's projected sequence is ``GELU(conv(.))`` of the concatenation, along time, of
  its prompt and the present modalities' sequences mapped by per-pair converters
  (``GELU`` of a kernel-1 convolution to ``dim`` channels), the convolution (one per
  missing modality and set of present ones) mapping the time steps to the missing
  modality's own;
* **missing-signal prompts**, per modality a ``(dim, T)`` prompt added to its sequence,
  one for "missing" (added to the generated sequence) and one for "present" (added to
  its projection);
* **missing-type prompts**, per target modality ``prompt_length`` tokens of width
  ``dim``, multiplied by the sum over modalities of that modality's signal prompt
  (missing or present) times a learnt ``(T, (M - 1) dim)`` matrix: so each missing type
  gets its own ``(prompt_length, (M - 1) dim)`` tokens, appended after the crossmodal
  outputs in time before each memory; the memory's last step (the last prompt token) is
  read out.

The missing type of each row is read from ``batch.present`` (the mask, not the values);
a missing modality's values are zeroed and never reach the network.

Recipe, as released: Adam (no weight decay), lr 1e-3, batches of 64, gradient norm
clipped at 0.8, 40 epochs, the learning rate divided by 10 after 10 epochs without a
better validation score (``ReduceLROnPlateau``), no early stopping; L1 for sentiment,
cross-entropy for emotions. Pretraining: the same recipe on complete data with no
prompts (``pretrain_epochs``, ``pretrain_lr``); fine-tuning re-initialises the
projections and the output layer and trains them with the prompts and their
converters, everything else frozen. Fine-tuning rows lack one of the ``2**M - 2``
incomplete types with probability ``drop_rate`` (0.7, the README's commands), uniformly,
else are complete; the random and MR protocols replace this with their own masks.

Departures from the released code, and why:

* **Pretraining on the task's own training split**: the README pretrains on complete
  CMU-MOSEI and fine-tunes on MOSI, IEMOCAP or CH-SIMS from that checkpoint; a run of
  imsa trains on one dataset, so phase 0 trains the network on that dataset's complete
  training data, selected on complete validation data (the pretraining checkpoint is
  shared between the protocols of a run).
* **Per-utterance masks from the protocol**: the released loaders draw each utterance's
  missing type at every access, in the validation and test sets too; imsa scores the
  protocol's conditions. A missing modality is zeroed by ``present`` (the released
  model merely does not read it).
* **Selection on validation only**, on the method's selection metric (MAE for
  regression, as the released validation L1; weighted F1 for classification, where the
  release takes the validation cross-entropy). The plateau scheduler watches the same
  score.
* **Any two or more modalities**: the released code is written for text, audio and
  vision; imsa builds one generator per missing modality and set of present ones and
  the missing-type matrices at width ``(M - 1) dim``, which at M = 3 are the released
  tensors (the fidelity check copies every one).
* **One width**: the released ``proj_dim`` and ``prompt_dim`` must be equal for the
  concatenations to run (both 30); imsa has ``dim`` for both.
* **Zero-initialised prompts, as released**: every prompt starts at zero. Then the
  missing-type prompts and their matrices get exactly zero gradient (each factor of
  their product is zero) and stay zero: the appended tokens are zeros throughout
  training (tested). ``prompt_init_std > 0`` draws every prompt from N(0, std) instead,
  so they can learn; the default stays the release's.
* **Text**: the released loaders read precomputed text features (the MulT pickles'
  GloVe vectors for MOSI, BERT-large features for IEMOCAP); so does imsa, with the
  release's embedding dropout on them.
* **Padding**: as released, nothing masks padded steps: the generators map the whole
  file width, and attention sees padding.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..batch import TEXT, Batch
from ..config import COUNT, NON_NEGATIVE, POSITIVE, PROBABILITY
from ..errors import ConfigError
from ..missing import CombinationDistribution, Complete, fixed_conditions
from ..nn.mult import MulTModel
from ..protocols import Protocol
from ..training import RunContext
from .base import Method
from .phase import Phase, complete_setting, task_loss
from .registry import register_method
from .spec import DataSpec, Output, TrainConfig


@dataclass(frozen=True)
class MPLMMConfig(TrainConfig):
    """MPLMM defaults: the released ``main.py`` with the README's fine-tuning command.

    Attributes
    ----------
    dim, heads, depth : int
        Width of the projections and prompts (``proj_dim`` = ``prompt_dim``), attention
        heads, crossmodal layers (the memories have ``max(depth, 3)``).
    prompt_length : int
        Steps of each generative prompt and missing-type tokens per modality.
    attn_dropout, attn_dropout_a, attn_dropout_v : float
        Attention dropout of the blocks attending to text (and of the memories), to
        audio, to vision.
    relu_dropout, res_dropout, embed_dropout, output_dropout : float
        MulT's; ``embed_dropout`` also drops text features at the input, as released.
    causal : bool
        The causal attention mask of the released code.
    prompt_init_std : float
        0 starts every prompt at zero (as released: the missing-type prompts then never
        move); otherwise N(0, std).
    drop_rate : float
        Fine-tuning: probability that a row lacks modalities (uniform over the incomplete types).
    pretrain_epochs, pretrain_lr
        Phase 0: the network without prompts on complete data.
    plateau_factor, plateau_patience : float, int or None
        Learning-rate cut after ``plateau_patience`` epochs without a better validation
        score (None: off), in both phases.
    """

    dim: int = 30
    heads: int = 5
    depth: int = 5
    prompt_length: int = 16
    attn_dropout: float = 0.1
    attn_dropout_a: float = 0.1
    attn_dropout_v: float = 0.1
    relu_dropout: float = 0.1
    res_dropout: float = 0.1
    embed_dropout: float = 0.25
    output_dropout: float = 0.1
    causal: bool = True
    prompt_init_std: float = 0.0
    drop_rate: float = 0.7
    pretrain_epochs: int = 40
    pretrain_lr: float = 1e-3
    epochs: int = 40
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    patience: int | None = None
    grad_clip: float | None = 0.8
    plateau_factor: float = 0.1
    plateau_patience: int | None = 10

    DOMAINS: ClassVar[dict] = {
        **TrainConfig.DOMAINS,
        **{k: COUNT for k in ("dim", "heads", "depth", "prompt_length", "pretrain_epochs")},
        **{
            name: PROBABILITY
            for name in ("attn_dropout", "attn_dropout_a", "attn_dropout_v", "relu_dropout", "res_dropout", "embed_dropout", "output_dropout", "drop_rate")
        },
        "prompt_init_std": NON_NEGATIVE,
        "pretrain_lr": POSITIVE,
        "plateau_factor": PROBABILITY,
        "plateau_patience": NON_NEGATIVE,
    }

    def __post_init__(self):
        super().__post_init__()
        if self.dim % self.heads:
            raise ConfigError(f"dim={self.dim} must be divisible by heads={self.heads}.")


def mult_network(spec: DataSpec, cfg: MPLMMConfig) -> MulTModel:
    """The released ``MULTModel``: kernel-1 projections (text dropped out first), the MulT trunk and head."""
    return MulTModel(
        spec.modalities,
        spec.dims,
        spec.output_dim,
        spec.task,
        dim=cfg.dim,
        heads=cfg.heads,
        layers=cfg.depth,
        kernel=1,
        attn_dropout=(cfg.attn_dropout, cfg.attn_dropout_a, cfg.attn_dropout_v),
        relu_dropout=cfg.relu_dropout,
        res_dropout=cfg.res_dropout,
        embed_dropout=cfg.embed_dropout,
        output_dropout=cfg.output_dropout,
        text_dropout=cfg.embed_dropout,
        causal=cfg.causal,
    )


class PretrainNetwork(nn.Module):
    """Phase 0's model: the MulT network on a :class:`Batch`, no prompts."""

    def __init__(self, network: MulTModel):
        super().__init__()
        self.network = network

    def forward(self, batch: Batch) -> Output:
        return Output(*self.network(batch.inputs, batch.padding, batch.present))


class ConvGELU(nn.Sequential):
    """The released ``MLPLayer``: a kernel-1 convolution over channels, then GELU."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__(nn.Conv1d(channels_in, channels_out, 1), nn.GELU())


class MPLMMNet(nn.Module):
    """The prompted MulT network (the released ``PromptModel``).

    ``backbone`` is the pretrained MulT network; ``converters[f"{s}2{t}"]`` map a present
    modality ``s`` to ``dim`` channels for generating ``t``; ``generators[f"{t}_from_{S}"]``
    map the time steps of ``t``'s generative prompt and the converted sources ``S`` (codes
    in dataset order) to ``t``'s steps; ``signal_prompts[t]`` holds ``t``'s (missing,
    present) prompts; ``type_prompts`` the ``(M, prompt_length, dim)`` missing-type
    prompts and ``type_matrices[t]`` their ``(T_t, (M - 1) dim)`` matrices.
    """

    def __init__(self, spec: DataSpec, cfg: MPLMMConfig):
        super().__init__()
        self.modalities = spec.modalities
        dim, length, steps = cfg.dim, cfg.prompt_length, spec.steps
        self.backbone = mult_network(spec, cfg)
        self.converters = nn.ModuleDict({f"{s}2{t}": ConvGELU(spec.dims[s], dim) for t in self.modalities for s in self.modalities if s != t})
        self.sources = {
            t: [combo for size in range(1, len(self.modalities)) for combo in itertools.combinations([s for s in self.modalities if s != t], size)]
            for t in self.modalities
        }
        self.generators = nn.ModuleDict(
            {f"{t}_from_{''.join(combo)}": ConvGELU(length + sum(steps[s] for s in combo), steps[t]) for t in self.modalities for combo in self.sources[t]}
        )

        def prompt(*shape):
            return nn.Parameter(torch.randn(shape) * cfg.prompt_init_std)

        width = (len(self.modalities) - 1) * dim
        self.generative_prompts = prompt(len(self.modalities), dim, length)
        self.signal_prompts = nn.ParameterDict({t: prompt(2, dim, steps[t]) for t in self.modalities})
        self.type_prompts = prompt(len(self.modalities), length, dim)
        self.type_matrices = nn.ParameterDict({t: prompt(steps[t], width) for t in self.modalities})

    def sequences(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Each modality's ``(B, T, dim)`` sequence: projected plus the present prompt, or generated plus the missing one."""
        present = batch.present
        projections = self.backbone.projections
        x = {m: batch.inputs[m].transpose(1, 2) * present[:, k, None, None].to(batch.inputs[m].dtype) for k, m in enumerate(self.modalities)}
        if TEXT in x:
            x[TEXT] = F.dropout(x[TEXT], projections.text_dropout, self.training)
        out = {}
        for k, t in enumerate(self.modalities):
            sequence = projections.convs[t](x[t]) + self.signal_prompts[t][1]
            for combo in self.sources[t]:
                inside = torch.zeros_like(present[0])
                inside[[self.modalities.index(s) for s in combo]] = True
                rows = torch.nonzero((present == inside).all(1)).squeeze(1)
                if not len(rows):
                    continue
                parts = [self.generative_prompts[k].expand(len(rows), -1, -1)] + [self.converters[f"{s}2{t}"](x[s][rows]) for s in combo]
                generated = self.generators[f"{t}_from_{''.join(combo)}"](torch.cat(parts, dim=2).transpose(1, 2)).transpose(1, 2)
                sequence = sequence.index_put((rows,), generated + self.signal_prompts[t][0])
            out[t] = sequence.transpose(1, 2)
        return out

    def missing_type_tokens(self, present: torch.Tensor) -> torch.Tensor:
        """``(M, B, prompt_length, (M - 1) dim)``: each row's missing-type tokens per target modality."""
        matrix = 0.0
        for k, m in enumerate(self.modalities):
            missing, available = (self.signal_prompts[m][j] @ self.type_matrices[m] for j in (0, 1))
            matrix = matrix + torch.where(present[:, k, None, None], available, missing)  # (B, dim, (M - 1) dim)
        return torch.einsum("kpd,bdw->kbpw", self.type_prompts, matrix)

    def forward(self, batch: Batch) -> Output:
        x = self.sequences(batch)
        tokens = self.missing_type_tokens(batch.present)
        mult = self.backbone.mult
        last = []
        for k, t in enumerate(self.modalities):
            parts = [mult.crossmodal[f"{t}_with_{s}"](x[t], x[s]) for s in self.modalities if s != t]
            last.append(mult.memory[t](torch.cat([torch.cat(parts, dim=-1), tokens[k]], dim=1))[:, -1])
        u = torch.cat(last, dim=-1)
        fused = u + mult.proj2(F.dropout(F.relu(mult.proj1(u)), mult.output_dropout, self.training))
        prediction = mult.out(fused)
        return Output(prediction.squeeze(-1) if self.backbone.task == "regression" else prediction, u)

    def frozen_backbone(self) -> list[nn.Parameter]:
        """The pretrained tensors that fine-tuning freezes: everything of the MulT trunk but its output layer."""
        kept = {id(p) for p in self.backbone.mult.out.parameters()}
        return [p for p in self.backbone.mult.parameters() if id(p) not in kept]


def fine_tuning_masks(modalities: tuple[str, ...], drop_rate: float) -> CombinationDistribution:
    """The released fine-tuning draw: an incomplete type (uniform) with probability ``drop_rate``, else complete."""
    conditions = [c.name for c in fixed_conditions(modalities)]
    incomplete = conditions[:-1]
    return CombinationDistribution({**dict.fromkeys(incomplete, drop_rate / len(incomplete)), conditions[-1]: 1.0 - drop_rate})


@register_method
class MPLMM(Method):
    """MPLMM: generative, missing-signal and missing-type prompts on a pretrained, frozen MulT."""

    name = "mplmm"
    Config = MPLMMConfig
    inputs = "sequence"
    tasks = ("regression", "classification")
    default_threads = 1
    tiny_config: ClassVar[dict] = {"dim": 8, "heads": 2, "depth": 1, "prompt_length": 2, "pretrain_epochs": 2}
    learning_config: ClassVar[dict] = {"pretrain_epochs": 15, "pretrain_lr": 3e-3}

    def build(self, spec: DataSpec) -> nn.Module:
        return MPLMMNet(spec, self.config)

    def data_spec(self, dataset):
        spec = super().data_spec(dataset)
        if len(spec.modalities) < 2:
            raise ConfigError(
                f"MPLMM generates a missing modality from the others: it needs at least two modalities; {dataset.name} has only {spec.modalities[0]!r}."
            )
        return spec

    def fit(self, train, valid, *, protocol=None, seed=0, context=None):
        c = self.config
        protocol, context = protocol or Protocol(), context or RunContext()
        self.spec_ = spec = self.training_spec(train)
        schedule = dict(optimizer="adam", plateau=None if c.plateau_patience is None else (c.plateau_factor, c.plateau_patience))

        def loss(model, batch, epoch):
            return task_loss(model(batch).prediction, batch, spec.task, "l1")

        # -- phase 0: the network without prompts on complete data
        torch.manual_seed(seed)
        pretrained = PretrainNetwork(mult_network(spec, c))
        self.phases_ = [
            self.train_phase(
                pretrained,
                train,
                valid,
                Phase(
                    loss=loss,
                    sampler=Complete(),
                    settings=complete_setting(valid),
                    name="pretrain",
                    epochs=c.pretrain_epochs,
                    lr=c.pretrain_lr,
                    shared=True,
                    **schedule,
                ),
                protocol=protocol,
                seed=seed,
                context=context,
            )
        ]

        # -- phase 1: prompts, converters, generators, projections and output layer on the frozen trunk
        torch.manual_seed(seed + 1)
        net = self.build(spec)
        kept = {k: v for k, v in pretrained.network.state_dict().items() if k.startswith("mult.") and not k.startswith("mult.out.")}
        net.backbone.load_state_dict(copy.deepcopy(kept), strict=False)  # projections and output layer stay freshly initialised, as released
        for p in net.frozen_backbone():
            p.requires_grad_(False)
        self.model_ = net
        self.phases_.append(
            self.train_phase(
                net,
                train,
                valid,
                Phase(
                    loss=loss,
                    sampler=protocol.training_sampler(fine_tuning_masks(spec.modalities, c.drop_rate)),
                    settings=protocol.settings(valid),
                    name="prompt",
                    param_groups=[{"params": [p for p in net.parameters() if p.requires_grad]}],
                    **schedule,
                ),
                protocol=protocol,
                seed=seed,
                context=context,
            )
        )
        return self
