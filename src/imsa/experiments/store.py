"""The results store: where runs are kept, what a run file holds, and how runs are summarised.

One owner for what ``imsa run``, ``imsa grid run``, ``imsa show`` and ``imsa report`` share:

* the layout of a run directory (:class:`RunLayout`)::

      DIR/config.yaml               the resolved experiment
      DIR/runs/<key>.json           one :class:`RunRecord` per training run (key ``seedS-foldF``)
      DIR/models/<key>.safetensors  the fitted method, with models/<key>.json (see imsa.model_files)
      DIR/predictions/<key>.npz     its per-utterance predictions on valid and test, per setting
      DIR/checkpoints/<key>/        resume checkpoints while the run trains
      DIR/summary.json, summary.csv mean, std and n over runs per split, setting and metric

  A grid store holds one such directory per experiment, ``OUT/<dataset>/<method>/<protocol>/``;
* the typed run record, written last and atomically, so a run file means a finished run;
* the statistics over runs (:class:`Stats`: mean, sample std with ddof = 1, n) and the
  one cell format (``mean ± std``, a single run's value alone) of every table.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, did_you_mean
from ..files import atomic_write, atomic_write_text
from ..identity import META_KEY, check_schema, fingerprint
from ..methods.registry import METHODS
from ..protocols import Protocol

SPLITS = ("valid", "test")


def run_key(seed: int, fold: int) -> str:
    return f"seed{seed}-fold{fold}"


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run directory."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def summary_csv(self) -> Path:
        return self.root / "summary.csv"

    def record(self, key: str) -> Path:
        return self.root / "runs" / f"{key}.json"

    def model(self, key: str) -> Path:
        """The model's name: ``<name>.safetensors`` and ``<name>.json`` (``<name>.pt`` from imsa 0.1)."""
        return self.root / "models" / key

    def predictions(self, key: str) -> Path:
        return self.root / "predictions" / f"{key}.npz"

    def checkpoints(self, key: str) -> Path:
        return self.root / "checkpoints" / key

    def make(self) -> None:
        for sub in ("runs", "models", "predictions", "checkpoints"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)


@dataclass
class RunRecord:
    """What one training run did: the content of ``runs/<key>.json``.

    Attributes
    ----------
    method, dataset : str
    protocol : Protocol
    seed, fold : int
    metrics : dict
        ``metrics[split][setting][metric]`` for the splits ``valid`` and ``test``.
    task : str
    config, dataset_options : dict
        The resolved method config and the dataset loader's options.
    data_checksum : str
    selected_epochs : dict
        Phase -> epoch chosen on validation.
    select_metric : str
    phases : list of dict
        Per phase: selected epoch, score, per-epoch logs.
    sizes : dict
        Utterances per split.
    wall_time_s : float
    torch_threads : int
    execution : dict
        Where it computed: ``device``, ``device_name`` (GPU or CPU), ``torch``,
        ``cuda`` (None on a CPU build), ``precision``, ``deterministic``.
    versions : dict
    search : dict
        How the config was chosen: empty for defaults or a packaged file; for a config from
        ``imsa tune``, ``{"trials": N, "metric": ..., "study": DIR}`` (the search budget).
    """

    method: str
    dataset: str
    protocol: Protocol
    seed: int
    fold: int
    metrics: dict
    task: str = "regression"
    config: dict = field(default_factory=dict)
    dataset_options: dict = field(default_factory=dict)
    data_checksum: str = ""
    selected_epochs: dict = field(default_factory=dict)
    select_metric: str = ""
    phases: list = field(default_factory=list)
    sizes: dict = field(default_factory=dict)
    wall_time_s: float = 0.0
    torch_threads: int = 0
    execution: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    experiment: str = ""
    search: dict = field(default_factory=dict)
    frames_dropped: dict = field(default_factory=dict)  # frame-level missing: split -> setting -> realised share of droppable steps dropped

    @property
    def key(self) -> str:
        return run_key(self.seed, self.fold)

    @property
    def config_id(self) -> str:
        """A short id of what makes runs comparable in one table cell: config, data options, data."""
        identity = {"config": self.config, "dataset_options": self.dataset_options, "data_checksum": self.data_checksum, "mask_seed": self.protocol.mask_seed}
        return fingerprint(identity, METHODS[self.method].Config if self.method in METHODS else None)[:8]

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["protocol"] = self.protocol.to_dict()
        return data

    @classmethod
    def from_dict(cls, data, where: str) -> "RunRecord":
        """A record from a run file's content; ``where`` names the file in errors."""
        fix = "Delete it to train that run again."
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: not an imsa run file. {fix}")
        metrics = data.get("metrics")
        if not isinstance(metrics, dict) or not all(isinstance(metrics.get(s), dict) for s in SPLITS):
            raise ConfigError(f"{where}: not an imsa run file (no metrics on {' and '.join(SPLITS)}). {fix}")
        for key in ("method", "dataset", "protocol", "seed", "fold"):
            if key not in data:
                raise ConfigError(f"{where}: not an imsa run file (no {key!r}). {fix}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        try:
            values["protocol"] = Protocol(**data["protocol"])
        except (TypeError, ConfigError) as e:
            raise ConfigError(f"{where}: unreadable protocol {data['protocol']!r} ({e}). {fix}") from None
        if "task" not in data:  # run files from before the grid store: the task shows in the metric names
            first = next(iter(metrics["test"].values()), {})
            values["task"] = "regression" if "mae" in first else "multilabel" if "emotion_binary_acc" in first else "classification"
        return cls(**values)


def write_record(path: Path, record: RunRecord) -> None:
    atomic_write_text(path, json.dumps(record.to_dict(), indent=2, allow_nan=True))


def load_record(path: str | os.PathLike) -> RunRecord:
    """Read one run file, with an error that names the file when it cannot be read."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: unreadable run file ({e}). Delete it to train that run again.") from None
    if isinstance(data, dict):
        check_schema({META_KEY: data.get("versions")}, path)
    return RunRecord.from_dict(data, str(path))


# -- per-utterance predictions ------------------------------------------------------------------


def write_predictions(path: Path, predictions: dict[str, dict], utterance_ids: dict[str, list[str]], labels: dict[str, np.ndarray]) -> None:
    """A run's per-utterance predictions as one NPZ of plain arrays.

    Keys: ``<split>.ids`` (utterance ids), ``<split>.labels``, and ``<split>.<setting>``
    (predictions, or logits for classes, aligned with the ids) for split valid and test.
    """
    arrays = {}
    for split, settings in predictions.items():
        arrays[f"{split}.ids"] = np.asarray(utterance_ids[split], dtype=str)
        arrays[f"{split}.labels"] = np.asarray(labels[split])
        for setting, values in settings.items():
            arrays[f"{split}.{setting}"] = np.asarray(values)
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def read_predictions(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """``{split: {"ids": ..., "labels": ..., setting: predictions}}`` from :func:`write_predictions`'s file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            out: dict = {}
            for key in archive.files:
                split, _, name = key.partition(".")
                out.setdefault(split, {})[name] = archive[key]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ConfigError(f"{path}: unreadable predictions file ({e}).") from None
    return out


# -- statistics and cells ---------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """Mean, sample standard deviation (ddof = 1; 0 for one value) and count of the finite values."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values) -> "Stats":
        array = np.asarray(list(values), dtype=float)
        finite = array[np.isfinite(array)]
        if len(finite) == 0:
            return cls(math.nan, math.nan, 0)
        return cls(float(finite.mean()), float(finite.std(ddof=1)) if len(finite) > 1 else 0.0, int(len(finite)))

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n}


