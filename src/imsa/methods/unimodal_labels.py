"""The unimodal label generation module (ULGM) of Self-MM (Yu et al., AAAI 2021), which
TETFN (Wang et al., 2023) trains with unchanged, and the recipe parts the two share as MMSA
releases them: the multi-task loss on the generated labels and the five Adam groups."""

from __future__ import annotations

import torch
from torch import nn

from ..batch import Batch
from ..errors import ConfigError
from .common import text_model_groups

MIN = 1e-8  # the released ULGM's guard against division by zero
# Parameter-name parts of the released BERT groups without weight decay (matched as substrings).
NAMES = {"l": "text", "a": "audio", "v": "video"}


class UnimodalLabels:
    """ULGM: per training utterance, a label and a feature per task, and two centres per task.

    The stores are keyed by the utterance's index in the dataset (``Batch.index``), mapped
    to a row per training utterance, so a label follows its utterance whatever the batch.
    Tasks are ``fusion`` and the modalities; every label starts at the utterance's label, and
    the fused one never changes. Checkpointed with the phase (``state_dict``).

    Parameters
    ----------
    indices : tensor
        The training utterances' dataset indices.
    labels : tensor
        Their labels, in that order.
    widths : dict
        Feature width per task (``fusion`` and each modality).
    size : int
        The dataset's utterances (the index map's length).
    bound, exclude_zero
        ``H`` and ``excludeZero``.
    """

    def __init__(self, indices: torch.Tensor, labels: torch.Tensor, widths: dict[str, int], *, size: int, bound: float, exclude_zero: bool):
        device = labels.device
        self.bound, self.exclude_zero = float(bound), bool(exclude_zero)
        self.row = torch.full((size,), -1, dtype=torch.long, device=device)
        self.row[indices] = torch.arange(len(indices), device=device)
        self.labels = {task: labels.detach().float().clone() for task in widths}
        self.features = {task: torch.zeros(len(indices), width, device=device) for task, width in widths.items()}
        self.centres = {task: {"pos": torch.zeros(width, device=device), "neg": torch.zeros(width, device=device)} for task, width in widths.items()}

    @classmethod
    def for_training(cls, train, widths: dict[str, int], *, device, bound: float, exclude_zero: bool) -> "UnimodalLabels":
        """The store of a training subset, its labels as they are in the dataset."""
        indices = torch.as_tensor(train.indices, dtype=torch.long, device=device)
        labels = torch.as_tensor(train.dataset.labels, dtype=torch.float32, device=device)[indices]
        return cls(indices, labels, widths, size=len(train.dataset), bound=bound, exclude_zero=exclude_zero)

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """The store rows of a batch's utterances (all must be training utterances)."""
        rows = self.row[index]
        if (rows < 0).any():
            raise ConfigError("ULGM's label store holds the training utterances only; the batch has others.")
        return rows

    def weight(self, task: str, rows: torch.Tensor) -> torch.Tensor:
        """The unimodal loss weight ``tanh(|y_s - y_f|)`` of the rows."""
        return torch.tanh(torch.abs(self.labels[task][rows] - self.labels["fusion"][rows]))

    def _delta(self, task: str, feature: torch.Tensor) -> torch.Tensor:
        d_pos = torch.norm(feature - self.centres[task]["pos"], dim=-1)
        d_neg = torch.norm(feature - self.centres[task]["neg"], dim=-1)
        return (d_neg - d_pos) / (d_pos + MIN)

    def update(self, rows: torch.Tensor, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor], epoch: int) -> None:
        """After a training batch: new labels (from epoch 1 on, counted from 0) for the
        batch's utterances and present modalities, then their features, then every centre."""
        n = epoch + 1  # the released epoch counter starts at 1
        features = {task: f.detach().float() for task, f in features.items()}
        if n > 1:
            fused = self.labels["fusion"][rows]
            delta_f = self._delta("fusion", features["fusion"])
            for task, keep in present.items():
                delta_s = self._delta(task, features[task])
                alpha = delta_s / (delta_f + MIN)
                new = torch.clamp(0.5 * alpha * fused + 0.5 * (fused + delta_s - delta_f), min=-self.bound, max=self.bound)
                blended = (n - 1) / (n + 1) * self.labels[task][rows] + 2 / (n + 1) * new
                self.labels[task][rows[keep]] = blended[keep]
        self.features["fusion"][rows] = features["fusion"]
        for task, keep in present.items():
            self.features[task][rows[keep]] = features[task][keep]
        for task, labels in self.labels.items():
            for side, members in (("pos", labels > 0 if self.exclude_zero else labels >= 0), ("neg", labels < 0)):
                if members.any():
                    self.centres[task][side] = self.features[task][members].mean(dim=0)

    def state_dict(self) -> dict:
        return {"labels": dict(self.labels), "features": dict(self.features), "centres": {task: dict(c) for task, c in self.centres.items()}}

    def load_state_dict(self, state: dict) -> None:
        device = self.row.device  # a checkpoint is restored where the store lives
        self.labels = {task: t.to(device) for task, t in state["labels"].items()}
        self.features = {task: t.to(device) for task, t in state["features"].items()}
        self.centres = {task: {side: t.to(device) for side, t in c.items()} for task, c in state["centres"].items()}


def ulgm_loss(model: nn.Module, batch: Batch, epoch: int, store: UnimodalLabels) -> torch.Tensor:
    """The released multi-task loss of a training batch, then ULGM's update of the stores.

    ``model`` has ``modalities`` (the data's), ``unimodal`` (those with a head of their own)
    and ``run(batch)``, giving ``{"features": ..., "outputs": ...}`` keyed ``fusion`` and by
    modality. The loss is ``|M - y_f|`` plus, per modality ``s``,
    ``tanh(|y_s - y_f|) |S - y_s|`` (batch means), with the stored labels as they are
    before this batch. A modality that the batch's training mask removes from an utterance
    adds no loss there and is not updated.
    """
    run = model.run(batch)
    outputs = run["outputs"]
    rows = store.rows(batch.index)
    loss = torch.mean(torch.abs(outputs["fusion"].float() - store.labels["fusion"][rows]))
    present = {m: batch.present[:, model.modalities.index(m)] for m in model.unimodal}
    for m in model.unimodal:
        weight = store.weight(m, rows) * present[m].to(torch.float32)
        loss = loss + torch.mean(weight * torch.abs(outputs[m].float() - store.labels[m][rows]))
    with torch.no_grad():
        store.update(rows, run["features"], present, epoch)
    return loss


def released_param_groups(model: nn.Module, config) -> list[dict]:
    """MMSA's five Adam groups of Self-MM and TETFN: the text encoder's (``model.text_model``)
    weights and its biases and LayerNorm weights (no decay) at ``text_lr``, the audio and video
    sub-networks (``audio_model``, ``video_model``) at their own rates and decays, everything
    else at ``lr`` and ``weight_decay``; empty groups left out."""
    c = config
    groups = []
    if model.text_model is not None:
        groups += text_model_groups(model.text_model, c.text_lr, c.text_weight_decay)
    for m in ("a", "v"):
        if m in model.unimodal:
            params = list(getattr(model, f"{NAMES[m]}_model").parameters())
            groups.append({"params": params, "lr": getattr(c, f"{NAMES[m]}_lr"), "weight_decay": getattr(c, f"{NAMES[m]}_weight_decay")})
    own = {id(p) for g in groups for p in g["params"]}
    groups.append({"params": [p for p in model.parameters() if id(p) not in own], "lr": c.lr, "weight_decay": c.weight_decay})
    return [g for g in groups if g["params"]]
