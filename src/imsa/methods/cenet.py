"""CENET (Wang et al., IEEE TMM 2022, "Cross-Modal Enhancement Network for Multimodal
Sentiment Analysis"), as MMSA releases it (thuiar/MMSA, ``models/singleTask/CENET.py``,
``trains/singleTask/CENET.py``).

A BERT-style text encoder whose hidden states are enhanced by the non-verbal modalities
inside the encoder. Before layer ``injection_layer`` (1, the second layer, as released) a
cross-modal enhancement module rewrites the token states: each of video and audio goes
through Linear, ReLU, Linear to the text width; the token states query it in a one-head
attention (query, key and value Linears; scores ``q . k`` *multiplied* by 8, as released,
softmax over every step of the non-verbal sequence, padding included); the two attended
sequences, concatenated (video first), go through a Linear and are added to the token
states. The remaining layers read the enhanced states; a head reads the last layer's
``[CLS]`` state: dropout, Linear, tanh, dropout, Linear to the prediction. The word,
position and token-type embeddings are frozen (the released model computes them under
``torch.no_grad``); every encoder layer and the enhancement are fine-tuned. Loss: L1
(cross-entropy for classes). Spec and fidelity: ``docs/methods/cenet.md``.

The paper describes non-verbal "vocabularies" (features quantised into ids); the released
code takes ``visual_ids`` and ``acoustic_ids`` arguments but its trainer never passes them
and the module never reads them: the enhancement reads the continuous features. imsa
implements the released behaviour.

Fidelity, measured against MMSA's module (instantiated from the released file, with the
packaged MiniLM's weights in both and the released weights copied into this network) on
the same inputs at MOSI's unaligned widths (8 utterances of 50 word pieces, audio 5-d over
375 steps, video 20-d over 500), in evaluation mode: predictions (of order 0.1) differ by
at most 4.5e-8, the L1 loss not at all, the gradients of every fine-tuned tensor by 1.6e-7
(entries up to 0.5), and the weights after three steps of each side's Adam with the
released groups and clipping by 7.4e-7 (Adam's division by ``sqrt(v) + 3e-8`` turns
rounding-level gradient differences into step differences where gradients are near zero).
Parameters: 6,517,249 besides BERT at MOSI's widths (768/5/20), the released module's
count tensor for tensor; with the packaged MiniLM 24,201,985 against the released
24,355,201, and with BERT-base 115,408,897 against 116,010,241: the differences are the
pooler and the tag tables the released model builds and never reads (below).

Recipe (MMSA ``config_regression.json``, ``cenet``; ``trains/singleTask/CENET.py``), MOSI's
as the defaults: Adam with an L2 penalty at lr 1e-5 for every parameter, decay 1e-4 on
weight matrices and on every parameter of the enhancement module, none on the encoder's
and head's biases and LayerNorm weights, Adam's epsilon 3e-8; batches of 64; the gradient
norm of all parameters clipped to 2; early stopping after 8 epochs; L1 loss. The text:
``text_encoder=minilm`` (the default, the packaged all-MiniLM-L6-v2, 384-d) or a local
Hugging Face BERT folder (MMSA fine-tunes ``bert-base-uncased``; give a local copy with
``--set text_encoder=PATH``), read from the dataset's token ids (MMSA's ``text_bert``). A
complete-data model: it trains on complete data by default (``train_missing``) and is
scored with missing modalities zeroed; every protocol's masks apply.

Departures from the released code, and why:

* **MiniLM by default.** MMSA fine-tunes BERT-base (768-d, 12 layers); imsa fine-tunes the
  packaged MiniLM (384-d, 6 layers), which needs no download; the enhancement is as wide
  as the encoder. A BERT folder gives the released network.
* **Missing modalities** enter as zeros by the batch's ``present`` mask (imsa's rule: no
  method reads a missing modality's values): a missing audio or video is a zero sequence
  of the file's width (its transform then gives the same vector at every step, and the
  attention a constant shift); a missing text is the empty transcript ``[CLS] [SEP]`` and
  a dropped word the tokenizer's unknown token, as
  :meth:`imsa.nn.text_encoder.TextEncoder.token_states` reads them.
* **The unused parts are left out.** The released model builds part-of-speech, word
  sentiment and polarity embedding tables (3, 5 and 6 rows, ``14 * 768`` parameters) and
  BERT's pooler, and reads neither into the prediction; the classifier reads the
  ``[CLS]`` state itself. Neither is built here (the encoder's pooler is removed), so the
  count differs by exactly those parameters and nothing else.
* **Text with one non-verbal modality** works: each present one of video and audio has its
  own transform and attention, and the combining Linear reads their concatenation (the
  released module has exactly video and audio). Data without text is refused.
* ``injection_layer`` is a setting (released: fixed at 1); it must be below the encoder's
  layer count (the released loop never enhances with a one-layer encoder).
* ``text_encoder=''`` (an extension for data without token ids, such as the synthetic
  set): the dataset's text feature sequence takes the place of the token states, is
  enhanced as above and the head reads its first step; there is no transformer.
* **Selection** on the validation MAE over utterances (MMSA: the mean of batch means of the
  validation L1 loss, an improvement counted above 1e-6), at most ``epochs`` (100; MMSA has
  no cap).
* Classification is the released ``num_labels > 1`` branch (cross-entropy); MMSA's
  trainer never takes it (its loss is L1 on one output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..batch import TEXT, Batch
from ..config import NON_NEGATIVE, POSITIVE
from ..errors import ConfigError
from ..nn.text_encoder import TextEncoder
from ..text import UNKNOWN_TOKEN
from .common import SinglePhaseMethod
from .registry import register_method
from .spec import DataSpec, Output, TrainConfig

NONVERBAL = ("v", "a")  # the released concatenation: visual, then acoustic
SCORE_SCALE = 8.0  # the released attention multiplies its scores by 8 (not divides)
MASK_VALUE = -10000.0  # the released additive attention mask at padded word pieces
NO_DECAY = ("bias", "LayerNorm.weight")  # the released trainer's names without weight decay
FEATURE_DROPOUT, FEATURE_INIT_STD = 0.1, 0.02  # BERT's, for the head when there is no encoder


@dataclass(frozen=True)
class CENETConfig(TrainConfig):
    """CENET's defaults: MMSA's MOSI setting (MMSA's names in brackets).

    Attributes
    ----------
    lr, weight_decay : float
        Adam's rate for every parameter and its L2 penalty on weight matrices and the
        enhancement module (``learning_rate``, ``weight_decay``).
    adam_epsilon : float
        Adam's epsilon (3e-8 on MOSI, 1e-8 on MOSEI, 2e-8 on SIMS).
    grad_clip : float or None
        The global gradient norm (``max_grad_norm``).
    injection_layer : int
        The encoder layer whose input the enhancement rewrites (1, as released; 0: the
        embeddings).
    text_encoder : str
        ``minilm`` (the packaged all-MiniLM-L6-v2) or a local Hugging Face BERT folder,
        fine-tuned on the dataset's token ids; ``""`` enhances the precomputed text
        features instead (no transformer; see the module docstring).
    """

    lr: float = 1e-5
    weight_decay: float = 1e-4
    adam_epsilon: float = 3e-8
    batch_size: int = 64
    patience: int | None = 8
    grad_clip: float | None = 2.0
    injection_layer: int = 1
    text_encoder: str = "minilm"

    DOMAINS: ClassVar[dict] = {**TrainConfig.DOMAINS, "adam_epsilon": POSITIVE, "injection_layer": NON_NEGATIVE}


class CrossModalAttention(nn.Module):
    """The token states (queries) attend over one non-verbal sequence (keys, values): one
    head, scores multiplied by :data:`SCORE_SCALE`, every step attended."""

    def __init__(self, dim: int):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, text: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        scores = self.query(text) @ self.key(other).transpose(-1, -2)
        return torch.softmax(scores * SCORE_SCALE, dim=-1) @ self.value(other)


class CrossModalEnhancement(nn.Module):
    """Token states ``(B, T, dim)`` plus a shift read from the non-verbal sequences: per
    modality a two-layer transform to ``dim`` and an attention from the text; their outputs,
    concatenated in the order of ``dims``, through a Linear."""

    def __init__(self, dim: int, dims: dict[str, int]):
        super().__init__()
        self.transforms = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, dim), nn.ReLU(), nn.Linear(dim, dim)) for m, d in dims.items()})
        self.attentions = nn.ModuleDict({m: CrossModalAttention(dim) for m in dims})
        self.combine = nn.Linear(len(dims) * dim, dim)

    def forward(self, text: torch.Tensor, nonverbal: dict[str, torch.Tensor]) -> torch.Tensor:
        attended = [self.attentions[m](text, self.transforms[m](nonverbal[m])) for m in self.transforms]
        return self.combine(torch.cat(attended, dim=-1)) + text


class Head(nn.Module):
    """The released classification head on the first (``[CLS]``) state: dropout, Linear,
    tanh, dropout, Linear."""

    def __init__(self, dim: int, out_dim: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, out_dim)

    def forward(self, first: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(torch.tanh(self.dense(self.dropout(first)))))


def encoder_inputs(encoder: TextEncoder, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The token ids and attention mask ``encoder`` reads for ``batch``, prepared as
    :meth:`~imsa.nn.text_encoder.TextEncoder.token_states` prepares them (a dropped word is
    the unknown token, a missing text the empty transcript ``[CLS] [SEP]``); CENET runs the
    encoder's layers itself, so it cannot call that method."""
    tokens, attention, present = batch.tokens, batch.padding[TEXT], batch.present[:, batch.modalities.index(TEXT)]
    special = encoder.tokenizer
    ids = torch.where(tokens == UNKNOWN_TOKEN, torch.full_like(tokens, special.unk_token_id), tokens)
    empty = torch.full_like(ids, special.pad_token_id)
    empty[:, :2] = torch.tensor([special.cls_token_id, special.sep_token_id], device=ids.device)
    absent = ~present.reshape(-1, 1)
    ids = torch.where(absent, empty, ids)
    attention = torch.where(absent, torch.arange(ids.shape[1], device=ids.device)[None, :] < 2, attention)
    return ids, attention


class CENETNet(nn.Module):
    """The CENET network for data of shape ``spec``: text and one or both of video and audio.

    Parameters
    ----------
    spec : DataSpec
    cfg : CENETConfig
    text_encoder : TextEncoder, optional
        The BERT-style encoder to enhance (its pooler is removed and its embeddings frozen
        here); None enhances the precomputed text features.
    """

    def __init__(self, spec: DataSpec, cfg: CENETConfig, text_encoder: TextEncoder | None = None):
        super().__init__()
        self.modalities, self.task, self.injection_layer = spec.modalities, spec.task, cfg.injection_layer
        self.nonverbal = tuple(m for m in NONVERBAL if m in spec.modalities)
        self.text_model = text_encoder
        if text_encoder is not None:
            bert = text_encoder.model
            layers = len(bert.encoder.layer)
            if cfg.injection_layer >= layers:
                raise ConfigError(
                    f"injection_layer={cfg.injection_layer}, but {text_encoder.model_path} has {layers} layers; the enhancement rewrites the input of one of them (0 to {layers - 1})."
                )
            bert.pooler = None  # built by the released model, never read into its prediction
            bert.embeddings.requires_grad_(False)  # released: computed under torch.no_grad
            dim, dropout, std = text_encoder.dim, bert.config.hidden_dropout_prob, bert.config.initializer_range
        else:
            dim, dropout, std = spec.dims[TEXT], FEATURE_DROPOUT, FEATURE_INIT_STD
        self.enhancement = CrossModalEnhancement(dim, {m: spec.dims[m] for m in self.nonverbal})
        self.head = Head(dim, spec.output_dim, dropout)
        for module in [*self.enhancement.modules(), *self.head.modules()]:  # BERT's initialisation, as from_pretrained gives new modules
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                nn.init.zeros_(module.bias)

    def zeroed(self, batch: Batch, modality: str) -> torch.Tensor:
        """``modality``'s features, zero where the batch marks it missing."""
        present = batch.present[:, self.modalities.index(modality)]
        x = batch.inputs[modality]
        return x * present[:, None, None].to(x.dtype)

    def text_states(self, batch: Batch) -> torch.Tensor:
        """The last token states ``(B, T, dim)``, enhanced before layer ``injection_layer``."""
        nonverbal = {m: self.zeroed(batch, m) for m in self.nonverbal}
        if self.text_model is None:
            return self.enhancement(self.zeroed(batch, TEXT), nonverbal)
        ids, attention = encoder_inputs(self.text_model, batch)
        bert = self.text_model.model
        hidden = bert.embeddings(input_ids=ids)
        mask = (1.0 - attention[:, None, None, :].to(hidden.dtype)) * MASK_VALUE
        for i, layer in enumerate(bert.encoder.layer):
            if i == self.injection_layer:
                hidden = self.enhancement(hidden, nonverbal)
            out = layer(hidden, attention_mask=mask)
            hidden = out[0] if isinstance(out, tuple) else out  # transformers 4 returns a tuple, 5 the states
        return hidden

    def forward(self, batch: Batch) -> Output:
        first = self.text_states(batch)[:, 0]
        prediction = self.head(first)
        return Output(prediction.squeeze(-1) if self.task == "regression" else prediction, first)


@register_method
class CENET(SinglePhaseMethod):
    """CENET: a text encoder whose states are enhanced by video and audio inside it; a complete-data model."""

    name = "cenet"
    Config = CENETConfig
    inputs = "sequence"
    token_text = True
    default_threads = 1
    tiny_config: ClassVar[dict] = {"text_encoder": "", "lr": 1e-3}

    def data_spec(self, dataset):
        """The dataset's spec, refusing data without text and at least one of video and audio."""
        spec = super().data_spec(dataset)
        if TEXT not in spec.modalities or len(spec.modalities) < 2 or not set(spec.modalities) <= {TEXT, *NONVERBAL}:
            raise ConfigError(f"CENET enhances the text (l) with video and audio (v, a), one or both; {dataset.name} has {', '.join(spec.modalities)}.")
        return spec

    def build(self, spec: DataSpec) -> nn.Module:
        """The untrained :class:`CENETNet` for ``spec`` (loading the text encoder, if any)."""
        encoder = TextEncoder.for_token_ids(self.config.text_encoder) if self.config.text_encoder else None
        return CENETNet(spec, self.config, encoder)

    def param_groups(self, model: CENETNet) -> list[dict]:
        """The released groups, all at ``lr`` and ``adam_epsilon``: the enhancement module
        with decay; the other weights with decay; their biases and LayerNorm weights without.
        The frozen embeddings are in none."""
        c = self.config
        enhancement = {id(p) for p in model.enhancement.parameters()}
        rest = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in enhancement]
        groups = [
            {"params": [p for n, p in rest if not any(part in n for part in NO_DECAY)], "weight_decay": c.weight_decay},
            {"params": list(model.enhancement.parameters()), "weight_decay": c.weight_decay},
            {"params": [p for n, p in rest if any(part in n for part in NO_DECAY)], "weight_decay": 0.0},
        ]
        return [{**g, "lr": c.lr, "eps": c.adam_epsilon} for g in groups if g["params"]]

    def phase_options(self, model: CENETNet) -> dict:
        """Adam with an L2 penalty over :meth:`param_groups`, as released."""
        return {"optimizer": "adam", "param_groups": self.param_groups(model)}
