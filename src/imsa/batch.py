"""Batches: modality tensors, an explicit ``present`` mask, and padding masks.

Two levels:

* utterance level: one sample is an utterance; ``inputs[m]`` is ``(B, D)`` or ``(B, T, D)``.
* video level: one sample is a video or dialogue, a sequence of S utterances for
  context models; ``inputs[m]`` is ``(B, S, D)`` or ``(B, S, T, D)``, and
  ``utterance_mask`` ``(B, S)`` marks real utterances.

``present`` is ``(B, M)`` or ``(B, S, M)`` bool in the dataset's modality order. The
features of a missing modality are zeroed when the mask is applied, so a model can
neither see them nor has to guess absence from zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np
import torch

from .data.dataset import SOURCE_PRESENT, Dataset, Subset
from .text import TEXT, TEXT_TOKENS, UNKNOWN_TOKEN

LEVELS = ("utterance", "video")


def _blank(text, keep):
    """``text`` (a str, or a tuple of str per utterance) with ``""`` where ``keep`` is False."""
    if isinstance(text, str):
        return text if keep else ""
    return tuple(t if k else "" for t, k in zip(text, keep))


@dataclass
class Batch:
    """One batch of utterances or of videos.

    Attributes
    ----------
    inputs : dict of str to Tensor
        Features per modality; zero where the modality is missing.
    padding : dict of str to Tensor
        For sequence modalities, bool ``(B, [S,] T)``, True at real time steps.
    present : Tensor
        bool ``(B, [S,] M)``, True where a modality is available.
    labels : Tensor
        ``(B, [S])`` float (regression) or long (classification).
    index : Tensor
        ``(B, [S])`` dataset utterance index, -1 at padded utterances.
    modalities : tuple of str
    utterance_mask : Tensor or None
        bool ``(B, S)`` for video-level batches, None for utterance-level ones.
    texts : tuple or None
        The raw transcripts where the dataset has them, for models that encode text
        themselves: one str per utterance (utterance level) or one tuple of S str per
        video (video level). ``""`` where the text modality ``l`` is missing or padded.
    tokens : Tensor or None
        long ``(B, [S,] T)``: the token ids of the text steps where the dataset has them
        (annotation ``text_bert``), for models that fine-tune an encoder on them; the text's
        padding mask is their attention mask. :data:`UNKNOWN_TOKEN` at dropped words and at
        every step of a missing text.
    """

    inputs: dict[str, torch.Tensor]
    padding: dict[str, torch.Tensor]
    present: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor
    modalities: tuple[str, ...]
    utterance_mask: torch.Tensor | None = None
    texts: tuple | None = None
    speakers: torch.Tensor | None = None
    frame_present: dict | None = None
    tokens: torch.Tensor | None = None

    @property
    def level(self) -> str:
        return "utterance" if self.utterance_mask is None else "video"

    def __len__(self) -> int:
        return self.labels.shape[0]

    def with_present(self, present: torch.Tensor) -> "Batch":
        """A batch with ``present`` replaced and the features of missing modalities zeroed."""
        present = torch.as_tensor(present, dtype=torch.bool, device=self.labels.device)
        if self.utterance_mask is not None:
            present = present & self.utterance_mask.unsqueeze(-1)
        inputs = {}
        for k, m in enumerate(self.modalities):
            keep = present[..., k]
            x = self.inputs[m]
            inputs[m] = x * keep.reshape(keep.shape + (1,) * (x.dim() - keep.dim())).to(x.dtype)
        texts, tokens = self.texts, self.tokens
        if TEXT in self.modalities:
            keep = present[..., self.modalities.index(TEXT)]
            if texts is not None:
                texts = tuple(_blank(t, k) for t, k in zip(texts, keep.tolist()))
            if tokens is not None:
                tokens = torch.where(keep.unsqueeze(-1), tokens, torch.full_like(tokens, UNKNOWN_TOKEN))
        return replace(self, inputs=inputs, present=present, texts=texts, tokens=tokens)

    def with_frames(self, frames: dict[str, torch.Tensor]) -> "Batch":
        """A batch whose steps where ``frames[m]`` is False are zeroed (frame-level missing),
        and whose text tokens there are :data:`UNKNOWN_TOKEN`; padding masks and ``present``
        are unchanged."""
        inputs, tokens = dict(self.inputs), self.tokens
        for m, keep in frames.items():
            keep = torch.as_tensor(keep, dtype=torch.bool, device=self.labels.device)
            inputs[m] = inputs[m] * keep.unsqueeze(-1).to(inputs[m].dtype)
            if m == TEXT and tokens is not None:
                tokens = torch.where(keep, tokens, torch.full_like(tokens, UNKNOWN_TOKEN))
        return replace(
            self, inputs=inputs, tokens=tokens, frame_present={m: torch.as_tensor(k, dtype=torch.bool, device=self.labels.device) for m, k in frames.items()}
        )

    def map(self, fn) -> "Batch":
        """A batch with ``fn`` applied to every tensor (all share the batch axis first).

        ``fn`` must act on rows (repeat, select, move); texts follow the rows it picks.
        """
        texts = None
        if self.texts is not None:
            texts = tuple(self.texts[i] for i in fn(torch.arange(len(self), device=self.labels.device)).tolist())
        return Batch(
            inputs={m: fn(x) for m, x in self.inputs.items()},
            padding={m: fn(p) for m, p in self.padding.items()},
            present=fn(self.present),
            labels=fn(self.labels),
            index=fn(self.index),
            modalities=self.modalities,
            utterance_mask=None if self.utterance_mask is None else fn(self.utterance_mask),
            texts=texts,
            speakers=None if self.speakers is None else fn(self.speakers),
            frame_present=None if self.frame_present is None else {m: fn(x) for m, x in self.frame_present.items()},
            tokens=None if self.tokens is None else fn(self.tokens),
        )

    def repeat(self, times: int) -> "Batch":
        """The batch stacked ``times`` times along the batch axis (to score several masks in one pass)."""
        return self.map(lambda t: t.repeat((times,) + (1,) * (t.dim() - 1)))

    def select(self, rows: torch.Tensor) -> "Batch":
        """The samples ``rows`` of the batch."""
        return self.map(lambda t: t[rows])

    def to(self, device) -> "Batch":
        return self.map(lambda t: t.to(device))


class TensorCache:
    """The whole dataset as torch tensors on one device, so that a batch is a single gather there.

    Built once per dataset and device (datasets here fit in memory many times over; on a
    GPU this moves the data once, not once per batch).
    """

    def __init__(self, dataset: Dataset, device: torch.device | str = "cpu"):
        self.dataset = dataset
        self.device = torch.device(device)
        self.features = {m: torch.from_numpy(dataset.features[m]).to(self.device) for m in dataset.modalities}
        self.time_mask = {}
        for m in dataset.modalities:
            if dataset.is_sequence(m):
                steps = torch.arange(dataset.features[m].shape[1])
                self.time_mask[m] = (steps[None, :] < torch.as_tensor(dataset.lengths[m])[:, None]).to(self.device)
        dtype = torch.float32 if dataset.task == "regression" else torch.long  # class indices, or 0/1 per class
        self.labels = torch.as_tensor(dataset.labels, dtype=dtype).to(self.device)
        self.speakers = torch.from_numpy(dataset.speakers[0]).to(self.device)
        tokens = dataset.annotations.get(TEXT_TOKENS) if TEXT in dataset.modalities else None
        self.tokens = None if tokens is None else torch.as_tensor(np.asarray(tokens)[:, 0], dtype=torch.long).to(self.device)
        source = dataset.annotations.get(SOURCE_PRESENT)
        self.source_present = None if source is None else torch.as_tensor(np.asarray(source, dtype=bool)).to(self.device)

    def _texts(self, index: torch.Tensor) -> tuple | None:
        transcripts = self.dataset.transcripts
        if transcripts is None:
            return None
        if index.dim() == 1:
            return tuple(transcripts[i] for i in index.tolist())
        return tuple(tuple(transcripts[i] if i >= 0 else "" for i in row) for row in index.tolist())

    def gather(self, index: np.ndarray, present: np.ndarray | None = None) -> Batch:
        """Batch for ``index`` of shape ``(B,)`` (utterances) or ``(B, S)`` with -1 padding (videos)."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.device)
        real = index >= 0
        safe = index.clamp(min=0)
        labels = self.labels[safe]
        inputs = {m: x[safe] for m, x in self.features.items()}
        padding = {m: t[safe] for m, t in self.time_mask.items()}
        if index.dim() == 2:
            labels = torch.where(real, labels, torch.zeros((), dtype=labels.dtype))
            for m in inputs:
                inputs[m] = inputs[m] * real.reshape(real.shape + (1,) * (inputs[m].dim() - 2))
            for m in padding:
                padding[m] = padding[m] & real.unsqueeze(-1)
        num_modalities = len(self.dataset.modalities)
        full = torch.ones(index.shape + (num_modalities,), dtype=torch.bool, device=self.device)
        batch = Batch(
            inputs=inputs,
            padding=padding,
            present=full,
            labels=labels,
            index=torch.where(real, index, torch.full_like(index, -1)),
            modalities=self.dataset.modalities,
            utterance_mask=real if index.dim() == 2 else None,
            texts=self._texts(index),
            speakers=torch.where(real, self.speakers[safe], torch.zeros((), dtype=torch.long, device=self.device)),
            tokens=None if self.tokens is None else torch.where(real.unsqueeze(-1), self.tokens[safe], torch.full((), UNKNOWN_TOKEN, device=self.device)),
        )
        present = full if present is None else torch.as_tensor(present, dtype=torch.bool, device=self.device)
        if self.source_present is not None:  # what the media lacked stays missing whatever the protocol draws
            present = present & self.source_present[safe]
        return batch.with_present(present)


