"""Resume checkpoints of a training phase: written atomically, read as plain tensors only,
and matched to the run by its identity (see :mod:`imsa.identity`), so an interrupted phase
continues exactly where it stopped and a checkpoint of another run is refused."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch

from .errors import ConfigError, DataError
from .files import atomic_torch_save, load_tensors_only
from .identity import META_KEY, canonical, check_schema, stamp

logger = logging.getLogger("imsa.training")


def save_checkpoint(path: Path, model, optimizer, extra_state, state: dict, fingerprint) -> None:
    """Write a phase's resume checkpoint atomically: weights, optimiser, extra state, torch's
    random state, the loop's state and the run's identity (``fingerprint``)."""
    atomic_torch_save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "extra": extra_state.state_dict() if extra_state is not None else None,
            "torch_rng": torch.get_rng_state(),
            "state": state,
            "fingerprint": fingerprint,
            META_KEY: stamp(),
        },
        path,
    )


def resume_checkpoint(path: Path, model, optimizer, extra_state, phase: str, fingerprint) -> dict:
    """Load a checkpoint of this very run into ``model``, ``optimizer`` and ``extra_state`` and
    return the loop's state; refuse, naming the file, one of another run or one that is not
    plain tensors (it is never unpickled beyond them)."""
    try:
        saved = load_tensors_only(path)
        check_schema(saved, path)
        mismatch = canonical(saved.get("fingerprint") or {}) != canonical(fingerprint or {})
        if not mismatch:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            if extra_state is not None and saved.get("extra") is not None:
                extra_state.load_state_dict(saved["extra"])
            torch.set_rng_state(saved["torch_rng"])
            state = saved["state"]
    except ConfigError:  # written under a newer schema
        raise
    except pickle.UnpicklingError:  # weights_only refused it: more than tensors and plain containers
        raise DataError(
            f"{path}: refused: not a plain tensor checkpoint, so it was not loaded (nothing in it ran); cannot resume phase {phase}. Delete it to start the phase afresh."
        ) from None
    except Exception as e:  # a checkpoint of another model or a damaged file
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise DataError(
            f"{path}: cannot resume phase {phase} from this checkpoint ({type(e).__name__}: {first}). Delete it to start the phase afresh."
        ) from None
    if mismatch:
        raise DataError(
            f"{path}: this checkpoint belongs to another run (different seed or config). Use another workdir, or delete it to start the phase afresh."
        )
    if state["finished"]:
        logger.info("%s: finished phase found in %s; restored it.", phase, path)
    else:
        logger.info("%s: resuming from epoch %d (%s).", phase, state["next_epoch"], path)
    return state
