"""MAG / MIB word-aligned pickles: ``mosi.pkl``, ``mosei.pkl`` (used by CMAD).

Published with WasifurRahman/BERT_multimodal_transformer (Rahman et al., ACL 2020) and
reused by MIB and CMAD. A pickled dict with ``train``, ``dev``, ``test``; each a list of
``((words, visual, acoustic), label, segment_id)``: ``words`` a list of word strings,
``visual`` (n_words, 47 MOSI | 35 MOSEI), ``acoustic`` (n_words, 74), ``label`` a
sentiment in [-3, 3] (an array of shape (1, 1)).

Loaded as word-level sequences of audio (``a``) and vision (``v``) with one step per
word, and the words themselves: ``annotations["words"]`` (one list per utterance, word
t belongs to step t) and ``transcripts`` (the words joined by spaces). The file has no
text features, so the modalities are ``("a", "v")``. ``dev`` is the validation split.

With ``word_pieces=MODEL`` the sequences follow a text encoder's tokens instead, as the
MAG code feeds them: each word's audio/vision row is repeated once per word piece of
MODEL's tokenizer, a zero row stands for ``[CLS]`` and ``[SEP]``, and a text modality
``l`` is added for methods that encode the transcripts themselves (``cmad`` with
``text_encoder``); its features are a zero placeholder that such methods do not read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset
from .formats import as_array, file_checksum, pad_sequences, published_split, register_format, require_keys, require_samples, split_utterance_id, text

FILE_SPLITS = {"train": "train", "dev": "valid", "test": "test"}
FIX = "The file is not an intact MAG/MIB word-aligned pickle (mosi.pkl / mosei.pkl)."


def _is_mag(path: Path, content) -> bool:
    if not (isinstance(content, dict) and all(isinstance(content.get(s), (list, tuple)) for s in FILE_SPLITS)):
        return False
    first = next((content[s][0] for s in FILE_SPLITS if content[s]), None)
    return isinstance(first, (list, tuple)) and len(first) == 3 and isinstance(first[0], (list, tuple)) and len(first[0]) == 3


@register_format("mag", description="MAG/MIB word-aligned mosi.pkl / mosei.pkl: ((words, visual, acoustic), label, id)", detect=_is_mag)
def load_mag(path: Path, content, *, name: str = "", word_pieces: str = "") -> Dataset:
    """Build a :class:`Dataset` from a MAG/MIB pickle's content.

    Parameters
    ----------
    path : Path
        The pickle (for messages and provenance).
    content : dict
        Its unpickled content.
    name : str
        Dataset name (default: ``mag:<file stem>``).
    word_pieces : str
        ``""``: one step per word. ``"minilm"`` or a local Hugging Face model folder:
        one step per word piece of that model's tokenizer, plus the text modality ``l``.
    """
    require_keys(content, tuple(FILE_SPLITS), str(path), FIX)
    uids, vids, splits, labels, words, visual, acoustic = [], [], [], [], [], [], []
    for file_split, split in FILE_SPLITS.items():
        require_samples(len(content[file_split]), f"{path} [{file_split!r}]", split)
        for k, item in enumerate(content[file_split]):
            where = f"{path} [{file_split!r}][{k}]"
            try:
                (item_words, item_visual, item_acoustic), label, segment = item
            except (TypeError, ValueError):
                raise DataError(f"{where}: expected ((words, visual, acoustic), label, segment_id). {FIX}") from None
            item_words = [text(w) for w in (item_words.tolist() if isinstance(item_words, np.ndarray) else item_words)]
            n_words = len(item_words)
            v = as_array(item_visual, f"{where} visual", 2)
            a = as_array(item_acoustic, f"{where} acoustic", 2)
            if len(v) != n_words or len(a) != n_words:
                raise DataError(f"{where} ({text(segment)!r}): {n_words} words but visual has {len(v)} rows and acoustic {len(a)}; expected one row per word.")
            value = as_array(label, f"{where} label", (0, 1, 2), dtype=np.float64).reshape(-1)
            if len(value) != 1:
                raise DataError(f"{where} label: {value.size} values, expected one sentiment score.")
            uid, vid = split_utterance_id(segment)
            uids.append(uid)
            vids.append(vid)
            splits.append(split)
            labels.append(value[0])
            words.append(item_words)
            visual.append(v)
            acoustic.append(a)
    if not uids:
        raise DataError(f"{path}: no samples in 'train', 'dev' or 'test'.")
    order, video_ids, fold, utterance_ids = published_split(path, uids, vids, splits)
    ordered_words = [words[i] for i in order]
    acoustic, visual = [acoustic[i] for i in order], [visual[i] for i in order]
    modalities, features = ("a", "v"), {}
    if word_pieces:
        pieces = word_piece_counter(word_pieces)
        repeats = [[pieces(w) for w in ws] for ws in ordered_words]
        acoustic = [to_word_pieces(a, r) for a, r in zip(acoustic, repeats)]
        visual = [to_word_pieces(v, r) for v, r in zip(visual, repeats)]
        modalities, features = ("l", "a", "v"), {"l": np.zeros((len(order), 1), dtype=np.float32)}
    a_seq, a_len = pad_sequences(acoustic, f"{path}: acoustic")
    v_seq, v_len = pad_sequences(visual, f"{path}: visual")
    return Dataset(
        name=name or f"mag:{path.stem}",
        modalities=modalities,
        features={**features, "a": a_seq, "v": v_seq},
        lengths={"a": a_len, "v": v_len},
        labels=np.asarray(labels, dtype=np.float32)[order],
        utterance_ids=utterance_ids,
        video_ids=video_ids,
        folds=[fold],
        task="regression",
        transcripts=[" ".join(w) for w in ordered_words],
        checksums=file_checksum(path),
        description=f"MAG/MIB word-aligned pickle {path.name}",
        annotations={"words": ordered_words},
    )


def word_piece_counter(model: str):
    """``count(word) -> int``: the number of word pieces MODEL's tokenizer splits ``word`` into."""
    from ..nn.text_encoder import load_tokenizer

    tokenizer = load_tokenizer(None if model == "minilm" else model)
    return lambda word: len(tokenizer.tokenize(word))


def to_word_pieces(rows: np.ndarray, repeats: list[int]) -> np.ndarray:
    """Word rows ``(n_words, D)`` -> ``(2 + sum(repeats), D)``: each row ``repeats[t]`` times,
    between the zero rows of ``[CLS]`` and ``[SEP]`` (as the MAG code aligns them)."""
    zero = np.zeros((1, rows.shape[1]), dtype=rows.dtype)
    return np.concatenate([zero, np.repeat(rows, repeats, axis=0), zero])