def format_cell(stats: Stats | dict | None, digits: int = 3, plus_minus: str = " ± ") -> str:
    """``mean ± std``; a single run's value alone (a std of one value says nothing); ``–`` for none."""
    if isinstance(stats, dict):
        stats = Stats(stats["mean"], stats["std"], stats["n"])
    if stats is None or not stats.n:
        return "–"
    if stats.n == 1:
        return f"{stats.mean:.{digits}f}"
    return f"{stats.mean:.{digits}f}{plus_minus}{stats.std:.{digits}f}"


def summarize(records: list[RunRecord]) -> dict:
    """Statistics over runs: ``summary[split][setting][metric] == {"mean", "std", "n"}``, plus ``runs``."""
    summary: dict = {}
    for split in SPLITS:
        table: dict = {}
        for record in records:
            for setting, values in record.metrics[split].items():
                for metric, value in values.items():
                    table.setdefault(setting, {}).setdefault(metric, []).append(value)
        summary[split] = {setting: {metric: Stats.of(values).to_dict() for metric, values in metrics.items()} for setting, metrics in table.items()}
    summary["runs"] = len(records)
    return summary


def write_summary(layout: RunLayout, summary: dict) -> None:
    """``summary.json`` and ``summary.csv`` (one row per split, setting and metric)."""
    atomic_write_text(layout.summary, json.dumps(summary, indent=2, allow_nan=True))
    lines = ["split,setting,metric,mean,std,n"]
    for split in SPLITS:
        for setting, metrics in summary[split].items():
            for metric, s in metrics.items():
                lines.append(f'{split},"{setting}",{metric},{s["mean"]:.6f},{s["std"]:.6f},{s["n"]}')
    atomic_write_text(layout.summary_csv, "\n".join(lines) + "\n")


def read_summary(directory: str | os.PathLike) -> dict:
    """The summary of a finished run directory, with one clear error where there is none."""
    path = RunLayout(directory).summary
    if not path.is_file():
        raise ConfigError(f"{path} not found: {directory} is not a finished imsa run directory.")
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: unreadable summary ({e}). Run the same `imsa run` again to rewrite it.") from None
    if not isinstance(summary, dict) or not all(isinstance(summary.get(s), dict) and summary[s] for s in SPLITS):
        raise ConfigError(f"{path}: not an imsa summary. Run the same `imsa run` again to rewrite it.")
    return summary


def format_table(summary: dict, split: str = "test", metrics=None, digits: int = 3, markdown: bool = False) -> str:
    """A table with one row per setting and ``mean ± std`` per metric (plain text or Markdown)."""
    rows = summary[split]
    metrics = metrics or list(next(iter(rows.values())).keys())
    for metric in metrics:
        if not any(metric in values for values in rows.values()):
            available = sorted({m for values in rows.values() for m in values})
            raise ConfigError(f"No metric {metric!r} in this summary.{did_you_mean(metric, available)} Available: {', '.join(available)}.")
    header = ["setting"] + list(metrics)
    body = [[setting] + [format_cell(rows[setting].get(m), digits) for m in metrics] for setting in rows]
    if markdown:
        return "\n".join("| " + " | ".join(r) + " |" for r in [header, ["---"] * len(header)] + body)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in body])
