"""Fitted methods back from disk: a model file (see :mod:`imsa.model_files`), or every
finished run of a run directory (:class:`RunModels`). ``imsa.load_method`` is
:func:`load_method`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import ConfigError, DataError
from ..methods import method_class
from ..model_files import read_model
from .store import RunLayout, load_record


@dataclass
class RunModels:
    """The fitted models of a run directory, each with its seed and fold (see :func:`imsa.load_method`)."""

    root: Path
    experiment: dict
    models: list  # (seed, fold, Method)

    @classmethod
    def load(cls, root: str | os.PathLike, *, device: str = "cpu") -> "RunModels":
        layout = RunLayout(root)
        if not layout.config.is_file():
            inside = sorted(str(c.parent.relative_to(layout.root)) for c in layout.root.glob("**/config.yaml")) if layout.root.is_dir() else []
            if inside:  # a grid store, or a folder of runs: name the run directories to choose from
                shown = ", ".join(inside[:8]) + (f" and {len(inside) - 8} more" if len(inside) > 8 else "")
                raise ConfigError(
                    f"{layout.root}: a folder of run directories, not one run directory; give one of them, e.g. {layout.root / inside[0]} (here: {shown})."
                )
            raise ConfigError(f"{layout.root}: not an imsa run directory (no config.yaml).")
        try:
            experiment = yaml.safe_load(layout.config.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{layout.config}: unreadable ({e}).") from None
        records = sorted((load_record(p) for p in (layout.root / "runs").glob("seed*-fold*.json")), key=lambda r: (r.seed, r.fold))
        if not records:
            raise ConfigError(f"{layout.root}: no finished run (runs/seedS-foldF.json) to load a model of.")
        return cls(layout.root, experiment, [(r.seed, r.fold, load_method(layout.model(r.key), device=device)) for r in records])

    def __len__(self) -> int:
        return len(self.models)


def load_method(path: str | os.PathLike, *, device: str = "cpu"):
    """The fitted method of a model file, or the fitted runs of a run directory.

    Parameters
    ----------
    path : path
        ``NAME.json`` / ``NAME.safetensors`` (or ``NAME``), a legacy ``NAME.pt``, or an
        ``imsa run`` directory.
    device : str
        Where the models go (``cpu``, ``cuda:N``, or ``auto``); any device can load a
        model trained on any other.

    Returns
    -------
    Method or RunModels
        A run directory gives a :class:`RunModels`: every finished seed x fold model
        with its seed and fold.
    """
    path = Path(path)
    if path.is_dir():
        return RunModels.load(path, device=device)
    state, provenance = read_model(path)
    try:
        method = method_class(state["method"])()
        method.load_state_dict(state)
    except ConfigError as e:
        raise DataError(f"{path}: {e}") from None
    except (KeyError, TypeError, RuntimeError) as e:
        raise DataError(f"{path}: the weights do not fit a {state['method']} model with this config ({type(e).__name__}: {str(e).splitlines()[0]}).") from None
    method.provenance_ = provenance
    return method.to(device)


def predict_media(path: str | os.PathLike, media: str | os.PathLike, *, transcript=None, modalities=None, device: str = "cpu"):
    """``imsa predict PATH --media MEDIA``: each segment of a new video or audio file predicted.

    ``path`` is a model file or run directory trained on a folder of ``imsa extract``;
    ``media`` is extracted with the same configuration, and a run directory's models are
    averaged. Returns the segments (times, presence flags, reasons) and the
    :class:`~imsa.predictions.Predictions` of those with a modality present (None if none).
    """
    from ..predictions import predict_media as predict

    return predict(fitted_models(load_method(path, device=device)), media, transcript=transcript, modalities=modalities, source=str(path))


def fitted_models(loaded) -> list:
    """``(seed, fold, Method)`` of each model of :func:`load_method`'s answer: a run
    directory's finished runs, or the one model of a model file."""
    if isinstance(loaded, RunModels):
        return loaded.models
    return [(loaded.provenance_.get("seed", ""), int(loaded.provenance_.get("fold", 0)), loaded)]
