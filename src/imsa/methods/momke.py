"""MoMKE: Mixture of Modality Knowledge Experts.

Xu, Jiang, Liang, "Leveraging Knowledge of Modality Experts for Incomplete Multimodal
Learning", ACM Multimedia 2024. https://openreview.net/forum?id=Gt3a8A1wLg

One expert per modality (masked self-attention over the utterances of a video) is
first trained alone on complete data (stage 1); then every modality's tokens pass
through all experts and a per-utterance router mixes their outputs (stage 2), and a
residual head fuses the modalities. Decisions where the released code is defective
(see the spec in the project's docs):

* after stage 1, each modality's expert, projection and head are restored from the
  stage-1 epoch with the best *validation* score for that modality (the released code
  meant to, but its restore is a no-op);
* epochs are selected on validation data only, never on test: by validation MAE
  (regression) or weighted F1 (classification), which scores every prediction, where
  the released code takes test F1 of non-zero labels (MOSI, MOSEI) or test accuracy
  (IEMOCAP); ``select_metric=f1_non0`` / ``wa`` is that criterion on validation. The
  stage-1 restore uses the same metric per modality;
* the fixed protocol trains one stage-2 model per test condition, all starting from
  one shared stage-1 run (trained once, not once per condition);
* stage 2 starts a fresh Adam optimiser (the released code reuses stage 1's);
* inputs are standardised with training statistics by default (``standardize``).

These defaults were measured against the authors' code run unchanged on the same
folds with validation-only selection (``benchmarks/reference/momke_released.py``;
``benchmarks/results/momke_released.md``: mosi-bclstm, 5 folds, seed 1, mean over the
7 conditions). One imsa stage-2 model scores test acc2_has0 / MAE 0.685 ± 0.026 /
1.113 ± 0.034; the released code 0.684 ± 0.066 / 1.150 ± 0.076 with its epoch chosen by
validation MAE, 0.651 ± 0.066 / 1.248 ± 0.133 by validation F1 (its own criterion). No
switch of the released recipe beat the defaults in the 5-fold ablation
(``benchmarks/results/momke_ablation.md``), so they stay.
"""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..batch import Batch
from ..config import COUNT, NON_NEGATIVE, PROBABILITY
from ..errors import ConfigError, invalid_parameter
from ..evaluation import predict_settings
from ..metrics import METRICS, compute_metrics
from ..missing import Complete, FixedCondition, condition_index, fixed_conditions, make_sampler
from ..nn.layers import Dropout, Standardize
from ..protocols import Protocol
from ..training import RunContext
from .base import Method
from .common import fit_standardizers, pooled
from .phase import Phase, task_loss
from .registry import register_method
from .spec import DataSpec, Output, TrainConfig

# -- blocks ---------------------------------------------------------------------------------------


