"""P-RMF (Zhu et al., ACL 2025): proxy-driven robust multimodal fusion for incomplete data.

Each modality is summarised into ``tokens`` learned tokens (ALMT's prefix transformer, as
LNLN); a variational encoder per modality maps its tokens to a Gaussian ``N(mu, sigma^2)``
per token and channel; the *proxy modality* is the mean ``mu`` of every modality weighted
by ``softmax_m(1 / sigma_m)`` (more certain modalities weigh more, channel by channel); a
cross-modal injection updates the proxy from each modality's tokens, weighted by the same
weights, over ``fusion_depth`` layers, and an MLP on the mean token predicts. In training,
the variational decoders and one reconstructor per modality map the noisy tokens to the
clean ones, and the posteriors are pulled towards each other and towards ``N(0, I)``. The
training data is noised inside the loss as LNLN's (``train_noise="lnln"``: per sample and
modality, rate 0 with probability 1/2, else U(0, 1), frames dropped at that rate). Written
from the release copy in ``1579364808/PRD-Net`` at cdb0039 (folder ``P-RMF/``, checked
against the paper's description: ``docs/methods/prmf.md``); blocks from
:mod:`imsa.nn.almt` where the release's are the same.

Departures from the released code, and what imsa does where it is silent:

* **Selection on validation only** (released: checkpoints picked on the test split, one
  per metric, at rate 0.5), by the toolkit's ``select_metric`` averaged over the
  protocol's validation settings; under ``frames`` one model is trained (its noise does
  not depend on the test rate) and selected on the average over the rates.
* **Training noise redrawn every batch** (released: once an epoch, when the loader fetches
  utterance 0, the frames dropped by NumPy reseeded to a fixed seed each time), from the run's
  seeded generator through :class:`~imsa.methods.phase.TrainingMasks` (stream 7), as
  imsa's LNLN: whole-modality masks (``train_missing``, or the random protocol's rate)
  first, frame drops inside the present modalities second. Under ``frames`` this noise
  replaces the protocol's ``frames:same`` (``train_noise="none"`` keeps the protocol's).
  A vector modality is read as a one-step sequence and never frame-noised.
* **Uncertainty weights as a softmax** of ``1 / sigma`` over the modalities: the
  release's ``exp(1/sigma) / sum exp(1/sigma)``, the same values, but finite where the
  release overflows to NaN (``sigma < 0.0113``, a log-variance under -8.96 of the
  allowed -10).
* **Padding masked** in the modality encoders (released: padded frames are attended);
  ``padding_mask=false`` reproduces the release. Dropped frames are never masked.
* **Missing modalities**: the toolkit's zeros (a sequence of zero frames of the real
  length), zeroed by ``present`` inside the model so that they are never read; they go
  through their encoder and variational encoder like a present one (the release has no
  notion of a missing modality: at frame rate 1 it sees the same zeros). Any number of
  modalities works: the agreement terms are the KL divergences of every later modality's
  posterior from every earlier one's in the release's order (l, v, a, then the rest), and
  the variational loss is divided by the number of modalities (3 as released).
* **Text**: by default the dataset's precomputed text features (a different, cheaper
  protocol than the release's fine-tuned BERT); ``text_encoder=PATH`` (a local Hugging
  Face folder, or ``minilm``) fine-tunes that encoder on the file's token ids at
  ``text_lr`` (released: BERT at 5e-6), as imsa's LNLN (dropped words are the
  tokenizer's ``unk_token_id``, ``[CLS]``/``[SEP]`` never dropped; released: the literal
  id 100, BERT's ``[UNK]``).
* **AdamW groups**: the toolkit's (no decay on biases and norms; released: decay on every
  tensor, a 1e-8 relative difference per step at lr 1e-4 and decay 1e-4).
* **Work the prediction does not need is skipped**: the variational decoders (whose
  output enters only the training loss) and the reconstructors run in training only; the
  last layer of a modality encoder computes only the ``tokens`` positions read; with
  ``padding_mask`` the encoders run on groups of similar length; a noisy training row
  equal to its clean row reuses the clean row's tokens (not with ``text_encoder``, whose
  dropout makes two passes differ). Same values, as in imsa's LNLN.
* **As released** (kept, though odd): the proxy enters the injection behind a gradient
  reversal (``reverse_proxy_gradient``; released ``GRL(proxy_m)`` with no discriminator,
  so the sentiment loss trains the variational means to *worsen* the prediction); the
  ``fusion_depth`` injection layers are one layer applied four times
  (``share_fusion_layers``); the reconstructors are not in the optimiser, so they keep
  their initialisation and ``L_rec`` trains only the encoders, through both the noisy
  tokens and the clean targets (``train_reconstructors=true`` trains them at ``lr``), and
  their gradients, never cleared, count in the norm clipped to 1 (imsa's loop clips every
  parameter of the model and clears only the optimiser's, as the release); the injection
  layers train at ``fusion_lr`` = 5e-6, not ``lr``; the reconstruction and variational
  targets are the clean tokens, not detached; ``mu`` and the log-variance are clamped to
  [-10, 10]; dropout 0.5 after each injection layer's feed-forward and in the head, none
  elsewhere; positional tables N(0, 1) (``position_std``); MSE sentiment loss; 100 epochs,
  batches of 32, warm-up over 10 epochs (the first at lr 0) then cosine
  (``warmup_cosine:10``), no early stopping. On CH-SIMS the encoders prepend 39 tokens and
  the model reads the first 8 (``prefix=39``, ``tokens=8``). Classification (cross-entropy
  on a ``C``-wide head) is an extension: the release is regression only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..batch import TEXT, Batch
from ..config import COUNT, NON_NEGATIVE
from ..errors import ConfigError, DataError
from ..frames import FrameDrop, FramesInside
from ..missing import Complete, make_sampler
from ..nn.almt import TokenTransformer
from ..nn.layers import reverse_gradient
from ..nn.text_encoder import TextEncoder
from ..protocols import Protocol
from ..training import RunContext
from .base import Method
from .common import prefix_tokens
from .phase import Phase, TrainingMasks, task_loss
from .registry import register_method
from .spec import DataSpec, Output, TrainConfig

# The release's modality order (text, vision, audio): the pairs of its agreement terms.
RELEASE_ORDER = ("l", "v", "a")
# The release clamps the variational mean and log-variance to this range.
POSTERIOR_LIMIT = 10.0


@dataclass(frozen=True)
class PRMFConfig(TrainConfig):
    """P-RMF defaults: the released CMU-MOSI settings (``configs/train_mosi.yaml``).

    Attributes
    ----------
    dim : int
        Width of every token, variational latent and injection layer (128; the release
        sets its several widths to 128, and most must be equal for its shapes to work).
    tokens : int
        Tokens read from each modality encoder (8, fixed in the release's code).
    prefix : int
        Learned tokens each modality encoder prepends (8; 39 on CH-SIMS); at least ``tokens``.
    heads, dim_head, mlp_dim : int
        Attention heads, their width, and the feed-forward width of every transformer layer.
    depth : int
        Layers of the modality encoders, the variational encoders and decoders and the
        reconstructors (2).
    fusion_depth : int
        Cross-modal injection layers (4).
    share_fusion_layers : bool
        One injection layer applied ``fusion_depth`` times (released), or distinct layers.
    fusion_dropout, head_dropout : float
        Dropout after each injection layer's feed-forward, and in the head (0.5 both).
    head_hidden : int
        Hidden width of the head (128).
    gamma, sigma, kl_weight : float
        Weights of the reconstruction, sentiment and variational losses (0.1, 1, 0.5).
    text_lr, fusion_lr : float
        Learning rates of the text encoder (with ``text_encoder``) and of the injection
        layers (5e-6 both, released); every other trained tensor takes ``lr``.
    reverse_proxy_gradient, train_reconstructors, padding_mask : bool
        See the module docstring.
    train_noise : {"lnln", "uniform", "none"}
        Frame noise of training batches: rate 0 w.p. 1/2 else U(0, 1) per sample and
        modality (released); U(0, 1); or none beyond the protocol's own masks.
    position_std : float
        Standard deviation of the positional tables' initialisation (released: 1).
    text_encoder : str
        ``""`` reads the precomputed text features; a local Hugging Face model folder, or
        ``minilm``, fine-tunes that encoder on the dataset's token ids (``text_bert``).
    """

    dim: int = 128
    tokens: int = 8
    prefix: int = 8
    heads: int = 8
    dim_head: int = 64
    mlp_dim: int = 128
    depth: int = 2
    fusion_depth: int = 4
    share_fusion_layers: bool = True
    fusion_dropout: float = 0.5
    head_hidden: int = 128
    head_dropout: float = 0.5
    gamma: float = 0.1
    sigma: float = 1.0
    kl_weight: float = 0.5
    text_lr: float = 5e-6
    fusion_lr: float = 5e-6
    reverse_proxy_gradient: bool = True
    train_reconstructors: bool = False
    train_noise: str = "lnln"
    padding_mask: bool = True
    position_std: float = 1.0
    text_encoder: str = ""
    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-4
    grad_clip: float | None = 1.0
    patience: int | None = None
    lr_schedule: str = "warmup_cosine:10"

    DOMAINS: ClassVar[dict] = {
        **TrainConfig.DOMAINS,
        **{k: COUNT for k in ("dim", "tokens", "prefix", "heads", "dim_head", "mlp_dim", "depth", "fusion_depth", "head_hidden")},
        **{k: NON_NEGATIVE for k in ("gamma", "sigma", "kl_weight", "position_std", "text_lr", "fusion_lr")},
    }
    CHOICES: ClassVar[dict] = {"train_noise": ("lnln", "uniform", "none")}

    def __post_init__(self):
        super().__post_init__()
        if self.prefix < self.tokens:
            raise ConfigError(f"P-RMF: prefix={self.prefix} must be at least tokens={self.tokens} (the tokens read are the encoder's learned prefix).")
        for name in ("fusion_dropout", "head_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"P-RMF: {name}={getattr(self, name)} must be in [0, 1).")


def gaussian_kl(mean_p: torch.Tensor, log_var_p: torch.Tensor, mean_q: torch.Tensor, log_var_q: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean_p, exp(log_var_p)) || N(mean_q, exp(log_var_q)))``, element by element."""
    return 0.5 * (torch.exp(log_var_p - log_var_q) + (mean_p - mean_q).square() * torch.exp(-log_var_q) - 1 - (log_var_p - log_var_q))


class TokenVAE(nn.Module):
    """The release's variational auto-encoder of a modality's tokens: ``Linear, ReLU``, a
    transformer over the tokens, then linear maps to the mean and the log-variance (both
    clamped to [-10, 10]); the decoder is ``Linear, ReLU``, a transformer, ``Linear``."""

    def __init__(self, length: int, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, position_std: float):
        super().__init__()
        block = dict(dim=dim, depth=depth, heads=heads, dim_head=dim_head, mlp_dim=mlp_dim, position_std=position_std)
        self.encoder = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), TokenTransformer(length, **block))
        self.to_mean, self.to_log_var = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.decoder = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), TokenTransformer(length, **block), nn.Linear(dim, dim))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and log-variance of the posterior of ``x`` ``(B, tokens, dim)``."""
        h = self.encoder(x)
        return self.to_mean(h).clamp(-POSTERIOR_LIMIT, POSTERIOR_LIMIT), self.to_log_var(h).clamp(-POSTERIOR_LIMIT, POSTERIOR_LIMIT)


class CrossModalAttention(nn.Module):
    """The release's single-head attention of a query sequence to a source: one LayerNorm
    for the query, one shared by keys and values, biased projections, scale ``dim^-0.5``.
    (Not ALMT's :class:`~imsa.nn.almt.Attention`, which has heads, three LayerNorms and no
    projection bias.)"""

    def __init__(self, dim: int):
        super().__init__()
        self.norm_query, self.norm_source = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q, self.to_k, self.to_v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, query: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        source = self.norm_source(source)
        return self.out(F.scaled_dot_product_attention(self.to_q(self.norm_query(query)), self.to_k(source), self.to_v(source)))


class InjectionLayer(nn.Module):
    """One layer of the cross-modal injection: ``y = P + sum_m w_m * Attn_m(P, H_m)``, then
    ``y + Dropout(Linear(LN(y)))``."""

    def __init__(self, dim: int, modalities: tuple[str, ...], dropout: float):
        super().__init__()
        self.attention = nn.ModuleDict({m: CrossModalAttention(dim) for m in modalities})
        self.norm, self.fc, self.dropout = nn.LayerNorm(dim), nn.Linear(dim, dim), nn.Dropout(dropout)

    def forward(self, proxy: torch.Tensor, tokens: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> torch.Tensor:
        injected = sum(self.attention[m](proxy, tokens[m]) * weights[m] for m in self.attention) + proxy
        return injected + self.dropout(self.fc(self.norm(injected)))


class PRMFNet(nn.Module):
    """The P-RMF network for data of shape ``spec``."""

    def __init__(self, spec: DataSpec, cfg: PRMFConfig, text_encoder: nn.Module | None = None):
        super().__init__()
        d = cfg.dim
        self.modalities, self.task, self.cfg = spec.modalities, spec.task, cfg
        self.agreement_order = sorted(spec.modalities, key=lambda m: RELEASE_ORDER.index(m) if m in RELEASE_ORDER else len(RELEASE_ORDER))
        block = dict(dim=d, depth=cfg.depth, heads=cfg.heads, dim_head=cfg.dim_head, mlp_dim=cfg.mlp_dim, position_std=cfg.position_std)
        self.text_encoder = text_encoder
        self.embed = nn.ModuleDict({m: nn.Linear(text_encoder.dim if m == TEXT and text_encoder is not None else spec.dims[m], d) for m in spec.modalities})
        self.encoders = nn.ModuleDict({m: TokenTransformer(spec.steps.get(m, 1), prefix=cfg.prefix, **block) for m in spec.modalities})
        self.vaes = nn.ModuleDict({m: TokenVAE(cfg.tokens, **block) for m in spec.modalities})
        self.reconstructors = nn.ModuleDict({m: TokenTransformer(cfg.tokens, **block) for m in spec.modalities})
        self.injection = nn.ModuleList(
            InjectionLayer(d, spec.modalities, cfg.fusion_dropout) for _ in range(1 if cfg.share_fusion_layers else cfg.fusion_depth)
        )
        self.head = nn.Sequential(nn.Linear(d, cfg.head_hidden), nn.ReLU(), nn.Dropout(cfg.head_dropout), nn.Linear(cfg.head_hidden, spec.output_dim))

    def modality_tokens(self, batch: Batch, like: tuple[Batch, dict[str, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
        """``(B, tokens, dim)`` per modality (:func:`~imsa.methods.common.prefix_tokens`;
        ``like``: another batch of the same utterances and its tokens, reused where equal)."""
        return prefix_tokens(batch, self.encoders, self.embed, self.cfg.tokens, padding_mask=self.cfg.padding_mask, text_encoder=self.text_encoder, like=like)

    def run(self, batch: Batch, tokens: dict[str, torch.Tensor] | None = None) -> dict:
        """Every intermediate that the prediction and the training losses need (``tokens``:
        the batch's :meth:`modality_tokens`, when already computed)."""
        tokens = self.modality_tokens(batch) if tokens is None else tokens
        posteriors = {m: self.vaes[m].posterior(tokens[m]) for m in self.modalities}
        certainty = torch.stack([torch.exp(-0.5 * posteriors[m][1]) for m in self.modalities])  # 1 / sigma
        weight_stack = torch.softmax(certainty, dim=0)
        proxy = (weight_stack * torch.stack([posteriors[m][0] for m in self.modalities])).sum(0)
        weights = dict(zip(self.modalities, weight_stack))
        fused = reverse_gradient(proxy) if self.cfg.reverse_proxy_gradient else proxy
        for i in range(self.cfg.fusion_depth):
            fused = self.injection[0 if self.cfg.share_fusion_layers else i](fused, tokens, weights)
        feature = fused.mean(1)
        prediction = self.head(feature)
        if self.task == "regression":
            prediction = prediction.squeeze(-1)
        return {"prediction": prediction, "feature": feature, "tokens": tokens, "posteriors": posteriors, "weights": weights, "proxy": proxy}

    def forward(self, batch: Batch) -> Output:
        out = self.run(batch)
        return Output(out["prediction"], out["feature"])

    def losses(self, noisy: Batch, clean: Batch, noise: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """P-RMF's three losses on a noisy batch, with the clean batch's tokens as targets.
        ``noise``: the standard normal draws of the reparameterisation per modality (drawn
        here when not given)."""
        if self.text_encoder is None:
            clean_tokens = self.modality_tokens(clean)
            out = self.run(noisy, self.modality_tokens(noisy, like=(clean, clean_tokens)))
        else:
            clean_tokens, out = self.modality_tokens(clean), self.run(noisy)
        posteriors = out["posteriors"]
        variational = 0
        for m in self.modalities:
            mean, log_var = posteriors[m]
            draw = torch.randn_like(mean) if noise is None else noise[m]
            decoded = self.vaes[m].decoder(mean + torch.exp(0.5 * log_var) * draw)
            variational = (
                variational + F.mse_loss(decoded, clean_tokens[m]) + gaussian_kl(mean, log_var, torch.zeros_like(mean), torch.zeros_like(log_var)).mean()
            )
        order = self.agreement_order
        agreement = sum(gaussian_kl(*posteriors[later], *posteriors[earlier]).mean() for i, later in enumerate(order) for earlier in order[:i])
        reconstructed = torch.cat([self.reconstructors[m](out["tokens"][m]) for m in self.modalities], dim=1)
        targets = torch.cat([clean_tokens[m] for m in self.modalities], dim=1)
        return {
            "task": task_loss(out["prediction"], noisy, self.task, "mse"),
            "reconstruction": F.mse_loss(reconstructed, targets),
            "variational": (agreement + variational) / len(self.modalities),
        }


@register_method
class PRMF(Method):
    """P-RMF: an uncertainty-weighted proxy of every modality's variational mean, injected with each modality's tokens."""

    name = "prmf"
    Config = PRMFConfig
    default_threads = 2
    token_text = True
    tiny_config: ClassVar[dict] = {
        "dim": 16,
        "tokens": 2,
        "prefix": 2,
        "heads": 2,
        "dim_head": 8,
        "mlp_dim": 16,
        "depth": 1,
        "fusion_depth": 2,
        "head_hidden": 8,
        "lr_schedule": "constant",
    }
    learning_config: ClassVar[dict] = {"train_noise": "none", "fusion_lr": 3e-3, "head_dropout": 0.0, "fusion_dropout": 0.0}
    # the decoders are trained by the variational loss only, the reconstructors by none (as released)
    no_task_gradient: ClassVar[tuple[str, ...]] = ("decoder", "reconstructors")

    @classmethod
    def own_frame_noise(cls, config) -> bool:
        """Whether this config trains under frame noise of its own (``train_noise``), so one model serves every test rate."""
        return config.train_noise != "none" or super().own_frame_noise(config)

    def build(self, spec: DataSpec) -> nn.Module:
        return PRMFNet(spec, self.config, TextEncoder.for_token_ids(self.config.text_encoder) if self.config.text_encoder else None)

    def check_data(self, dataset):
        super().check_data(dataset)
        longer = {m: t for m, t in DataSpec.of(dataset).steps.items() if t > self.spec_.steps.get(m, t)}
        if longer:
            raise DataError(f"{dataset.name}: sequences of {longer} steps, longer than the {self.spec_.steps} this prmf model's positional tables hold.")

    def param_groups(self, model: PRMFNet) -> list[dict]:
        """The release's optimiser groups: the text encoder at ``text_lr``, the injection
        layers at ``fusion_lr``, the rest at ``lr``; the reconstructors only with
        ``train_reconstructors``."""
        c = self.config
        special = {"text_encoder": c.text_lr, "injection": c.fusion_lr}
        groups = [{"params": list(getattr(model, name).parameters()), "lr": lr} for name, lr in special.items() if getattr(model, name) is not None]
        skipped = {*special, *(() if c.train_reconstructors else ("reconstructors",))}
        groups.append({"params": [p for name, p in model.named_parameters() if name.split(".")[0] not in skipped]})
        return groups

    def fit(self, train, valid, *, protocol=None, seed=0, context=None):
        c = self.config
        protocol, context = protocol or Protocol(), context or RunContext()
        self.spec_ = spec = self.training_spec(train)
        torch.manual_seed(seed)
        model = self.build(spec)
        if c.train_noise == "none":
            sampler = protocol.training_sampler(make_sampler(c.train_missing))
        else:  # the release's own noise replaces the protocol's frames:same
            whole = make_sampler(c.train_missing) if protocol.kind == "frames" else protocol.training_sampler(make_sampler(c.train_missing))
            sampler = FramesInside(whole.modalities if isinstance(whole, FramesInside) else whole, FrameDrop(c.train_noise))
        masks = TrainingMasks(sampler, spec.modalities, seed, stream=7, dataset=train.dataset)

        def loss(model, batch, epoch):
            losses = model.losses(masks.draw(batch, epoch).batch, batch)
            return c.gamma * losses["reconstruction"] + c.sigma * losses["task"] + c.kl_weight * losses["variational"]

        self.model_ = model
        phase = Phase(loss=loss, sampler=Complete(), settings=protocol.settings(valid), param_groups=self.param_groups(model))
        self.phases_ = [self.train_phase(model, train, valid, phase, protocol=protocol, seed=seed, context=context)]
        return self
