"""ALMT (Zhang et al., EMNLP 2023): language-guided adaptive hyper-modality learning, as the
authors release it (github.com/Haoyu-ha/ALMT at da94610; MMSA's copy, thuiar/MMSA at
a94e65d, ``models/singleTask/ALMT.py``, differs only where said below).

Each modality's sequence goes through a Linear to ``dim`` and a prefix transformer (``tokens``
learned tokens, zeros, prepended; a learned positional table; ``depth`` pre-norm layers whose
attention normalises query, key and value with three LayerNorms) whose first ``tokens``
outputs summarise it. The language tokens pass through ``hyper_depth - 1`` more layers
(positional table, no prefix); the input and every layer's output guide one adaptive
hyper-modality layer each: the language queries the audio and the video in separate
attentions, their sum is projected and added to the *normalised* hyper-modality tokens
(``tokens`` × ``dim`` ones at the start). A cross transformer (one shared learned token and a
positional table on each side) updates the last language tokens from the hyper-modality
tokens; its first output, the token, is the fused feature and a Linear predicts. Loss: MSE
(cross-entropy on a ``Linear(dim, C)`` head for classes, an extension). Blocks in
:mod:`imsa.nn.almt`. Spec and fidelity: ``docs/methods/almt.md``.

Recipe (``configs/mosi.yaml``, ``train.py``, ``core/scheduler.py``), MOSI's as the defaults:
AdamW at lr 1e-4 and weight decay 1e-4, batches of 64, 200 epochs, a linear warm-up over
the first 20 (the first at lr 0) then cosine to 0 (``lr_schedule="warmup_cosine:20"``), no
dropout, no gradient clipping, width 128, 8 tokens, one layer per modality encoder, three
hyper-modality layers (heads 8 of width 16), fusion depth 2 (4 on MOSEI and SIMS), every
other attention 8 heads of width 64 and feed-forward 128. The text: ``text_encoder=''``
(the default) reads the dataset's precomputed text features in place of BERT's token
states; ``text_encoder=minilm`` (the packaged all-MiniLM-L6-v2) or a local Hugging Face
folder fine-tunes that encoder on the file's token ids (MMSA's ``text_bert``), at the
same rate as the rest, as the release fine-tunes BERT. A complete-data model: it trains on
complete data by default (``train_missing``) and is scored with missing modalities zeroed;
every protocol's masks apply.

Departures from the released code, and why:

* **Selection on validation only.** The authors' ``train.py`` trains 200 epochs and
  reports, per metric, the best *test* value over the epochs (``results_recorder``); no
  checkpoint is picked on validation. imsa keeps the epoch with the best validation
  score (``select_metric``, MAE for regression), averaged over the protocol's validation
  settings. MMSA's trainer selects on validation too, with early stopping after 32
  epochs without improvement; the authors' recipe (no early stopping) is the default.
* **Padding masked** in the modality encoders (released: the prefix tokens attend every
  padded step, zeros from the file, and BERT's states at padded word pieces):
  ``padding_mask=false`` reproduces the release. Masked, a prediction does not depend on
  the file's padded width nor on the other utterances of a batch.
* **Missing modalities**: a missing modality's features are zeroed by the batch's
  ``present`` mask inside the model (imsa's rule: no method reads a missing modality's
  values) and read as a sequence of zero steps of the real length. With a text encoder a
  missing text is the empty transcript ``[CLS] [SEP]`` and a dropped word the tokenizer's
  unknown token (:meth:`imsa.nn.text_encoder.TextEncoder.token_states`, as LNLN). A vector
  modality (one vector per utterance) is read as a one-step sequence.
* **Any number of auxiliary modalities**: the hyper-modality layer attends from the
  language to each auxiliary with its own keys and values (released: exactly audio and
  video), so text with one other modality works; the language alone is refused.
  ``dominant`` names the guiding modality (released: the language).
* **The text's first Linear** is as wide as the text features or the encoder's states
  (released: BERT's 768), so any text input fits.
* **Weight decay** skips biases, norms and other one-dimensional weights (imsa's AdamW
  groups; released: every parameter): a relative difference of ``lr * weight_decay`` =
  1e-8 per step on those weights.
* **Work the release does and the result does not need is skipped** (same values,
  tested): the last layer of a prefix transformer computes only the ``tokens`` positions
  that are read, and with ``padding_mask`` the encoders run on groups of utterances of
  similar length, each cut to its longest (:meth:`imsa.nn.almt.TokenTransformer.summarise`).

MMSA's copy is the same network (its hyper-modality head width ``dim / heads`` = 16 is
the authors'), with early stopping (``early_stop`` 32) and a ``max_grad_norm`` of 2 that
its trainer never applies; where the two differ the authors' repository is followed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..batch import TEXT, Batch
from ..config import COUNT, NON_NEGATIVE
from ..errors import ConfigError, DataError
from ..missing import make_sampler
from ..nn.almt import CrossTransformer, HyperModalityLayer, TokenTransformer
from ..nn.text_encoder import TextEncoder
from ..protocols import Protocol
from ..training import RunContext
from .base import Method
from .common import prefix_tokens
from .phase import Phase, task_loss
from .registry import register_method
from .spec import DataSpec, Output, TrainConfig


@dataclass(frozen=True)
class ALMTConfig(TrainConfig):
    """ALMT defaults: the released CMU-MOSI settings (``configs/mosi.yaml``).

    Attributes
    ----------
    dim, tokens : int
        Token width (128) and tokens per modality (8).
    heads, dim_head, mlp_dim : int
        Attention heads (8), their width (64, the release's default) and the feed-forward
        width (128) of every encoder, language and fusion layer.
    hyper_dim_head : int
        Head width of the hyper-modality layers (16; they have ``heads`` heads).
    depth : int
        Layers of each modality's prefix transformer (the release's ``proj_depth``, 1).
    hyper_depth : int
        Hyper-modality layers (the release's ``AHL_depth``, 3); the language encoder has
        ``hyper_depth - 1`` layers.
    fusion_depth : int
        Cross-transformer layers (2 on CMU-MOSI, 4 on CMU-MOSEI and CH-SIMS).
    padding_mask : bool
        Mask padded steps in the modality encoders (released: attended; see the module
        docstring).
    position_std : float
        Standard deviation of the positional tables' initialisation (released: 1).
    dominant : str
        The modality that guides the hyper-modality layers (``l``).
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
    depth: int = 1
    hyper_depth: int = 3
    fusion_depth: int = 2
    padding_mask: bool = True
    position_std: float = 1.0
    dominant: str = "l"
    text_encoder: str = ""
    epochs: int = 200
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-4
    patience: int | None = None
    lr_schedule: str = "warmup_cosine:20"

    DOMAINS: ClassVar[dict] = {
        **TrainConfig.DOMAINS,
        **{k: COUNT for k in ("dim", "tokens", "heads", "dim_head", "mlp_dim", "hyper_dim_head", "depth", "hyper_depth", "fusion_depth")},
        "position_std": NON_NEGATIVE,
    }


class ALMTNet(nn.Module):
    """The ALMT network for data of shape ``spec``: the dominant modality and one or more auxiliaries."""

    def __init__(self, spec: DataSpec, cfg: ALMTConfig, text_encoder: nn.Module | None = None):
        super().__init__()
        d, k = cfg.dim, cfg.tokens
        self.modalities, self.dominant, self.task, self.cfg = spec.modalities, cfg.dominant, spec.task, cfg
        self.auxiliaries = tuple(m for m in spec.modalities if m != cfg.dominant)
        block = dict(dim=d, heads=cfg.heads, dim_head=cfg.dim_head, mlp_dim=cfg.mlp_dim, position_std=cfg.position_std)
        self.text_encoder = text_encoder
        self.embed = nn.ModuleDict({m: nn.Linear(text_encoder.dim if m == TEXT and text_encoder is not None else spec.dims[m], d) for m in spec.modalities})
        self.encoders = nn.ModuleDict({m: TokenTransformer(spec.steps.get(m, 1), depth=cfg.depth, prefix=k, **block) for m in spec.modalities})
        self.hyper_tokens = nn.Parameter(torch.ones(1, k, d))
        self.language = TokenTransformer(k, depth=cfg.hyper_depth - 1, **block)
        self.hyper = nn.ModuleList(HyperModalityLayer(d, len(self.auxiliaries), cfg.heads, cfg.hyper_dim_head) for _ in range(cfg.hyper_depth))
        self.fusion = CrossTransformer(k, k, depth=cfg.fusion_depth, **block)
        self.head = nn.Linear(d, spec.output_dim)

    def modality_tokens(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``(B, tokens, dim)`` per modality: the first outputs of its prefix transformer
        (:func:`~imsa.methods.common.prefix_tokens`)."""
        return prefix_tokens(batch, self.encoders, self.embed, self.cfg.tokens, padding_mask=self.cfg.padding_mask, text_encoder=self.text_encoder)

    def run(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The prediction and the fused feature (the cross transformer's token)."""
        tokens = self.modality_tokens(batch)
        states = self.language(tokens[self.dominant], hidden=True)
        auxiliaries = [tokens[m] for m in self.auxiliaries]
        hyper = self.hyper_tokens.expand(len(batch), -1, -1)
        for layer, state in zip(self.hyper, states):
            hyper = layer(state, auxiliaries, hyper)
        fused = self.fusion(hyper, states[-1])[:, 0]
        prediction = self.head(fused)
        if self.task == "regression":
            prediction = prediction.squeeze(-1)
        return {"prediction": prediction, "feature": fused}

    def forward(self, batch: Batch) -> Output:
        out = self.run(batch)
        return Output(out["prediction"], out["feature"])


@register_method
class ALMT(Method):
    """ALMT: language-guided hyper-modality tokens fused with the language; a complete-data model."""

    name = "almt"
    Config = ALMTConfig
    token_text = True
    tiny_config: ClassVar[dict] = {
        "dim": 16,
        "tokens": 2,
        "heads": 2,
        "dim_head": 8,
        "mlp_dim": 16,
        "hyper_dim_head": 4,
        "hyper_depth": 2,
        "fusion_depth": 1,
        "lr_schedule": "constant",
    }

    def build(self, spec: DataSpec) -> nn.Module:
        """The untrained :class:`ALMTNet` for ``spec``."""
        return ALMTNet(spec, self.config, TextEncoder.for_token_ids(self.config.text_encoder) if self.config.text_encoder and TEXT in spec.modalities else None)

    def data_spec(self, dataset):
        """The spec of the training data, refusing data without the dominant modality and another."""
        spec = super().data_spec(dataset)
        dominant = self.config.dominant
        if dominant not in spec.modalities or len(spec.modalities) < 2:
            raise ConfigError(
                f"{dataset.name}: ALMT's modality {dominant!r} guides the hyper-modality tokens over the others, so it needs {dominant!r} and at least one "
                f"more modality; the data has {', '.join(spec.modalities)} (set dominant=<modality> to choose another)."
            )
        return spec

    def check_data(self, dataset):
        """Refuse sequences longer than the positional tables of the trained model."""
        super().check_data(dataset)
        longer = {m: t for m, t in DataSpec.of(dataset).steps.items() if t > self.spec_.steps.get(m, t)}
        if longer:
            raise DataError(f"{dataset.name}: sequences of {longer} steps, longer than the {self.spec_.steps} this almt model's positional tables hold.")

    def fit(self, train, valid, *, protocol=None, seed=0, context=None):
        protocol, context = protocol or Protocol(), context or RunContext()
        torch.manual_seed(seed)
        self.spec_ = self.training_spec(train)
        model = self.build(self.spec_)
        self.model_ = model
        phase = Phase(
            loss=lambda model, batch, epoch: task_loss(model(batch).prediction, batch, self.spec_.task, regression_loss="mse"),
            sampler=protocol.training_sampler(make_sampler(self.config.train_missing)),
            settings=protocol.settings(valid),
        )
        self.phases_ = [self.train_phase(model, train, valid, phase, protocol=protocol, seed=seed, context=context)]
        return self
