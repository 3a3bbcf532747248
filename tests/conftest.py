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

# Fixed thread counts keep runs repeatable: two threads (the CI machine has two cores), or one
# per pytest-xdist worker, so that the workers do not compete for the cores.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


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


# Every skip for lack of real data starts with this, so the summary line can count them.
NO_REAL_DATA = "real data not found"


def real_data_candidate() -> Path:
    """Where the real data is looked for: ``$IMSA_DATA``, else ``../shared/datasets`` beside the project."""
    return Path(os.environ["IMSA_DATA"]).expanduser() if os.environ.get("IMSA_DATA") else SHARED_DATA


def real_data_root() -> Path | None:
    root = real_data_candidate()
    return root if (root / "cmu-mosi" / "bc-lstm").is_dir() else None


def skip_without_real_data(what: str) -> None:
    pytest.skip(
        f"{NO_REAL_DATA}: {what} is not under {real_data_candidate()}; set IMSA_DATA to a folder laid out like "
        f"../shared/datasets (or put that folder beside the repository) to run this test"
    )


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real-data root; skips the test when the CMU-MOSI files are not there."""
    root = real_data_root()
    if root is None:
        skip_without_real_data("CMU-MOSI (cmu-mosi/bc-lstm)")
    return root


def pytest_terminal_summary(terminalreporter):
    """One line that says how many tests the absence of real data skipped, and how to provide it."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if NO_REAL_DATA in str(getattr(r, "longrepr", ""))]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} test(s) skipped for lack of real data: set IMSA_DATA=/path/to/datasets (a folder laid out like "
            f"../shared/datasets) or place that folder beside the repository at {SHARED_DATA}, then run the tests again.",
            yellow=True,
        )


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


# -- token-level text: a tiny BERT-style encoder and an MMSA file with its token ids ----------------

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(27)]  # [UNK] is 1 here, not BERT's 100


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A 16-wide, one-layer BERT with its own 32-token vocabulary, saved as a local model folder."""
    import transformers

    folder = tmp_path_factory.mktemp("tiny-bert")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=16
    )
    with torch.random.fork_rng():  # the tests' own seeds stay untouched
        torch.manual_seed(0)
        transformers.BertModel(config).save_pretrained(folder)
    return folder


def _token_mmsa(path, steps=8, largest=len(VOCAB)):
    """An aligned MMSA pickle whose text_bert ids are [CLS] words [SEP] in the tiny vocabulary."""
    rng = np.random.default_rng(0)
    content = {}
    for split, videos in {"train": range(0, 6), "valid": range(6, 8), "test": range(8, 10)}.items():
        ids = [f"v{v}$_${c}" for v in videos for c in range(4)]
        n = len(ids)
        words = rng.integers(3, steps + 1, size=n)
        mask = (np.arange(steps)[None, :] < words[:, None]).astype(np.float32)
        tokens = rng.integers(5, largest, size=(n, steps)) * mask
        tokens[:, 0] = 2
        tokens[np.arange(n), words - 1] = 3
        content[split] = {
            "id": ids,
            "text": (rng.standard_normal((n, steps, 6)) * mask[..., None]).astype(np.float32),
            "text_bert": np.stack([tokens, mask, np.zeros_like(mask)], axis=1).astype(np.float32),
            "audio": rng.standard_normal((n, steps, 3)).astype(np.float32),
            "vision": rng.standard_normal((n, steps, 4)).astype(np.float32),
            "regression_labels": rng.uniform(-3, 3, size=n).astype(np.float32),
            "classification_labels": np.zeros(n, np.float32),
        }
    path.write_bytes(pickle.dumps(content, protocol=4))
    return path


@pytest.fixture
def token_mmsa():
    """Writes an aligned MMSA pickle with text_bert ids of :func:`tiny_bert`'s vocabulary: ``token_mmsa(path, steps=8, largest=32)``."""
    return _token_mmsa


def _padded_sequences(lengths, dims={"l": 6, "a": 3, "v": 4}, width=None, seed=0):
    from imsa.batch import Batch

    generator = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    mask = torch.arange(width)[None] < torch.tensor(lengths)[:, None]
    inputs = {m: torch.randn(len(lengths), width, d, generator=generator) * mask[..., None] for m, d in dims.items()}
    return Batch(
        inputs=inputs,
        padding={m: mask for m in dims},
        present=torch.ones(len(lengths), len(dims), dtype=torch.bool),
        labels=torch.linspace(-3, 3, len(lengths)),
        index=torch.arange(len(lengths)),
        modalities=tuple(dims),
    )


@pytest.fixture
def padded_sequences():
    """Builds a batch of aligned sequences of the given lengths, zero-padded at the end to
    ``width``: ``padded_sequences(lengths, dims=..., width=None, seed=0)``."""
    return _padded_sequences


def _check_batch_independence(method):
    """Fit ``method`` on short aligned synthetic sequences of different lengths, then check
    that its test predictions under random masks are the same in batches of 256 and of 1."""
    import dataclasses

    from imsa.data.registry import load_dataset
    from imsa.protocols import Protocol

    split = load_dataset("synthetic", num_videos=12, sequence_length=9, aligned=True, seed=0).split(0)
    method.fit(split["train"], split["valid"], seed=0)
    settings = Protocol("random", rate=0.5).settings(split["test"])
    together = method.predict_settings(split["test"], settings)
    method.config = dataclasses.replace(method.config, eval_batch_size=1)
    one_by_one = method.predict_settings(split["test"], settings)
    for name, values in together.items():
        assert np.isfinite(values).all()
        np.testing.assert_allclose(one_by_one[name], values, atol=1e-5, rtol=1e-5)


@pytest.fixture
def check_batch_independence():
    """``check_batch_independence(method)``: fits it on padded sequences and checks that a
    prediction does not depend on the other utterances of its batch."""
    return _check_batch_independence
