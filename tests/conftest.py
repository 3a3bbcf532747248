"""Shared fixtures. Real data is read from ``../shared/datasets`` beside the project
(or ``$IMSA_DATA``); tests that need it skip with the reason when it is absent."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

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


@pytest.fixture
def gcnet_iemocap(tmp_path):
    """A GCNet IEMOCAP-4 folder: the 6-item label pickle (two speakers, F and M) and
    per-utterance text and audio vectors."""
    classes = 4
    root = tmp_path / "IEMOCAP"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    dialogues = [f"Ses0{s}{g}_impro0{d}" for s in range(1, 6) for g in "FM" for d in range(1, 3)]
    ids = {v: [f"{v}_F00{k}" for k in range(4)] for v in dialogues}
    labels = {v: [int(x) for x in rng.integers(0, classes, 4)] for v in dialogues}
    speakers = {v: ["F", "M", "F", "M"] for v in dialogues}
    sentences = {v: ["words"] * 4 for v in dialogues}
    table = [ids, labels, speakers, sentences, set(dialogues[:16]), set(dialogues[16:])]
    (root / f"IEMOCAP_features_raw_{classes}way.pkl").write_bytes(pickle.dumps(table, protocol=4))
    for folder, dim in (("deberta-large-4-UTT", 6), ("wav2vec-large-c-UTT", 5)):
        (root / "features" / folder).mkdir(parents=True)
        for v in dialogues:
            for uid in ids[v]:
                np.save(root / "features" / folder / f"{uid}.npy", rng.standard_normal(dim).astype(np.float32))
    return root
