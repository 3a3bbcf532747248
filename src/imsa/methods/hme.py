"""HME (Zhuang et al., NeurIPS 2025): hyper-modality enhancement for missing modalities.

Each modality's sequence is projected (a 1x1 convolution) and encoded by MulT's
encoder called as the release calls it, ``l2l(x, x, x)``: every layer attends to the
embedded input, not to the previous layer's output; then max-pooled to a vector ``r_m``. Within each modality, a
vector is *enhanced* by the mean of the batch's other vectors whose cosine similarity
to it reaches ``similarity_threshold`` (cross-sample retrieval); a Perceiver per modality
summarises the result (``e_m``) and a fourth one the three vectors together (``z``).
Cross-attention blocks build ``h_{m->s}`` from ``e_m`` over ``e_s`` and the
*hyper-modality* ``H_m`` from ``z`` over the ``h_{m->s}``. A variational information
bottleneck gives each ``H_m`` a mean, a spread and a unimodal prediction; the spreads
weight an attention over the three encodings and, per modality, an attention between
``r_m`` and its encoding; a two-layer transformer over the four results and an MLP head
predict. Spec, fidelity and results: ``docs/methods/hme.md`` (written from
github.com/YetZzzzzz/HME at 6f0c9a7).

Fidelity: with every released tensor (44,090,573 besides BERT, as here) given random
values and copied in, the released module (its VIB's sampling replaced by the mean) and
this one, with ``padding_mask=False``, differ by at most 8.9e-8 in the prediction and the
unimodal outputs (order 0.4) on padded batches with all seven modality subsets, 6.0e-8
with the default ``padding_mask=True`` on unpadded batches, and 4.5e-8 with the same small
BERT fine-tuned on token ids on both sides; in training mode (dropouts 0, the same VIB
noise) the losses are equal and the gradients differ by at most 3.0e-8.

Recipe (the released ``HME_main.py`` and its README's MOSI command): the loss
``L1 + 0.8 * mean_m L1(unimodal_m) + 0.01 * mean_m KL_m``, AdamW at 2e-5 for every
parameter (a fine-tuned text encoder too), weight decay 1e-4, gradients clipped by value
at 0.8, batches of 256 (128 in evaluation), 100 epochs with early stopping after 10;
every linear layer outside the text encoder initialised N(0, 0.02) with zero bias, as
``from_pretrained`` does to the released module.

Departures from the released code, and why:

* **Masks.** The release's ``--missing_rate`` draws GCNet's random masks (its
  ``generate_missing_matrix`` is GCNet's ``random_mask``), anew every epoch for training,
  validation and test alike, in windows of the shuffled loaders that the last batch
  overlaps. Here training masks are drawn per utterance for every batch from the run's
  seeded generator, and evaluation masks once per split from the mask seed (imsa's
  protocols), so a score repeats and every method meets the same masks. Under
  ``random`` the training masks are the release's draw; under ``mr`` the DiCMoR/IMDer
  composition (``dicmor:R``), which is what the paper's MR tables compare against;
  under ``fixed`` and ``noise`` ``train_missing`` (``uniform``: the release always trains
  with missing modalities).
* **Deterministic evaluation.** The released bottleneck samples its noise in evaluation
  as well, so a prediction changes between calls; here it samples in training and uses
  the mean in evaluation.
* **Padding is not read** (``padding_mask=true``): padded steps are hidden from the
  encoders' attention and from the max over time. The release attends to BERT's states
  at ``[PAD]`` and to the zero rows of audio and video, and pools over them, so a
  prediction depends on the padded width; ``padding_mask=false`` does the same here.
* **The retrieval stays inside the batch**, as released, so a prediction depends on the
  other utterances of its batch; evaluation batches are the subset's utterances in order,
  ``eval_batch_size`` (128, as released) at a time, so a result repeats (the released
  test loader is shuffled). A batch of one utterance works (the release fails on it):
  with no neighbour the utterance is its own fallback.
* **Missing rows in the retrieval.** The release gives the batch mean to a row whose
  vector sums to exactly zero, meaning a missing modality; that holds only at
  initialisation (a missing modality's encoder output is a non-zero constant once the
  biases move). ``retrieval="released"`` (the default) keeps that test;
  ``retrieval="present"`` reads the batch's ``present`` mask instead: a row missing the
  modality gets the mean of the rows that have it, and present rows retrieve among them.
* **One optimiser for the run.** The release builds a new AdamW every epoch, so Adam's
  moments restart each epoch; imsa's shared loop keeps them. Its decay groups go by rank
  (no decay on biases and norms); the release's by name also decays HME's own LayerNorm
  weights (2e-9 of a weight per step at lr 2e-5).
* **Selection** on the validation ``select_metric`` (MAE for regression) averaged over
  the protocol's settings; the release selects on the validation loss (the training
  loss, on freshly drawn masks).
* **Only the settings that act**: the release's ``attn_dropout_a``/``attn_dropout_v``
  (computed and ignored: every encoder takes ``attn_dropout``), ``latent_dim`` (the
  latents are ``d_l`` wide), ``out_dropout``, ``weights_threshold``, ``lr_decrease`` and
  ``lr_warmup`` have no counterpart; the fixed sizes of the fusion transformer (2 layers,
  feed-forward 2048, dropout 0.1) and of the uncertainty attentions' dropout (0.3) and
  the loss weights are settings.
* **Text**: the dataset's precomputed text features by default; ``text_encoder=PATH``
  (or ``minilm``) fine-tunes that encoder on the file's token ids, as the release
  fine-tunes BERT; a missing text is zero states (the release zeroes BERT's output).
* **Data**: two or three modalities (the release takes exactly l, a, v), sequences of
  any lengths per modality (HME never pairs steps across modalities; the release's
  loader does not align word pieces with audio and video either), or one vector per
  utterance read as a one-step sequence. Classification (cross-entropy on the fused and
  the unimodal logits) is an extension: the release is regression only.
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
from ..nn.perceiver import Attention, FeedForward, Perceiver, PreNorm
from ..nn.text_encoder import TextEncoder
from ..protocols import Protocol
from ..training import RunContext
from .base import Method
from .phase import Phase, task_loss
from .registry import register_method
from .spec import DataSpec, Output, TrainConfig

INIT_STD = 0.02  # BERT's initializer_range, which from_pretrained applies to every released linear layer
EPS = 1e-8  # the release's guard in 1 / (mean spread + eps)


@dataclass(frozen=True)
class HMEConfig(TrainConfig):
    """HME defaults: the released MOSI command (``README.md``) with ``HME_main.py``'s defaults.

    Attributes
    ----------
    dim, heads : int
        Width of every block (``d_l``) and attention heads (``num_heads``); every attention
        has heads of width ``dim / heads``.
    encoder_layers : int
        Layers of each modality's MulT self-attention encoder (``layers``).
    latent_layers, num_latents : int
        Depth and learned latents of the four Perceivers (``latent_layers``, ``num_latents``).
    hyper_depth : int
        Layers of the cross-attention blocks that build the hyper-modalities.
    fusion_layers, fusion_ff_dim : int
        The fusion transformer (PyTorch's, post-LayerNorm): layers and feed-forward width.
    attn_dropout, relu_dropout, res_dropout, embed_dropout : float
        The modality encoders' dropouts.
    gate_dropout : float
        Dropout in the MLPs of the uncertainty-weighted attentions.
    fusion_dropout, head_dropout : float
        Dropout of the fusion transformer and of the head's hidden layer.
    similarity_threshold : float
        Cosine similarity from which another utterance of the batch is a neighbour.
    retrieval : {"released", "present"}
        How rows missing a modality take part in the retrieval (see the module).
    uncertainty_lb, uncertainty_ub : float
        Bounds of the inverse spread that weights a modality's encoding against its vector.
    unimodal_weight, kl_weight : float
        Weights of the unimodal losses and of the bottleneck's KL term.
    padding_mask : bool
        Hide padded steps from the encoders and the max over time (False: as released).
    text_encoder : str
        ``""`` reads the precomputed text features; ``minilm`` or a local Hugging Face
        model folder fine-tunes that encoder on the dataset's token ids (``text_bert``).
    """

    dim: int = 192
    heads: int = 16
    encoder_layers: int = 4
    latent_layers: int = 4
    num_latents: int = 5
    hyper_depth: int = 3
    fusion_layers: int = 2
    fusion_ff_dim: int = 2048
    attn_dropout: float = 0.5
    relu_dropout: float = 0.3
    res_dropout: float = 0.3
    embed_dropout: float = 0.2
    gate_dropout: float = 0.3
    fusion_dropout: float = 0.1
    head_dropout: float = 0.1
    similarity_threshold: float = 0.6
    retrieval: str = "released"
    uncertainty_lb: float = 0.2
    uncertainty_ub: float = 1.0
    unimodal_weight: float = 0.8
    kl_weight: float = 0.01
    padding_mask: bool = True
    text_encoder: str = ""
    epochs: int = 100
    batch_size: int = 256
    eval_batch_size: int = 128
    lr: float = 2e-5
    weight_decay: float = 1e-4
    patience: int | None = 10
    grad_clip: float | None = 0.8
    train_missing: str = "uniform"

    DOMAINS: ClassVar[dict] = {
        **TrainConfig.DOMAINS,
        **{k: COUNT for k in ("dim", "heads", "encoder_layers", "latent_layers", "num_latents", "hyper_depth", "fusion_layers", "fusion_ff_dim")},
        **{k: PROBABILITY for k in ("attn_dropout", "relu_dropout", "res_dropout", "embed_dropout", "gate_dropout", "fusion_dropout", "head_dropout")},
        **{k: POSITIVE for k in ("uncertainty_lb", "uncertainty_ub")},
        **{k: NON_NEGATIVE for k in ("unimodal_weight", "kl_weight")},
    }
    CHOICES: ClassVar[dict] = {"retrieval": ("released", "present"), "padding_mask": (True, False)}

    def __post_init__(self):
        super().__post_init__()
        if self.dim % self.heads:
            raise ConfigError(f"HME: dim={self.dim} must be divisible by heads={self.heads} (every attention has heads of width dim / heads).")
        if not -1.0 <= self.similarity_threshold <= 1.0:
            raise ConfigError(f"HME: similarity_threshold={self.similarity_threshold} must be a cosine similarity, in [-1, 1].")
        if self.uncertainty_lb > self.uncertainty_ub:
            raise ConfigError(f"HME: uncertainty_lb={self.uncertainty_lb} must not exceed uncertainty_ub={self.uncertainty_ub}.")


class CrossEncoder(nn.Module):
    """Query tokens attending to a context: ``depth`` pre-LayerNorm cross-attention and GEGLU
    feed-forward layers with residuals, then the LayerNorm of the mean query token (the
    release's ``Encoder_Layer``: a Perceiver's cross-attention without latents)."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([PreNorm(dim, Attention(dim, context_dim=dim, heads=heads, dim_head=dim_head), context_dim=dim), PreNorm(dim, FeedForward(dim))])
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``x`` (B, N, dim), ``context`` (B, T, dim) -> (B, dim)."""
        for attention, feed_forward in self.layers:
            x = x + attention(x, context=context)
            x = x + feed_forward(x)
        return self.norm(x.mean(dim=1))


class Bottleneck(nn.Module):
    """The variational information bottleneck of one hyper-modality: an MLP to a mean and a
    spread ``softplus(s - 5)``, a sample in training (the mean in evaluation), a linear
    prediction from it, and the KL divergence to N(0, I) averaged over batch and channels."""

    def __init__(self, dim: int, output_dim: int):
        super().__init__()
        self.dim = dim
        self.encode = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, 2 * dim))
        self.decode = nn.Linear(dim, output_dim)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        statistics = self.encode(x)
        mu, std = statistics[:, : self.dim], F.softplus(statistics[:, self.dim :] - 5)
        encoding = mu + torch.randn_like(std) * std if self.training else mu
        kl = 0.5 * torch.mean(mu.pow(2) + std.pow(2) - 2 * std.log() - 1)
        return {"std": std, "encoding": encoding, "logits": self.decode(encoding), "kl": kl}


class UncertaintyAttention(nn.Module):
    """Attention over ``n`` vectors from an MLP of their concatenation, its logits scaled by
    weights of the spreads, divided by ``sqrt(dim)`` and softmaxed; the weighted sum of the
    vectors. ``forward(vectors, weights)``: a list of ``n`` (B, dim) tensors and (B, n) weights."""

    def __init__(self, dim: int, n: int, dropout: float):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(n * dim, dim), nn.Dropout(dropout), nn.ReLU())
        self.fc_att = nn.Linear(dim, n)

    def forward(self, vectors: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
        logits = self.fc_att(self.mlp(torch.cat(vectors, dim=1))) * weights
        attention = torch.softmax(logits * self.dim**-0.5, dim=1)
        return (torch.stack(vectors, dim=2) @ attention.unsqueeze(2)).squeeze(2)


def neighbour_means(x: torch.Tensor, threshold: float, present: torch.Tensor | None = None) -> torch.Tensor:
    """Each row's cross-sample enhancement: the mean of the *other* rows whose cosine
    similarity to it is at least ``threshold``.

    As released (``present`` None): a row without such a neighbour, or whose values sum to
    exactly 0, gets the mean of the rows whose values do not sum to 0 (itself included;
    zeros if there is none). With ``present`` (bool (B,)): only present rows are
    neighbours, and a missing row, or a present row without a neighbour, gets the mean of
    the present rows (a missing row keeps its own vector when no row is present).
    """
    similarity = F.cosine_similarity(x.unsqueeze(1), x.unsqueeze(0), dim=2)
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
    similar = (similarity >= threshold) & ~eye
    if present is not None:
        similar = similar & present[None, :] & present[:, None]
        usable = present
    else:
        usable = x.sum(dim=1) != 0
    count = similar.sum(dim=1, keepdim=True)
    mean = (similar.to(x.dtype) @ x) / count.clamp(min=1).to(x.dtype)
    if usable.any():
        fallback = x[usable].mean(dim=0, keepdim=True).expand_as(x)
    else:
        fallback = x if present is not None else torch.zeros_like(x)
    return torch.where((count == 0) | ~usable[:, None], fallback, mean)


class HMENet(nn.Module):
    """The released network over the dataset's modalities (all three, as released, or two).

    Modules: ``proj`` (1x1 convolutions), ``encoders`` (MulT), ``latents`` (a Perceiver per
    modality), ``sample_latent`` (the Perceiver over all modalities), ``pairs`` (``"l2a"``:
    text querying audio), ``hyper``, ``bottleneck``, ``gates`` (vector against encoding),
    ``hyper_fusion``, ``fusion`` (PyTorch's transformer) and ``head``.
    """

    def __init__(self, spec: DataSpec, cfg: HMEConfig, text_encoder: TextEncoder | None = None):
        super().__init__()
        self.modalities, self.task, self.cfg = spec.modalities, spec.task, cfg
        d, heads, head_width = cfg.dim, cfg.heads, cfg.dim // cfg.heads
        dims = {**spec.dims, **({TEXT: text_encoder.dim} if text_encoder is not None else {})}
        self.proj = nn.ModuleDict({m: nn.Conv1d(dims[m], d, kernel_size=1, bias=False) for m in self.modalities})
        self.encoders = nn.ModuleDict(
            {
                m: TransformerEncoder(
                    d,
                    heads,
                    cfg.encoder_layers,
                    attn_dropout=cfg.attn_dropout,
                    relu_dropout=cfg.relu_dropout,
                    res_dropout=cfg.res_dropout,
                    embed_dropout=cfg.embed_dropout,
                    causal=False,
                )
                for m in self.modalities
            }
        )
        latent = dict(input_dim=d, dim=d, depth=cfg.latent_layers, num_latents=cfg.num_latents, heads=heads, dim_head=head_width)
        self.sample_latent = Perceiver(**latent)
        self.latents = nn.ModuleDict({m: Perceiver(**latent) for m in self.modalities})
        self.pairs = nn.ModuleDict(
            {f"{m}2{s}": CrossEncoder(d, cfg.hyper_depth, heads, head_width) for m in self.modalities for s in self.modalities if s != m}
        )
        self.hyper = nn.ModuleDict({m: CrossEncoder(d, cfg.hyper_depth, heads, head_width) for m in self.modalities})
        self.bottleneck = nn.ModuleDict({m: Bottleneck(d, spec.output_dim) for m in self.modalities})
        self.hyper_fusion = UncertaintyAttention(d, len(self.modalities), cfg.gate_dropout)
        self.gates = nn.ModuleDict({m: UncertaintyAttention(d, 2, cfg.gate_dropout) for m in self.modalities})
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=cfg.fusion_ff_dim, dropout=cfg.fusion_dropout)
        self.fusion = nn.TransformerEncoder(layer, cfg.fusion_layers, enable_nested_tensor=False)
        width = (len(self.modalities) + 1) * d
        self.head = nn.Sequential(nn.Linear(width, width // 2), nn.Dropout(cfg.head_dropout), nn.ReLU(), nn.Linear(width // 2, spec.output_dim))
        for module in self.modules():  # BERT's initialiser, as from_pretrained applies it to the released module
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=INIT_STD)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self.text_encoder = text_encoder  # after the initialisation: a pretrained encoder keeps its weights

    def sequence(self, batch: Batch, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Modality ``k``'s input ``(B, T, D)``, zeros where the batch marks it missing, and its real steps (None: all)."""
        m = self.modalities[k]
        if m == TEXT and self.text_encoder is not None:
            x, mask = self.text_encoder.token_states(batch)
        else:
            x, mask = batch.inputs[m], batch.padding.get(m)
            if x.dim() == 2:  # one vector per utterance: a one-step sequence
                x, mask = x[:, None], None
        x = x * batch.present[:, k].to(x.dtype)[:, None, None]
        if mask is not None:
            mask = mask.bool()
            mask = mask | ~mask.any(dim=1, keepdim=True)  # a row without real steps is read whole
        return x, mask

    def vectors(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``r_m`` (B, dim): each modality encoded and max-pooled over its real steps."""
        out = {}
        for k, m in enumerate(self.modalities):
            x, mask = self.sequence(batch, k)
            if not self.cfg.padding_mask:
                mask = None
            projected = self.proj[m](x.transpose(1, 2)).transpose(1, 2)
            # called as the release calls it, l2l(x, x, x): every layer attends to the embedded input, not to its own input
            h = self.encoders[m](projected, projected, mask=mask)
            if mask is not None:
                h = h.masked_fill(~mask[..., None], float("-inf"))
            out[m] = h.amax(dim=1)
        return out

    def run(self, batch: Batch) -> dict:
        """The prediction, the fused feature, and per modality the unimodal logits and KL term."""
        modalities, cfg = self.modalities, self.cfg
        r = self.vectors(batch)
        enhanced = {}
        for k, m in enumerate(modalities):
            present = batch.present[:, k] if cfg.retrieval == "present" else None
            enhanced[m] = self.latents[m](neighbour_means(r[m], cfg.similarity_threshold, present)[:, None])
        sample = self.sample_latent(torch.stack([r[m] for m in modalities], dim=1))[:, None]
        pairs = {(m, s): self.pairs[f"{m}2{s}"](enhanced[m][:, None], enhanced[s][:, None]) for m in modalities for s in modalities if s != m}
        hyper = {m: self.hyper[m](sample, torch.stack([pairs[m, s] for s in modalities if s != m], dim=1)) for m in modalities}
        vib = {m: self.bottleneck[m](hyper[m]) for m in modalities}
        inverse = {m: 1.0 / (vib[m]["std"].mean(dim=1) + EPS) for m in modalities}  # (B,) per modality
        fused_hyper = self.hyper_fusion([vib[m]["encoding"] for m in modalities], torch.softmax(torch.stack([inverse[m] for m in modalities], dim=1), dim=1))
        refined = []
        for m in modalities:
            bound = inverse[m].clamp(min=cfg.uncertainty_lb, max=cfg.uncertainty_ub)
            refined.append(self.gates[m]([r[m], vib[m]["encoding"]], torch.stack([torch.ones_like(bound), bound], dim=1)))
        tokens = torch.stack([*refined, fused_hyper], dim=0)  # (M + 1, B, dim): PyTorch's sequence-first layout, as released
        feature = self.fusion(tokens).transpose(0, 1).flatten(1)
        prediction = self.head(feature)
        unimodal = {m: vib[m]["logits"] for m in modalities}
        if self.task == "regression":
            prediction, unimodal = prediction.squeeze(-1), {m: v.squeeze(-1) for m, v in unimodal.items()}
        return {"prediction": prediction, "feature": feature, "unimodal": unimodal, "kl": {m: vib[m]["kl"] for m in modalities}}

    def forward(self, batch: Batch) -> Output:
        out = self.run(batch)
        return Output(out["prediction"], out["feature"])


def hme_loss(model: HMENet, batch: Batch, task: str, cfg: HMEConfig) -> torch.Tensor:
    """The task loss, plus ``unimodal_weight`` times the mean unimodal loss of the
    hyper-modalities (every modality, missing or not) and ``kl_weight`` times their mean KL term."""
    out = model.run(batch)
    unimodal = sum(task_loss(v, batch, task) for v in out["unimodal"].values()) / len(out["unimodal"])
    kl = sum(out["kl"].values()) / len(out["kl"])
    return task_loss(out["prediction"], batch, task) + cfg.unimodal_weight * unimodal + cfg.kl_weight * kl


@register_method
class HME(Method):
    """HME: cross-sample enhancement, hyper-modalities and uncertainty-aware fusion, trained under missing modalities."""

    name = "hme"
    Config = HMEConfig
    token_text = True
    tasks = ("regression", "classification")
    protocols = ("fixed", "random", "frames", "mr", "noise")
    tiny_config: ClassVar[dict] = {
        "dim": 8,
        "heads": 2,
        "encoder_layers": 1,
        "latent_layers": 1,
        "num_latents": 2,
        "hyper_depth": 1,
        "fusion_layers": 1,
        "fusion_ff_dim": 16,
    }
    # The release's encoder dropouts (0.2 to 0.5) slow a 15-epoch fit of the tiny model on the synthetic check below the bar;
    # at the check's lr 3e-3 the test MAE sat on the bar (0.712 against 0.711), at 1e-3 it is 0.649.
    learning_config: ClassVar[dict] = {"lr": 1e-3, "attn_dropout": 0.0, "relu_dropout": 0.0, "res_dropout": 0.0, "embed_dropout": 0.0}
    # The bottleneck's unimodal heads are trained by the unimodal losses only.
    no_task_gradient: ClassVar[tuple[str, ...]] = ("decode",)

    def data_spec(self, dataset):
        """The dataset's spec, refusing one with fewer than two modalities."""
        spec = super().data_spec(dataset)
        if len(spec.modalities) < 2:
            raise ConfigError(f"HME exchanges information between modalities; {dataset.name} has only {spec.modalities[0]!r}.")
        return spec

    def build(self, spec: DataSpec) -> nn.Module:
        """The untrained :class:`HMENet` for ``spec`` (loading the text encoder, if any)."""
        encoder = TextEncoder.for_token_ids(self.config.text_encoder) if self.config.text_encoder and TEXT in spec.modalities else None
        return HMENet(spec, self.config, encoder)

    def fit(self, train, valid, *, protocol=None, seed=0, context=None):
        protocol, context = protocol or Protocol(), context or RunContext()
        c = self.config
        torch.manual_seed(seed)
        self.spec_ = self.training_spec(train)
        model = self.build(self.spec_)
        self.model_ = model
        task = self.spec_.task
        result = self.train_phase(
            model,
            train,
            valid,
            Phase(
                loss=lambda model, batch, epoch: hme_loss(model, batch, task, c),
                sampler=protocol.training_sampler(make_sampler(c.train_missing)),
                settings=protocol.settings(valid),
                clip_mode="value",
            ),
            protocol=protocol,
            seed=seed,
            context=context,
        )
        self.phases_ = [result]
        return self
