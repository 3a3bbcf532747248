"""Building blocks that method files share: pooled utterance vectors, per-modality
standardisation, the sub-network encodings of TFN and LMF, one model per fixed condition,
the single-phase recipe, and the MulT backbone of ``mult``, DiCMoR and IMDer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..batch import TEXT, Batch, tensor_cache
from ..config import COUNT, PROBABILITY
from ..data.dataset import Dataset, Subset
from ..errors import ConfigError
from ..missing import condition_index, fixed_conditions, make_sampler
from ..nn.layers import masked_mean
from ..nn.mult import MulTModel
from ..nn.text_encoder import TextEncoder
from ..protocols import Protocol
from ..training import RunContext
from .base import Method
from .phase import Phase, task_loss
from .spec import DataSpec, Output, TrainConfig

TEXT_NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")  # MMSA's trainers: text encoder parameters without decay


def text_model_groups(text_model: torch.nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """MMSA's two Adam groups of a fine-tuned text encoder, both at ``lr``: its weights with
    ``weight_decay``, its biases and LayerNorm weights without (Self-MM, TETFN, TFR-Net)."""
    named = list(text_model.named_parameters())
    return [
        {"params": [p for n, p in named if not any(part in n for part in TEXT_NO_DECAY)], "lr": lr, "weight_decay": weight_decay},
        {"params": [p for n, p in named if any(part in n for part in TEXT_NO_DECAY)], "lr": lr, "weight_decay": 0.0},
    ]


def pooled(batch: Batch, modality: str) -> torch.Tensor:
    """The modality's utterance vectors: time sequences are averaged over their valid steps."""
    x = batch.inputs[modality]
    if modality in batch.padding:
        return masked_mean(x, batch.padding[modality], dim=-2)
    return x


def text_vector(batch: Batch, text_model: torch.nn.Module | None, readout: str) -> torch.Tensor:
    """The text's utterance vector, zero where the batch marks the text missing: the states of
    a fine-tuned ``text_model`` (its token states) or the precomputed text features, read at
    the first step (``readout="first"``, BERT's ``[CLS]``; zero for an empty text) or
    averaged over the real steps (``"mean"``). Self-MM's and MMIM's text input."""
    present = batch.present[:, batch.modalities.index(TEXT)]
    if text_model is not None:
        states, mask = text_model.token_states(batch)
    else:
        states, mask = batch.inputs[TEXT] * present[:, None, None].to(batch.inputs[TEXT].dtype), batch.padding[TEXT]
    mask = mask.bool()
    text = states[:, 0] * mask[:, :1].to(states.dtype) if readout == "first" else masked_mean(states, mask, dim=1)
    return text * present[:, None].to(text.dtype)


