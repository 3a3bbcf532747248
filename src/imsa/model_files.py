"""Model files that cannot run code: safetensors weights plus a JSON document.

A fitted method is saved as two files side by side::

    NAME.safetensors   every tensor of the fitted model (weights, standardisation statistics)
    NAME.json          what rebuilds it: method name, resolved config, data spec (modalities,
                       dimensions, sequence or vector, task, output size), class names,
                       the method's other state (e.g. MoMKE's per-condition names), imsa
                       version, and provenance (dataset, family, data checksum, seed, fold)

Loading reads JSON and safetensors only: nothing is unpickled, so a crafted file cannot
execute code. Model files of imsa 0.1 (``.pt`` pickles of plain dicts and tensors) are
read with ``torch.load(weights_only=True)``, which refuses anything but tensors and plain
containers; a file that needs more is refused with one line naming it.

This module writes and reads the two files; :func:`imsa.load_method`
(:mod:`imsa.experiments.models`) turns them back into a fitted method.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from . import __version__
from .errors import DataError
from .files import atomic_write, atomic_write_text, load_tensors_only
from .identity import META_KEY, check_schema, stamp

logger = logging.getLogger(__name__)

FORMAT = "imsa-model"
FORMAT_VERSION = 1
WEIGHTS, DOCUMENT, LEGACY = ".safetensors", ".json", ".pt"


def model_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """The weights and document of a model named ``path`` (with or without a suffix)."""
    path = Path(path)
    base = path.with_suffix("") if path.suffix in (WEIGHTS, DOCUMENT, LEGACY) else path
    return base.with_name(base.name + WEIGHTS), base.with_name(base.name + DOCUMENT)


def save_model(state: dict, path: str | os.PathLike, **provenance) -> Path:
    """Write a fitted method's ``state_dict()`` as ``<path>.safetensors`` and ``<path>.json``; return the JSON path.

    ``provenance`` (dataset, family, data checksum, seed, fold, class names, ...) is
    stored in the document under ``"data"``.
    """
    weights, document = model_paths(path)
    # clone: safetensors refuses tensors that share storage (views, tied weights)
    tensors = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in state["model"].items()}
    extra = {k: v for k, v in state.items() if k not in ("method", "config", "spec", "model")}
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "imsa": __version__,
        META_KEY: stamp(),
        "method": state["method"],
        "config": state["config"],
        "spec": state["spec"],
        "state": extra,
        "data": provenance,
    }
    atomic_write(weights, lambda f: f.write(save_tensors(tensors)))
    atomic_write_text(document, json.dumps(doc, indent=2, allow_nan=True))  # last: a document means complete weights
    return document


def read_model(path: str | os.PathLike) -> tuple[dict, dict]:
    """The state (as ``Method.state_dict`` gives it) and provenance of a model file, never unpickled.

    Raises
    ------
    DataError
        If the files are missing, damaged, or a legacy pickle holds more than tensors.
    """
    path = Path(path)
    if path.suffix == LEGACY:
        return _read_legacy(path), {}
    weights, document = model_paths(path)
    if not document.is_file() or not weights.is_file():
        legacy = document.with_suffix(LEGACY)
        if legacy.is_file():
            return _read_legacy(legacy), {}
        missing = weights if document.is_file() else document
        raise DataError(f"{missing}: model file not found (a model is {weights.name} plus {document.name}).")
    try:
        doc = json.loads(document.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{document}: unreadable model document ({e}).") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataError(f'{document}: not an imsa model document (no "format": "{FORMAT}").')
    if doc.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{document}: model format version {doc.get('format_version')!r}; this imsa ({__version__}) reads version {FORMAT_VERSION}. Use a matching imsa version."
        )
    check_schema(doc, document)
    for key in ("method", "config", "spec"):
        if key not in doc:
            raise DataError(f"{document}: model document lacks {key!r}.")
    try:
        tensors = load_tensors(weights.read_bytes())
    except (OSError, SafetensorError, ValueError) as e:
        raise DataError(f"{weights}: damaged weights file ({e}). Retrain, or copy the model again.") from None
    state = {"method": doc["method"], "config": doc["config"], "spec": doc["spec"], "model": tensors, **(doc.get("state") or {})}
    return state, doc.get("data") or {}


def _read_legacy(path: Path) -> dict:
    """An imsa 0.1 ``.pt`` model: a pickle read with weights_only=True (tensors and plain containers only)."""
    try:
        state = load_tensors_only(path)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: refused: not a plain tensor file, so it was not loaded (nothing in it ran). Retrain the model ({first}).") from None
    if not isinstance(state, dict) or "model" not in state or "method" not in state:
        raise DataError(f"{path}: not an imsa model file.")
    logger.warning(
        "%s: a model file of imsa 0.1 (a pickle, read as tensors only); save it again as safetensors with imsa.load_method(path).save(new_path).", path
    )
    return state
