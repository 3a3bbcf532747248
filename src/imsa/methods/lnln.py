"""LNLN (Zhang et al., NeurIPS 2024): language-dominated noise-resistant learning.

Each modality is summarised into ``tokens`` learned tokens (a prefix transformer over
its sequence). A *completeness check* predicts, from the language tokens alone, the
share ``w`` of the language that survived; a *proxy generator* builds a dominant feature
from the other modalities; the corrected dominant feature ``H_d = (1 - w) H_p + w H_l``
queries the auxiliary modalities at three depths (ALMT's hyper-modality learning) and a
cross transformer with ``H_d`` as target predicts. In training, a discriminator behind a
gradient reversal tells ``H_d`` from the tokens of the clean language, and reconstructors
map the noisy modality tokens to the clean ones. The training data is noised inside the
loss: per sample and modality, rate 0 with probability 1/2, else U(0, 1), frames dropped
at that rate (``train_noise="lnln"``). Spec: ``docs/methods/lnln.md``, from the project's
notes (github.com/Haoyu-ha/LNLN at 80a052c); blocks in :mod:`imsa.nn.almt`.

Decisions where the released code is silent or wrong (spec section 7):

* **Selection on validation only** (released: one checkpoint per metric, picked on the
  test split at rate 0.5), by the toolkit's ``select_metric`` averaged over the
  protocol's validation settings. Under the ``frames`` protocol one model is trained
  (its noise does not depend on the test rate), scored at every rate, and selected on
  the average over the rates (the spec's recommendation; the release selects at 0.5).
* **Training noise redrawn every batch** (released: at most once per epoch, and in
  practice almost never: spec 5.3), rate and frame pattern both, from the run's seeded
  generator, through :class:`~imsa.methods.phase.TrainingMasks` (stream 7); whole-modality
  masks (``train_missing``, or the random protocol's rate) come first, frame drops inside
  the present modalities second. Under the ``frames`` protocol LNLN's own noise replaces
  the protocol's ``frames:same`` (``train_noise="none"`` keeps the protocol's masks).
  Frame noise acts on sequence modalities; a vector modality (one vector per utterance)
  is never noised, and is read as a one-step sequence.
* **Gradient reversal as the paper places it** (released: on the main path, so the
  sentiment loss trains the proxy generator to *worsen* the prediction): ``H_p`` is
  computed once; the prediction uses ``(1 - w) H_p + w H_l``, the discriminator
  ``(1 - w) GRL(H_p) + w H_l`` (same values, reversed gradient into ``H_p`` only).
  ``grl_on_main_path=true`` reproduces the release.
* **Completeness label = 1 - the realised dropped share** of the droppable language
  steps (released: 1 - the nominal rate); 0 for an absent language. The nominal label is
  not offered.
* **Padding masked** in the modality encoders (released: padded frames are attended);
  ``padding_mask=false`` reproduces the release. Dropped frames are never masked: being
  blind to them is the point of the method.
* **Text**: by default the dataset's precomputed text features (zero vectors for
  dropped words), a different, cheaper protocol than the paper's (spec 5c).
  ``text_encoder=PATH`` (a local Hugging Face folder, ``minilm`` for all-MiniLM-L6-v2)
  is the paper's setting: the encoder is fine-tuned on the file's token ids
  (``Batch.tokens``, MMSA's ``text_bert``, which must come from the same tokenizer), a
  dropped word is the tokenizer's ``unk_token_id`` (never the literal 100), ``[CLS]``
  and ``[SEP]`` are never dropped, and a missing text is the empty transcript
  ``[CLS] [SEP]`` (spec 5a, b, d; ``missing_text="unk"`` is not offered). Its token
  states replace the 768-d features before the text's first Linear.
* **Missing modalities**: the toolkit's zeros, read as a sequence of zero frames of
  the real length; a missing modality's features are zeroed by ``present`` inside the
  model (the toolkit's guarantee that they are never read). With two modalities the
  proxy is built from the one auxiliary; one modality, or data without the dominant
  one, is refused.
* **Positional tables N(0, 1) as released** (``position_std=1``). Measured on the
  synthetic sequences of ``tests/test_lnln.py`` (features of unit scale, 12 steps): with
  them the completeness check never learns to see dropped words (mean ``w`` 1.0 at every
  rate after 60 epochs, 0.73 at every rate without the adversarial loss), since the
  tables swamp the difference between a word and a zero step; with ``position_std=0.02``
  (ViT's) mean ``w`` falls from 0.76 at rate 0 to 0.45 at 0.9 after 30 epochs. The default stays the
  release's; the option is there for data of that kind.
* **The paper's ablation** "w/o DMC & reconstructor" is ``beta=0, gamma=0,
  dominant_correction=false`` (``w = 1``: the language alone is the dominant feature).
  The spec expects it to be worse at high frame rates (9.10 d). On the small model and
  synthetic sequences of ``benchmarks/lnln_behaviour.py`` (8 draws, 30 epochs) it is not:
  the full model wins at rate 0.9 on 3 of 8 draws, ablation minus full MAE -0.004 ± 0.068,
  while the full model's MAE rises with the rate on 7 of 8 (9.10 b, tested).
* **As released**: no dropout; prefix tokens zero and ``H_p^0``/``H_hyper^0`` ones; the hyper layers add to the *normalised* hyper tokens;
  reconstruction targets are the clean tokens of the shared encoders, not detached
  (``detach_targets=true`` detaches them); MSE sentiment loss; AdamW lr 1e-4, decay
  1e-4 (the toolkit's groups: no decay on biases and norms, a 1e-8 relative
  difference per step); 200 epochs, no early stopping; warm-up over 20 epochs (the
  first at lr 0) then cosine (``lr_schedule="warmup_cosine:20"``). Classification
  (cross-entropy on a ``Linear(dim, C)`` head) is an extension: the release is
  regression only.
* **Work the release does and the result does not need is skipped** (same values, tested):
  with ``padding_mask`` the modality encoders run on groups of utterances of similar
  length, each cut to its longest, instead of the batch's padded width; the last layer of
  a prefix transformer computes only the positions that are read (the ``tokens`` prefix,
  the completeness token, the proxy's tokens); and a noisy training row whose features
  equal its clean row's reuses the clean row's encoder output (half of LNLN's training
  noise draws rate 0). On ``mosi-misa`` (mean length 11 of 44 steps) a training step
  costs about half as much.
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
from ..frames import FrameDrop, FramesInside, droppable, protected
from ..missing import Complete, make_sampler
from ..nn.almt import CrossTransformer, HyperModalityLayer, TokenTransformer
from ..nn.layers import reverse_gradient
from ..nn.text_encoder import TextEncoder
from ..protocols import Protocol
from ..training import RunContext
from .base import Method
from .common import prefix_tokens
from .phase import Phase, TrainingMasks, task_loss
from .registry import register_method
from .spec import DataSpec, Output, TrainConfig


@dataclass(frozen=True)
class LNLNConfig(TrainConfig):
    """LNLN defaults: the released CMU-MOSI settings (the LNLN spec, section 4.2).

    Attributes
    ----------
    dim, tokens : int
        Token width (128) and tokens per modality (8).
    heads, dim_head, mlp_dim : int
        Attention heads, their width, and the feed-forward width of every encoder layer.
    hyper_dim_head : int
        Head width of the hyper-modality layers (16).
    depth : int
        Layers of the modality encoders, completeness check, proxy generator and
        reconstructors (2).
    hyper_depth : int
        Hyper-modality layers (3); the language encoder has ``hyper_depth - 1`` layers.
    fusion_depth : int
        Cross-transformer layers (2 on CMU-MOSI, 4 on CMU-MOSEI and CH-SIMS).
    disc_hidden : int
        Hidden width of the discriminator.
    alpha, beta, gamma, sigma : float
        Weights of the completeness, adversarial, reconstruction and sentiment losses.
    grl_alpha : float
        Gradient-reversal scale.
    train_noise : {"lnln", "uniform", "none"}
        Frame noise of training batches: rate 0 w.p. 1/2 else U(0, 1) per sample and
        modality; U(0, 1); or none beyond the protocol's own masks.
    grl_on_main_path, detach_targets, padding_mask : bool
        See the module docstring.
    position_std : float
        Standard deviation of the positional tables' initialisation (released: 1).
    dominant_correction : bool
        Blend the proxy into the dominant feature by ``w``; False fixes ``w = 1`` (the
        dominant feature is the language alone: the paper's "w/o DMC" ablation).
    dominant : str
        The dominant modality (``l``).
    text_encoder : str
        ``""`` reads the precomputed text features; a local Hugging Face model folder, or
        ``minilm``, fine-tunes that encoder on the dataset's token ids (``text_bert``).
    """

    dim: int = 128
    tokens: int = 8
    heads: int = 8
    dim_head: int = 64
    mlp_dim: int = 128
    hyper_dim_head: int = 16
    depth: int = 2
    hyper_depth: int = 3
    fusion_depth: int = 2
    disc_hidden: int = 64
    alpha: float = 0.9
    beta: float = 0.8
    gamma: float = 0.1
    sigma: float = 1.0
    grl_alpha: float = 1.0
    train_noise: str = "lnln"
    grl_on_main_path: bool = False
    detach_targets: bool = False
    padding_mask: bool = True
    position_std: float = 1.0
    dominant_correction: bool = True
    dominant: str = "l"
    text_encoder: str = ""
    epochs: int = 200
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-4
    patience: int | None = None
    lr_schedule: str = "warmup_cosine:20"

    RENAMED: ClassVar[dict] = {"mask_padding": "padding_mask"}  # imsa 0.4's name
    DOMAINS: ClassVar[dict] = {
        **TrainConfig.DOMAINS,
        **{k: COUNT for k in ("dim", "tokens", "heads", "dim_head", "mlp_dim", "hyper_dim_head", "depth", "hyper_depth", "fusion_depth", "disc_hidden")},
        **{k: NON_NEGATIVE for k in ("alpha", "beta", "gamma", "sigma", "grl_alpha", "position_std")},
    }
    CHOICES: ClassVar[dict] = {"train_noise": ("lnln", "uniform", "none")}

    def __post_init__(self):
        super().__post_init__()
        if self.dim < 2:
            raise ConfigError(f"LNLN: dim={self.dim} must be at least 2 (the completeness head is dim / 2 wide).")


class LNLNNet(nn.Module):
    """The LNLN network for data of shape ``spec`` (the LNLN spec, section 3)."""

    def __init__(self, spec: DataSpec, cfg: LNLNConfig, text_encoder: nn.Module | None = None):
        super().__init__()
        d, k = cfg.dim, cfg.tokens
        self.modalities, self.dominant, self.task = spec.modalities, cfg.dominant, spec.task
        self.auxiliaries = tuple(m for m in spec.modalities if m != cfg.dominant)
        self.cfg = cfg
        block = dict(dim=d, heads=cfg.heads, dim_head=cfg.dim_head, mlp_dim=cfg.mlp_dim, position_std=cfg.position_std)
        self.text_encoder = text_encoder
        self.embed = nn.ModuleDict({m: nn.Linear(text_encoder.dim if m == TEXT and text_encoder is not None else spec.dims[m], d) for m in spec.modalities})
        self.encoders = nn.ModuleDict({m: TokenTransformer(spec.steps.get(m, 1), depth=cfg.depth, prefix=k, **block) for m in spec.modalities})
        self.completeness = TokenTransformer(k, depth=cfg.depth, prefix=1, **block)
        self.completeness_head = nn.Sequential(nn.Linear(d, d // 2), nn.LeakyReLU(0.1), nn.Linear(d // 2, 1), nn.Sigmoid())
        self.proxy = TokenTransformer(k * len(spec.modalities), depth=cfg.depth, prefix=k, **block)
        self.proxy_tokens = nn.Parameter(torch.ones(1, k, d))
        self.hyper_tokens = nn.Parameter(torch.ones(1, k, d))
        self.discriminator = nn.Sequential(nn.Linear(d, cfg.disc_hidden), nn.LeakyReLU(0.1), nn.Linear(cfg.disc_hidden, 2))
        self.reconstructors = nn.ModuleDict({m: TokenTransformer(k, depth=cfg.depth, **block) for m in (*self.auxiliaries, cfg.dominant)})
        self.language = TokenTransformer(k, depth=cfg.hyper_depth - 1, **block)
        self.hyper = nn.ModuleList(HyperModalityLayer(d, len(self.auxiliaries), cfg.heads, cfg.hyper_dim_head) for _ in range(cfg.hyper_depth))
        self.fusion = CrossTransformer(k, k, depth=cfg.fusion_depth, **block)
        self.head = nn.Linear(d, spec.output_dim)

    def modality_tokens(self, batch: Batch, like: tuple[Batch, dict[str, torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
        """``(B, tokens, dim)`` per modality (:func:`~imsa.methods.common.prefix_tokens`;
        ``like``: another batch of the same utterances and its tokens, reused where equal)."""
        return prefix_tokens(batch, self.encoders, self.embed, self.cfg.tokens, padding_mask=self.cfg.padding_mask, text_encoder=self.text_encoder, like=like)

    def run(self, batch: Batch, tokens: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Every intermediate that the prediction and the training losses need (``tokens``:
        the batch's :meth:`modality_tokens`, when already computed)."""
        tokens = self.modality_tokens(batch) if tokens is None else tokens
        language, auxiliaries = tokens[self.dominant], [tokens[m] for m in self.auxiliaries]
        n, k = language.shape[0], self.cfg.tokens
        w = self.completeness_head(self.completeness(language, keep=1)[:, 0])  # (B, 1)
        share = w[:, :, None] if self.cfg.dominant_correction else torch.ones_like(w)[:, :, None]
        proxy = self.proxy(torch.cat([self.proxy_tokens.expand(n, -1, -1), *auxiliaries], dim=1), keep=k)
        main_proxy = reverse_gradient(proxy, self.cfg.grl_alpha) if self.cfg.grl_on_main_path else proxy
        dominant = main_proxy * (1 - share) + language * share
        states = self.language(dominant, hidden=True)
        hyper = self.hyper_tokens.expand(n, -1, -1)
        for layer, state in zip(self.hyper, states):
            hyper = layer(state, auxiliaries, hyper)
        fused = self.fusion(hyper, states[-1])[:, 1:].mean(1)
        prediction = self.head(fused)
        if self.task == "regression":
            prediction = prediction.squeeze(-1)
        adversarial = dominant if self.cfg.grl_on_main_path else reverse_gradient(proxy, self.cfg.grl_alpha) * (1 - share) + language * share
        return {"prediction": prediction, "feature": fused, "w": w[:, 0], "tokens": tokens, "adversarial": adversarial}

    def forward(self, batch: Batch) -> Output:
        out = self.run(batch)
        return Output(out["prediction"], out["feature"])

    def losses(self, noisy: Batch, clean: Batch, completeness: torch.Tensor) -> dict[str, torch.Tensor]:
        """LNLN's four losses on a noisy batch, with the clean batch's tokens as targets."""
        clean_tokens = self.modality_tokens(clean)
        out = self.run(noisy, self.modality_tokens(noisy, like=(clean, clean_tokens)))
        order = (*self.auxiliaries, self.dominant)
        reconstructed = torch.cat([self.reconstructors[m](out["tokens"][m]) for m in order], dim=1)
        targets = torch.cat([clean_tokens[m] for m in order], dim=1)
        if self.cfg.detach_targets:
            targets = targets.detach()
        n, k = len(noisy), self.cfg.tokens
        logits = self.discriminator(torch.cat([out["adversarial"], clean_tokens[self.dominant]]).reshape(2 * n * k, -1))
        labels = torch.cat([torch.ones(n * k), torch.zeros(n * k)]).long().to(logits.device)  # 1: corrected feature, 0: clean language
        return {
            "task": task_loss(out["prediction"], noisy, self.task, "mse"),
            "completeness": F.mse_loss(out["w"], completeness),
            "adversarial": F.cross_entropy(logits, labels),
            "reconstruction": F.mse_loss(reconstructed, targets),
        }


def completeness_labels(batch: Batch, dataset, dominant: str) -> torch.Tensor:
    """Per utterance, the share of the dominant modality's droppable steps that were kept
    (1 where none can be dropped or no frame was dropped); 0 where the modality is absent."""
    present = batch.present[:, batch.modalities.index(dominant)].float()
    keep = (batch.frame_present or {}).get(dominant)
    if keep is None:
        return present
    rows = batch.index.clamp(min=0).cpu().numpy()
    can = torch.from_numpy(droppable(dataset.lengths[dominant][rows], keep.shape[-1], protected(dataset, dominant, rows))).to(keep.device)
    total = can.sum(1)
    kept = (can & keep).sum(1)
    share = torch.where(total > 0, kept.float() / total.clamp(min=1).float(), torch.ones_like(total, dtype=torch.float))
    return share * present


@register_method
class LNLN(Method):
    """LNLN: a completeness-weighted blend of language and a proxy built from the other modalities."""

    name = "lnln"
    Config = LNLNConfig
    default_threads = 2
    token_text = True
    tiny_config: ClassVar[dict] = {
        "dim": 16,
        "tokens": 2,
        "heads": 2,
        "dim_head": 8,
        "mlp_dim": 16,
        "hyper_dim_head": 4,
        "depth": 1,
        "hyper_depth": 2,
        "fusion_depth": 1,
        "disc_hidden": 8,
        "lr_schedule": "constant",
    }
    learning_config: ClassVar[dict] = {"train_noise": "none"}
    # trained by the adversarial and reconstruction losses only
    no_task_gradient: ClassVar[tuple[str, ...]] = ("discriminator", "reconstructors")

    @classmethod
    def own_frame_noise(cls, config) -> bool:
        """Whether this config trains under frame noise of its own (LNLN's ``train_noise``), so one model serves every test rate."""
        return config.train_noise != "none" or super().own_frame_noise(config)

    def build(self, spec: DataSpec) -> nn.Module:
        return LNLNNet(spec, self.config, TextEncoder.for_token_ids(self.config.text_encoder) if self.config.text_encoder else None)

    def data_spec(self, dataset):
        spec = super().data_spec(dataset)
        dominant = self.config.dominant
        if dominant not in spec.modalities or len(spec.modalities) < 2:
            raise ConfigError(
                f"{dataset.name}: LNLN builds a proxy of its dominant modality {dominant!r} from the others, so it needs {dominant!r} and at least one "
                f"more modality; the data has {', '.join(spec.modalities)} (set dominant=<modality> to choose another)."
            )
        return spec

    def check_data(self, dataset):
        super().check_data(dataset)
        longer = {m: t for m, t in DataSpec.of(dataset).steps.items() if t > self.spec_.steps.get(m, t)}
        if longer:
            raise DataError(f"{dataset.name}: sequences of {longer} steps, longer than the {self.spec_.steps} this lnln model's positional tables hold.")

    def fit(self, train, valid, *, protocol=None, seed=0, context=None):
        c = self.config
        protocol, context = protocol or Protocol(), context or RunContext()
        self.spec_ = spec = self.training_spec(train)
        torch.manual_seed(seed)
        model = self.build(spec)
        if c.train_noise == "none":
            sampler = protocol.training_sampler(make_sampler(c.train_missing))
        else:  # LNLN's own noise replaces the protocol's frames:same
            whole = make_sampler(c.train_missing) if protocol.kind == "frames" else protocol.training_sampler(make_sampler(c.train_missing))
            sampler = FramesInside(whole.modalities if isinstance(whole, FramesInside) else whole, FrameDrop(c.train_noise))
        masks = TrainingMasks(sampler, spec.modalities, seed, stream=7, dataset=train.dataset)

        def loss(model, batch, epoch):
            drawn = masks.draw(batch, epoch)
            losses = model.losses(drawn.batch, batch, completeness_labels(drawn.batch, train.dataset, c.dominant))
            return c.alpha * losses["completeness"] + c.beta * losses["adversarial"] + c.gamma * losses["reconstruction"] + c.sigma * losses["task"]

        self.model_ = model
        self.phases_ = [
            self.train_phase(
                model, train, valid, Phase(loss=loss, sampler=Complete(), settings=protocol.settings(valid)), protocol=protocol, seed=seed, context=context
            )
        ]
        return self