def prefix_tokens(
    batch: Batch,
    encoders: torch.nn.ModuleDict,
    embed: torch.nn.ModuleDict,
    tokens: int,
    *,
    padding_mask: bool,
    text_encoder: torch.nn.Module | None = None,
    like: tuple[Batch, dict[str, torch.Tensor]] | None = None,
) -> dict[str, torch.Tensor]:
    """``(B, tokens, dim)`` per modality: the prefix tokens of its
    :class:`~imsa.nn.almt.TokenTransformer` over its embedded steps (ALMT's, LNLN's and
    P-RMF's encoders). A missing modality's features are zeroed here, so that they are never
    read; utterance vectors are one-step sequences; with ``padding_mask`` padded steps are
    hidden (and skipped: :meth:`~imsa.nn.almt.TokenTransformer.summarise`).

    ``like``: another batch of the same utterances and its tokens; a row whose features
    equal that batch's takes its tokens instead of being encoded again (an encoder reads
    one utterance at a time, so they are the same values)."""

    def features(source: Batch, m: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        present = source.present[:, source.modalities.index(m)]
        x = source.inputs[m] * present.reshape(-1, *([1] * (source.inputs[m].dim() - 1))).to(source.inputs[m].dtype)
        return (x[:, None], None) if x.dim() == 2 else (x, source.padding.get(m))

    def encode(m: str, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return encoders[m].summarise(x, mask if padding_mask else None, tokens, embed=embed[m])

    out = {}
    for m in encoders:
        if m == TEXT and text_encoder is not None:
            out[m] = encode(m, *text_encoder.token_states(batch))
            continue
        x, mask = features(batch, m)
        if like is None:
            out[m] = encode(m, x, mask)
            continue
        other, other_tokens = like
        changed = (x != features(other, m)[0]).flatten(1).any(1).nonzero()[:, 0]
        out[m] = other_tokens[m]
        if len(changed):
            out[m] = out[m].index_copy(0, changed, encode(m, x[changed], None if mask is None else mask[changed]))
    return out


def subnet_encoding(encoder: torch.nn.Module, batch: Batch, modality: str, index: int) -> torch.Tensor:
    """``modality``'s encoding by an MMSA fusion network's sub-network (TFN, LMF), from zeros
    where ``batch`` marks the modality missing (``index``: its column of ``batch.present``).

    Text goes to a :class:`~imsa.nn.subnets.TextSubNet` as a sequence over its real steps (an
    utterance vector as a one-step sequence); audio and video go to a
    :class:`~imsa.nn.subnets.SubNet` averaged over their real steps.
    """
    present = batch.present[..., index]
    everywhere = bool(present.all())  # then the inputs go in as they are, without a zeroing copy
    if modality != TEXT:
        vectors = pooled(batch, modality)
        return encoder(vectors if everywhere else vectors * present[:, None].to(vectors.dtype))
    text = batch.inputs[TEXT]
    if TEXT in batch.padding:
        mask = batch.padding[TEXT]
    else:  # an utterance vector: a one-step sequence
        text, mask = text.unsqueeze(1), torch.ones(text.shape[:1] + (1,), dtype=torch.bool, device=text.device)
    return encoder(text if everywhere else text * present[:, None, None].to(text.dtype), mask)


def fit_standardizers(norms: torch.nn.ModuleDict, train: Subset) -> None:
    """Fit each modality's :class:`~imsa.nn.layers.Standardize` on the training utterances."""
    batch = tensor_cache(train.dataset).gather(train.indices)
    for m, norm in norms.items():
        norm.fit(pooled(batch, m))


class PerCondition(torch.nn.Module):
    """One model per fixed condition (utterance level): each utterance goes to the model of
    its own ``present`` pattern (DiCMoR's per-condition recipe)."""

    def __init__(self, models: dict[str, torch.nn.Module], modalities: tuple[str, ...]):
        super().__init__()
        self.names = list(models)
        self.models = torch.nn.ModuleDict(models)
        self.conditions = [c.name for c in fixed_conditions(modalities)]
        self.lookup = {i: name for i, name in enumerate(self.conditions) if name in models}  # condition index -> model

    def forward(self, batch: Batch) -> Output:
        conditions = condition_index(batch.present.cpu().numpy())
        prediction = feature = None
        for index in np.unique(conditions):
            if int(index) not in self.lookup:
                raise ConfigError(f"No model was trained for condition {self.conditions[int(index)]}; trained: {', '.join(self.names)}.")
            rows = torch.from_numpy(np.flatnonzero(conditions == index)).to(batch.present.device)
            out = self.models[self.lookup[int(index)]](batch.select(rows))
            if prediction is None:
                prediction = out.prediction.new_zeros((len(batch),) + out.prediction.shape[1:])
                feature = None if out.feature is None else out.feature.new_zeros((len(batch),) + out.feature.shape[1:])
            prediction[rows] = out.prediction
            if feature is not None:
                feature[rows] = out.feature
        return Output(prediction, feature)


def check_aligned(dataset: Dataset, method: str, kernel: int) -> None:
    """Refuse sequences whose modalities differ in steps (a method that pairs step t of one
    modality with step t of another needs word-aligned data) or are shorter than ``kernel``."""
    modalities = dataset.modalities
    widths = {m: dataset.features[m].shape[1] for m in modalities}
    unequal = [m for m in modalities if not np.array_equal(dataset.lengths[m], dataset.lengths[modalities[0]])]
    if len(set(widths.values())) > 1 or unequal:
        what = (
            f"widths {widths}" if len(set(widths.values())) > 1 else f"the lengths of {', '.join(unequal)} differ from those of {modalities[0]} per utterance"
        )
        raise ConfigError(
            f"{dataset.name}: {method} pairs step t of one modality with step t of another, so every modality needs the same steps (word-aligned data such as MMSA aligned_50.pkl); here {what}."
        )
    if min(widths.values()) < kernel:
        raise ConfigError(f"{dataset.name}: {min(widths.values())} steps, fewer than conv_kernel={kernel}; lower conv_kernel.")


@dataclass(frozen=True)
class MulTBackboneConfig(TrainConfig):
    """The MulT backbone's keys, one set for ``mult``, DiCMoR and IMDer (the defaults are
    MulT's as IMDer releases it; a method overrides what its paper changes).

    Attributes
    ----------
    dim, heads, depth : int
        Width of every crossmodal stream, attention heads, crossmodal layers (the memory
        encoders have ``max(depth, 3)``).
    conv_kernel : int
        Kernel of the input projections (3 in IMDer, 5 in DiCMoR).
    attn_dropout, attn_dropout_a, attn_dropout_v : float
        Attention dropout of the blocks attending to text (and of the memories), to
        audio, to vision.
    relu_dropout, res_dropout, embed_dropout, output_dropout, text_dropout : float
    causal : bool
        The causal attention mask of the released code.
    padding_mask : bool
        Keep padded steps out of attention and read the last real step (off, as released).
    text_encoder : str
        ``""`` reads the precomputed text features; a local Hugging Face model folder, or
        ``minilm``, encodes the dataset's token ids (``text_bert``) with that encoder.
    """

    dim: int = 32
    heads: int = 8
    depth: int = 4
    conv_kernel: int = 3
    attn_dropout: float = 0.0
    attn_dropout_a: float = 0.2
    attn_dropout_v: float = 0.0
    relu_dropout: float = 0.0
    res_dropout: float = 0.0
    embed_dropout: float = 0.2
    output_dropout: float = 0.0
    text_dropout: float = 0.0
    causal: bool = True
    padding_mask: bool = False
    text_encoder: str = ""

    DOMAINS: ClassVar[dict] = {
        **TrainConfig.DOMAINS,
        **{k: COUNT for k in ("dim", "heads", "depth", "conv_kernel")},
        **{
            name: PROBABILITY
            for name in ("attn_dropout", "attn_dropout_a", "attn_dropout_v", "relu_dropout", "res_dropout", "embed_dropout", "output_dropout", "text_dropout")
        },
    }
    RENAMED: ClassVar[dict] = {"layers": "depth"}  # imsa 0.4 called it layers


class MulTBackbone(MulTModel):
    """The MulT model (projections, trunk, head) of a config with MulT's keys, predicting a
    :class:`Batch`: the ``mult`` baseline and the backbone of DiCMoR and IMDer.

    ``cfg`` is a :class:`MulTBackboneConfig`. A config with a ``text_encoder`` reads the
    text as that encoder's states of the batch's token ids.
    """

    def __init__(self, spec: DataSpec, cfg):
        encoder = TextEncoder.for_token_ids(cfg.text_encoder) if cfg.text_encoder else None
        super().__init__(
            spec.modalities,
            {**spec.dims, **({TEXT: encoder.dim} if encoder is not None else {})},
            spec.output_dim,
            spec.task,
            dim=cfg.dim,
            heads=cfg.heads,
            layers=cfg.depth,
            kernel=cfg.conv_kernel,
            attn_dropout=(cfg.attn_dropout, cfg.attn_dropout_a, cfg.attn_dropout_v),
            relu_dropout=cfg.relu_dropout,
            res_dropout=cfg.res_dropout,
            embed_dropout=cfg.embed_dropout,
            output_dropout=cfg.output_dropout,
            text_dropout=cfg.text_dropout,
            causal=cfg.causal,
            padding_mask=cfg.padding_mask,
        )
        self.text_encoder = encoder

    def inputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The sequences the projections read: the batch's features, the text encoded from its token ids where there is an encoder."""
        if self.text_encoder is None:
            return batch.inputs
        return {**batch.inputs, TEXT: self.text_encoder.token_states(batch)[0]}

    def forward(self, batch: Batch) -> Output:
        return Output(*super().forward(self.inputs(batch), batch.padding, batch.present))


class SinglePhaseMethod(Method):
    """A method trained in one phase on the task loss, with ``config.train_missing`` masks
    (the random protocol's rate under that protocol).

    The model's ``norms`` (per-modality :class:`~imsa.nn.layers.Standardize`), if it has
    them, are fitted on the training data first. A recipe with its own optimiser settings
    gives them in :meth:`phase_options`.
    """

    def phase_options(self, model: torch.nn.Module) -> dict:
        """Further :class:`~imsa.methods.phase.Phase` fields of the recipe for ``model`` (its
        optimiser, parameter groups); none by default."""
        return {}

    def fit(self, train, valid, *, protocol=None, seed=0, context=None):
        protocol, context = protocol or Protocol(), context or RunContext()
        torch.manual_seed(seed)
        self.spec_ = self.training_spec(train)
        model = self.build(self.spec_)
        if hasattr(model, "norms"):
            fit_standardizers(model.norms, train)
        self.model_ = model
        result = self.train_phase(
            model,
            train,
            valid,
            Phase(
                loss=lambda model, batch, epoch: task_loss(model(batch).prediction, batch, self.spec_.task),
                sampler=protocol.training_sampler(make_sampler(self.config.train_missing)),
                settings=protocol.settings(valid),
                **self.phase_options(model),
            ),
            protocol=protocol,
            seed=seed,
            context=context,
        )
        self.phases_ = [result]
        return self