class TokenLayout:
    """Where packed tokens sit for attention, which needs each row's tokens side by side.

    The linear layers of the experts run on the packed tokens only (present, real
    utterances): a video batch is mostly padding or missing modalities, and packing
    skips that work. For attention, whole rows are packed into bins as long as the
    longest row (first-fit decreasing) and a block-diagonal mask keeps attention
    within a row. With no positional encoding a token's place in its bin does not
    matter, and bins waste far fewer positions than one padded row per (modality,
    video): on MOSI batches about 1.1x the tokens instead of 2.8x.

    Parameters
    ----------
    mask : (R, S) bool tensor
        Which positions of each row hold a token; tokens are ordered row-major.
    """

    def __init__(self, mask: torch.Tensor):
        lengths = mask.sum(-1).tolist()
        self.capacity = max(lengths, default=0)
        bin_of, offset, fill = [0] * len(lengths), [0] * len(lengths), []
        for row in sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True):
            n = lengths[row]
            if n == 0:
                break
            b = next((b for b, used in enumerate(fill) if used + n <= self.capacity), len(fill))
            if b == len(fill):
                fill.append(0)
            bin_of[row], offset[row] = b, fill[b]
            fill[b] += n
        self.bins = len(fill)
        lengths = np.asarray(lengths)
        row_of_token = np.repeat(np.arange(len(lengths)), lengths)
        rank = np.arange(len(row_of_token)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        start = np.asarray(bin_of) * self.capacity + np.asarray(offset)
        positions = torch.from_numpy(start[row_of_token] + rank)  # (T,) into bins * capacity
        segment = torch.full((self.bins * self.capacity,), -1, dtype=torch.long)
        segment[positions] = torch.from_numpy(row_of_token)
        segment = segment.view(self.bins, self.capacity)
        # Planned on the host (first-fit is sequential), then moved where the tokens are.
        self.positions = positions.to(mask.device)
        # Same row attends to same row; padding to padding (never NaN, and discarded).
        self.attention_mask = (segment.unsqueeze(-1) == segment.unsqueeze(-2)).unsqueeze(1).to(mask.device)  # (bins, 1, C, C)

    def pad(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(T, D)`` -> ``(bins, capacity, D)``, zeros where there is no token."""
        grid = tokens.new_zeros(self.bins * self.capacity, tokens.shape[-1])
        return grid.index_copy_(0, self.positions, tokens).view(self.bins, self.capacity, tokens.shape[-1])

    def unpad(self, grid: torch.Tensor) -> torch.Tensor:
        """``(bins, capacity, D)`` -> ``(T, D)``."""
        return grid.reshape(-1, grid.shape[-1]).index_select(0, self.positions)


class MaskedAttention(nn.Module):
    """Multi-head self-attention among the tokens of each row; no output projection.

    Works on a :class:`TokenLayout` grid: only a row's own tokens are keys, so missing
    and padded utterances are never attended to, and nothing is ever NaN.
    """

    def __init__(self, dim: int, *, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise invalid_parameter("heads", "MoMKE", f"a divisor of dim={dim}", heads)
        self.heads = heads
        self.dropout = dropout  # on the attention weights, as the released attn_drop
        self.to_qkv = nn.Linear(dim, 3 * dim)

    def forward(self, grid: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``grid`` (bins, C, D) with its layout's ``attention_mask`` -> (bins, C, D)."""
        b, c, _ = grid.shape
        q, k, v = self.to_qkv(grid).view(b, c, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # each (bins, H, C, D/H)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=self.dropout if self.training else 0.0)
        return out.transpose(1, 2).reshape(b, c, -1)


class ExpertBlock(nn.Module):
    """``o = attention(x); o + MLP(o)`` (no LayerNorm, no positional encoding, as the paper)."""

    def __init__(self, dim: int, *, heads: int, dropout: float, attention_dropout: float = 0.0):
        super().__init__()
        self.attention = MaskedAttention(dim, heads=heads, dropout=attention_dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), Dropout(dropout), nn.Linear(dim, dim), Dropout(dropout))

    def forward(self, grid, attention_mask):
        o = self.attention(grid, attention_mask)
        return o + self.mlp(o)


class Expert(nn.Module):
    """A modality knowledge expert: ``depth`` residual blocks, ``x <- x + block(x)``.

    The blocks run on the layout's grid: its few padding positions cost less than
    padding and unpacking around every attention. Padding never reaches a token (the
    mask keeps it out of every token's keys; the MLP is per position).
    """

    def __init__(self, dim: int, *, depth: int, heads: int, dropout: float, attention_dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList([ExpertBlock(dim, heads=heads, dropout=dropout, attention_dropout=attention_dropout) for _ in range(depth)])

    def forward(self, tokens: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """``tokens`` (T, D) packed as ``layout`` -> (T, D)."""
        if not len(tokens):
            return tokens
        grid = layout.pad(tokens)
        for block in self.blocks:
            grid = grid + block(grid, layout.attention_mask)
        return layout.unpad(grid)


class Router(nn.Module):
    """Per-utterance weights over the experts for one modality's tokens."""

    def __init__(self, dim: int, num_experts: int, *, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), Dropout(dropout), nn.Linear(dim, num_experts), Dropout(dropout))

    def forward(self, h):
        return self.net(h).softmax(-1)


def scatter(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Packed ``values`` (T, ...) back to ``mask.shape + (...)``, zeros where ``mask`` is False."""
    out = values.new_zeros(mask.shape + values.shape[1:])
    out[mask] = values
    return out


# -- model ----------------------------------------------------------------------------------------


class MoMKENet(nn.Module):
    """Input projections, one expert and one unimodal head per modality, routers and the fusion head.

    ``stage`` 1 returns the unimodal predictions (the ``feature`` of the output is unused);
    ``stage`` 2 mixes all experts with the routers and returns the fused prediction.
    Tokens are the present utterances of each modality, packed (see :class:`TokenLayout`).
    """

    def __init__(self, spec: DataSpec, *, dim: int, depth: int, heads: int, dropout: float, attention_dropout: float = 0.0):
        super().__init__()
        self.modalities = spec.modalities
        self.task = spec.task
        self.stage = 2
        m, out = len(spec.modalities), spec.output_dim
        self.norms = nn.ModuleDict({k: Standardize(spec.dims[k]) for k in spec.modalities})  # identity until fitted
        self.projections = nn.ModuleDict({k: nn.Linear(spec.dims[k], dim) for k in spec.modalities})
        self.experts = nn.ModuleDict({k: Expert(dim, depth=depth, heads=heads, dropout=dropout, attention_dropout=attention_dropout) for k in spec.modalities})
        self.unimodal_heads = nn.ModuleDict({k: nn.Linear(dim, out) for k in spec.modalities})
        self.routers = nn.ModuleDict({k: Router(dim, m, dropout=dropout) for k in spec.modalities})
        self.fusion = nn.Linear(m * dim, m * dim)
        self.head = nn.Linear(m * dim, out)
        self.dropout = Dropout(dropout)

    def modality_parameters(self, modality: str) -> dict[str, nn.Module]:
        """The stage-1 parts of one modality (restored together after stage 1)."""
        return {"projections": self.projections[modality], "experts": self.experts[modality], "unimodal_heads": self.unimodal_heads[modality]}

    def _squeeze(self, y):
        return y.squeeze(-1) if self.task == "regression" else y

    def _tokens(self, batch: Batch, videos: list[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
        """Each modality's projected tokens ``(T_k, D)``, its present utterances in row-major order.

        ``videos[k]``, if given, keeps only those videos (rows of the batch) for modality ``k``.
        """
        tokens = []
        for i, k in enumerate(self.modalities):
            x, present = pooled(batch, k), batch.present[..., i]
            if videos is not None and videos[i] is not None:
                x, present = x[videos[i]], present[videos[i]]
            tokens.append(self.dropout(self.projections[k](self.norms[k](x[present]))))
        return tokens

    def _distinct_rows(self, batch: Batch) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
        """Per modality, one video for each distinct row of present utterances, and each video's row.

        A (modality, video) row's routed expert outputs depend only on that modality's
        present utterances and their inputs, so rows repeated across a stacked evaluation
        batch (the same video under every condition that keeps the modality) are computed
        once. Rows are equal when their present utterances have the same dataset index
        and the same pooled inputs: under frame drops or noise the same video's rows
        differ from setting to setting. Returns ``(videos, inverse)``; ``None`` for a
        modality whose rows all differ.
        """
        videos, inverse = [], []
        for i, k in enumerate(self.modalities):
            present = batch.present[..., i]
            inputs = (pooled(batch, k) * present[..., None].to(batch.inputs[k].dtype)).flatten(1)
            key = torch.cat([torch.where(present, batch.index, -1).double(), inputs.double()], dim=1)  # float32 inputs and indices are exact in float64
            distinct, where = torch.unique(key, dim=0, return_inverse=True)
            if len(distinct) == len(key):
                videos.append(None), inverse.append(None)
                continue
            first = torch.full((len(distinct),), len(key), device=key.device).scatter_reduce(0, where, torch.arange(len(key), device=key.device), "amin")
            videos.append(first), inverse.append(where)
        return videos, inverse

    def forward(self, batch: Batch) -> Output:
        present = batch.present  # (B, S, M): missing or padded utterances are False
        if self.stage == 1:
            tokens = self._tokens(batch)
            unimodal = [
                scatter(self.unimodal_heads[k](self.experts[k](tokens[i], TokenLayout(present[..., i]))), present[..., i])
                for i, k in enumerate(self.modalities)
            ]
            return Output(torch.stack([self._squeeze(y) for y in unimodal], dim=-1 if self.task == "regression" else -2))
        # Without dropout, equal rows give equal outputs: evaluation computes each once.
        videos, inverse = self._distinct_rows(batch) if not self.training else ([None] * len(self.modalities),) * 2
        rows = [present[..., i] if v is None else present[v, :, i] for i, v in enumerate(videos)]  # each (B_k, S)
        tokens = self._tokens(batch, videos)
        # Every modality's tokens through every expert; attention stays within one
        # (modality, video) row, so all modalities share one layout.
        h = torch.cat(tokens)  # (T, D), modality-major
        layout = TokenLayout(torch.cat(rows))
        mixed = torch.stack([self.experts[k](h, layout) for k in self.modalities], dim=1)  # (T, E, D)
        weights = torch.cat([self.routers[k](t) for k, t in zip(self.modalities, tokens)])  # (T, E)
        z = (weights.unsqueeze(1) @ mixed).squeeze(1).split([len(t) for t in tokens])  # per modality (T_k, D)
        # (B, S, M, D) with each modality's slot zero where it is missing, then flattened per utterance.
        slots = [scatter(z_k, row) if where is None else scatter(z_k, row)[where] for z_k, row, where in zip(z, rows, inverse)]
        u = torch.stack(slots, dim=2).flatten(2)
        real = batch.utterance_mask
        u = u[real]  # (U, M*D): the fusion head runs on real utterances only
        hidden = u + self.dropout(F.relu(self.fusion(u)))
        return Output(self._squeeze(scatter(self.head(hidden), real)), scatter(hidden, real))

    def router_weights(self, batch: Batch) -> torch.Tensor:
        """Routing distributions ``(M, B, S, E)`` for inspection and tests (0 where a modality is missing)."""
        tokens = self._tokens(batch)
        return torch.stack([scatter(self.routers[k](t), batch.present[..., i]) for i, (k, t) in enumerate(zip(self.modalities, tokens))])


class PerConditionMoMKE(nn.Module):
    """One stage-2 model per fixed condition; each video goes to the model of its condition."""

    def __init__(self, models: dict[str, MoMKENet], modalities: tuple[str, ...]):
        super().__init__()
        self.names = list(models)
        self.models = nn.ModuleDict(models)
        self.modalities = modalities
        # condition index (see imsa.missing.condition_index) -> model name
        self.lookup = {i: c.name for i, c in enumerate(fixed_conditions(modalities)) if c.name in models}

    def forward(self, batch: Batch) -> Output:
        real = batch.utterance_mask
        first = batch.present[torch.arange(len(batch), device=real.device), real.float().argmax(1)]  # (B, M) pattern of the first utterance
        if not (batch.present == (first.unsqueeze(1) & real.unsqueeze(-1))).all():
            raise ConfigError("Per-condition MoMKE needs one missing-modality condition per video; set per_condition=false for mixed masks.")
        conditions = condition_index(first.cpu().numpy())
        outputs = None
        for index in np.unique(conditions):
            if int(index) not in self.lookup:
                raise ConfigError(f"No stage-2 model was trained for condition {fixed_conditions(self.modalities)[index].name}.")
            rows = torch.from_numpy(np.flatnonzero(conditions == index)).to(real.device)
            sub = batch.select(rows)
            out = self.models[self.lookup[int(index)]](sub)
            if outputs is None:
                outputs = (out.prediction.new_zeros((len(batch),) + out.prediction.shape[1:]), out.feature.new_zeros((len(batch),) + out.feature.shape[1:]))
            outputs[0][rows], outputs[1][rows] = out.prediction, out.feature
        return Output(*outputs)


# -- config ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MoMKEConfig(TrainConfig):
    """MoMKE defaults: the paper's MOSI settings (see ``configs/momke/`` for the others).

    Attributes
    ----------
    epochs : int
        Stage-2 epochs: the phase that makes the final model, as ``epochs`` means for
        every method (see :class:`~imsa.methods.TrainConfig`). The paper counts both
        stages: its 300 MOSI / 100 MOSEI / 200 IEMOCAP epochs are 150 / 50 / 100 here.
    stage1_epochs : int
        Unimodal expert training epochs (paper: half of its total, so equal to ``epochs``).
    batch_size : int
        Videos or dialogues per batch.
    lr, weight_decay : float
        Adam with L2 weight decay, as the paper.
    dim, depth, heads, dropout : int, int, int, float
        Expert width, blocks per expert, attention heads, dropout p.
    regression_loss : {"mse", "l1"}
    per_condition : bool
        Fixed protocol: one stage-2 model per test condition (the paper). False: one
        stage-2 model trained with ``train_missing`` masks and scored on every condition.
        The random protocol always trains one model at its rate.
    train_missing : str
        Stage-2 training masks when ``per_condition`` is false.
    standardize : bool
        Standardise each modality's inputs with training-set statistics. The released
        code feeds raw features; raw openSMILE audio (values up to ~400) saturates the
        attention softmax, which trains badly and slowly (denormal floats).
    bf16 : bool
        bfloat16 autocast for matrix products (only faster where the CPU's bf16 matrix
        units are used; see benchmarks/momke_speed.py).
    attention_dropout : float
        Dropout on the experts' attention weights (0 in every released script).
    restore : {"best", "last"}
        Stage 2 starts from each modality's stage-1 parts at that modality's best
        validation epoch (``"best"``, what the released code meant to do) or from the
        last stage-1 epoch (``"last"``, what its no-op restore does).
    stage2_optimizer : {"fresh", "shared"}
        Stage 2 starts a new Adam (``"fresh"``) or continues stage 1's, moments and
        step count included (``"shared"``, the released code's single optimiser; each
        per-condition model continues a copy of it).
    select_from : int
        Stage-2 epochs before this one are never selected (counted from 0).

    With ``standardize=false``, ``restore=last`` and ``stage2_optimizer=shared`` the
    recipe trains as the released code does (``select_metric=f1_non0`` for its
    selection criterion, moved to validation data).
    """

    epochs: int = 150
    stage1_epochs: int = 150
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-5
    patience: int | None = None
    dim: int = 256
    depth: int = 4
    heads: int = 2
    dropout: float = 0.5
    regression_loss: str = "mse"
    per_condition: bool = True
    train_missing: str = "uniform"
    standardize: bool = True
    bf16: bool = False
    attention_dropout: float = 0.0
    restore: str = "best"
    stage2_optimizer: str = "fresh"
    select_from: int = 0

    DOMAINS: ClassVar[dict] = {
        **TrainConfig.DOMAINS,
        "stage1_epochs": COUNT,
        "dim": COUNT,
        "depth": COUNT,
        "heads": COUNT,
        "dropout": PROBABILITY,
        "attention_dropout": PROBABILITY,
        "select_from": NON_NEGATIVE,
    }
    CHOICES: ClassVar[dict] = {"regression_loss": ("mse", "l1"), "restore": ("best", "last"), "stage2_optimizer": ("fresh", "shared")}


# -- recipe ---------------------------------------------------------------------------------------


class _BestPerModality:
    """Tracks, during stage 1, each modality's best validation epoch and a snapshot of its parts."""

    def __init__(self, model: MoMKENet, maximize: bool):
        self.model, self.maximize = model, maximize
        self.best = {k: (-math.inf if maximize else math.inf, -1) for k in model.modalities}
        self.snapshots: dict[str, dict] = {}

    def update(self, epoch: int, scores: dict[str, float]) -> None:
        for k, score in scores.items():
            better = score > self.best[k][0] if self.maximize else score < self.best[k][0]
            if better:
                self.best[k] = (score, epoch)
                self.snapshots[k] = {name: copy.deepcopy(part.state_dict()) for name, part in self.model.modality_parameters(k).items()}

    def restore(self) -> None:
        for k, parts in self.snapshots.items():
            for name, part in self.model.modality_parameters(k).items():
                part.load_state_dict(parts[name])

    def state_dict(self):
        return {"best": self.best, "snapshots": self.snapshots}

    def load_state_dict(self, state):
        self.best, self.snapshots = state["best"], state["snapshots"]


@register_method
class MoMKE(Method):
    """MoMKE (ACM MM 2024): unimodal experts, then per-utterance routing over all experts."""

    name = "momke"
    Config = MoMKEConfig
    level = "video"
    per_condition_module = PerConditionMoMKE
    default_threads = 2  # benchmarks/threads.py: 1.5x faster than 1 thread idle; on a busy machine pass --threads 1 (1.8x faster there)
    tiny_config = {"stage1_epochs": 1, "dim": 16, "depth": 1, "heads": 2, "lr": 1e-3, "dropout": 0.1}
    learning_config = {"stage1_epochs": 5}
    no_task_gradient = ("unimodal_heads",)  # trained by stage 1's unimodal loss only

    def build(self, spec: DataSpec) -> nn.Module:
        cfg = self.config
        return MoMKENet(spec, dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, dropout=cfg.dropout, attention_dropout=cfg.attention_dropout)

    def _autocast(self):
        device = next(self.model_.parameters()).device.type
        return torch.autocast(device, dtype=torch.bfloat16) if self.config.bf16 else nullcontext()

    def forward(self, batch: Batch) -> Output:
        """Each utterance predicted by its condition's model where one is trained per condition, else by the one model."""
        with self._autocast():
            out = self.model_(batch)
        return Output(out.prediction.float(), out.feature.float())

    def fit(self, train, valid, *, protocol=None, seed=0, context=None):
        cfg = self.config
        protocol, context = protocol or Protocol(), context or RunContext()
        torch.manual_seed(seed)
        self.spec_ = self.training_spec(train)
        task, loss_kind = self.spec_.task, cfg.regression_loss
        stage1 = self.build(self.spec_)
        stage1.stage = 1
        if cfg.standardize:
            fit_standardizers(stage1.norms, train)
        self.model_ = stage1

        # -- stage 1: each expert with its own head, complete data, per-modality restore
        tracker = _BestPerModality(stage1, maximize=METRICS[self.select_metric].higher_is_better)
        complete = {"complete": np.ones((len(valid.dataset), len(stage1.modalities)), bool)}
        modality_axis = -1 if task == "regression" else -2

        def unimodal_loss(model, batch, epoch):
            with self._autocast():
                predictions = model(batch).prediction.float()
            return sum(task_loss(p, batch, task, loss_kind) for p in predictions.unbind(modality_axis))

        def unimodal_scores(epoch):
            predictions = predict_settings(
                lambda b: self._predict_with(stage1, b),
                valid,
                complete,
                level="video",
                batch_size=cfg.eval_batch_size,
                device=context.torch_device,
                precision=context.precision,
            )["complete"]
            scores = {
                k: compute_metrics(task, predictions.take(i, axis=modality_axis), valid.labels)[self.select_metric] for i, k in enumerate(stage1.modalities)
            }
            tracker.update(epoch, scores)
            return float(np.mean(list(scores.values())))

        phases = [
            self.train_phase(
                stage1,
                train,
                valid,
                Phase(
                    loss=unimodal_loss,
                    sampler=Complete(),
                    settings=complete,
                    score=unimodal_scores,
                    optimizer="adam",
                    name="stage1",
                    epochs=cfg.stage1_epochs,
                    extra_state=tracker,
                    keep_last=cfg.restore == "last",
                    keep_optimizer_state=cfg.stage2_optimizer == "shared",
                ),
                protocol=protocol,
                seed=seed,
                context=context,
            )
        ]
        if cfg.restore == "best":
            tracker.restore()
        stage1.stage = 2
        initial = copy.deepcopy(stage1.state_dict())
        optimizer_state, phases[0].optimizer_state = phases[0].optimizer_state, None

        # -- stage 2: routers mix all experts; one model per condition or one for all
        def fused_loss(model, batch, epoch):
            with self._autocast():
                prediction = model(batch).prediction
            return task_loss(prediction, batch, task, loss_kind)

        valid_settings = protocol.settings(valid)

        def stage2(condition=None):
            model = self.build(self.spec_)
            model.load_state_dict(initial)
            settings = valid_settings
            sampler = protocol.training_sampler(make_sampler(cfg.train_missing))
            phase = "stage2"
            if condition is not None:
                settings, sampler, phase = {condition: settings[condition]}, FixedCondition(condition), f"stage2[{condition}]"
            phases.append(
                self.train_phase(
                    model,
                    train,
                    valid,
                    Phase(
                        loss=fused_loss,
                        sampler=sampler,
                        settings=settings,
                        predict=lambda b: self._predict_with(model, b),
                        optimizer="adam",
                        name=phase,
                        epochs=cfg.epochs,
                        optimizer_state=optimizer_state,
                        select_from=cfg.select_from,
                    ),
                    protocol=protocol,
                    seed=seed,
                    context=context,
                )
            )
            return model

        if protocol.kind == "fixed" and cfg.per_condition:
            names = [c.name for c in fixed_conditions(self.spec_.modalities)]
            self.model_ = PerConditionMoMKE({name: stage2(name) for name in names}, self.spec_.modalities)
        else:
            self.model_ = stage2()
        self.phases_ = phases
        self.model_.eval()
        return self

    def _predict_with(self, model, batch):
        with self._autocast():
            return model(batch).prediction.float()