def tensor_cache(dataset: Dataset, device: torch.device | str = "cpu") -> TensorCache:
    """The :class:`TensorCache` of ``dataset`` on ``device``, built on first use and kept on the dataset."""
    device = torch.device(device)
    caches = dataset.__dict__.setdefault("_tensor_caches", {})
    if device not in caches:
        caches[device] = TensorCache(dataset, device)
    return caches[device]


def video_index_matrix(subset: Subset, videos: np.ndarray) -> np.ndarray:
    """``(B, S_max)`` utterance indices of the chosen videos of ``subset``, padded with -1."""
    groups = [subset.video_utterances[v] for v in videos]
    out = np.full((len(groups), max(len(g) for g in groups)), -1, dtype=np.int64)
    for row, g in enumerate(groups):
        out[row, : len(g)] = g
    return out


def iterate_batches(
    subset: Subset,
    batch_size: int,
    *,
    level: str = "utterance",
    shuffle: bool = False,
    rng: np.random.Generator | None = None,
    present=None,
    device: torch.device | str = "cpu",
) -> Iterator[Batch]:
    """Yield batches over ``subset``.

    Parameters
    ----------
    subset : Subset
    batch_size : int
        Utterances per batch (utterance level) or videos per batch (video level).
    level : {"utterance", "video"}
    shuffle : bool
        Shuffle with ``rng`` (required then), for training.
    present : None, ndarray, or sampler
        None: all modalities present. An ndarray ``(N_dataset, M)`` bool gives a fixed
        mask per dataset utterance (evaluation). An object with
        ``sample(n, modalities, rng)`` draws masks per batch (training).
    device : torch.device or str
        Where the batches are built (from the dataset's tensors there).
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    cache = tensor_cache(subset.dataset, device)
    units = len(subset.videos) if level == "video" else len(subset)
    order = rng.permutation(units) if shuffle else np.arange(units)
    for start in range(0, units, batch_size):
        chosen = order[start : start + batch_size]
        index = video_index_matrix(subset, chosen) if level == "video" else subset.indices[chosen]
        mask = None
        if isinstance(present, np.ndarray):
            mask = present[np.clip(index, 0, None)]
        elif present is not None:
            modalities = subset.dataset.modalities
            mask = present.sample(index.size, modalities, rng).reshape(index.shape + (len(modalities),))
        batch = cache.gather(index, mask)
        if hasattr(present, "sample_frames"):  # frame-level missing, redrawn every batch
            batch = batch.with_frames(draw_frames(present, batch, subset.dataset, rng))
        yield batch


def draw_frames(sampler, batch: Batch, dataset: Dataset, rng) -> dict[str, torch.Tensor]:
    """Training frame masks of ``batch`` from ``sampler.sample_frames`` over its droppable steps."""
    from .frames import droppable, protected

    index = batch.index.cpu().numpy()
    rows = np.clip(index, 0, None).reshape(-1)
    can_drop = {}
    for m, pad in batch.padding.items():
        width = pad.shape[-1]
        can = droppable(dataset.lengths[m][rows], width, protected(dataset, m, rows)) & (index.reshape(-1, 1) >= 0)
        can_drop[m] = can
    drawn = sampler.sample_frames(can_drop, rng)
    return {m: torch.from_numpy(keep.reshape(index.shape + (keep.shape[-1],))).to(batch.labels.device) for m, keep in drawn.items()}
