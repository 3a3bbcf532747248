"""Shared fixtures. Real data is read from ``../shared/datasets`` beside the project
(or ``$IMSA_DATA``); tests that need it skip with the reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "datasets"

# Two threads everywhere: the CI machine has two cores, and fixed thread counts keep runs repeatable.
torch.set_num_threads(2)


@pytest.fixture(scope="session", autouse=True)
def private_user_cache(tmp_path_factory):
    """The user cache (verified-file records, text features) of the test session: never the real one."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("user-cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME")
    else:
        os.environ["XDG_CACHE_HOME"] = previous


def real_data_root() -> Path | None:
    root = Path(os.environ["IMSA_DATA"]) if os.environ.get("IMSA_DATA") else SHARED_DATA
    return root if (root / "cmu-mosi" / "bc-lstm").is_dir() else None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real-data root; skips the test when the CMU-MOSI files are not there."""
    root = real_data_root()
    if root is None:
        pytest.skip(f"real data not found: expected CMU-MOSI under {SHARED_DATA} or $IMSA_DATA")
    return root


@pytest.fixture(scope="session")
def mosi(data_root):
    from imsa.data.registry import load_dataset

    return load_dataset("mosi-bclstm", data_root)


@pytest.fixture(scope="session")
def synthetic():
    from imsa.data.registry import load_dataset

    return load_dataset("synthetic", num_videos=20, min_utterances=3, max_utterances=6, seed=0)


@pytest.fixture(scope="session")
def synthetic_la(synthetic):
    """``synthetic`` with text and audio only, for the two-modality paths."""
    from imsa.testing import text_and_audio

    return text_and_audio(synthetic)
