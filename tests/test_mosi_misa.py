"""``mosi-misa``: CMU-MOSI's validation split as real word-aligned sequences (MISA's dev.pkl).

Needs the real file; skips with the reason when ``../shared/datasets`` (or ``$IMSA_DATA``)
lacks it."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

from conftest import skip_without_real_data
from imsa.cli import main
from imsa.data.mosi_misa import PICKLE
from imsa.data.registry import load_dataset
from imsa.errors import DataError


@pytest.fixture(scope="module")
def misa_root(data_root):
    if not (data_root / PICKLE).is_file():
        skip_without_real_data(str(PICKLE))
    return data_root


@pytest.fixture(scope="module")
def misa(misa_root):
    return load_dataset("mosi-misa", misa_root)


def test_word_aligned_sequences_grouped_by_video(misa):
    assert len(misa) == 229 and misa.family == "mosi" and misa.task == "regression"
    assert {m: misa.features[m].shape for m in misa.modalities} == {"l": (229, 44, 384), "a": (229, 44, 74), "v": (229, 44, 47)}
    lengths = misa.lengths["l"]
    assert all(np.array_equal(misa.lengths[m], lengths) for m in misa.modalities) and lengths.min() == 2 and lengths.max() == 44
    steps = np.arange(44)[None, :] < lengths[:, None]
    for m in misa.modalities:  # padding is zero
        assert not misa.features[m][~steps].any()
    assert np.abs(misa.features["l"][steps]).sum(-1).min() > 0  # every word has a vector
    assert len(set(misa.video_ids)) == 10 and misa.utterance_ids[:2] == ["WKA5OygbEKI[0]", "WKA5OygbEKI[1]"]
    assert (int((misa.labels > 0).sum()), int((misa.labels < 0).sum()), int((misa.labels == 0).sum())) == (124, 92, 13)
    for fold in misa.folds:
        assert len(fold.test) == len(fold.valid) == 2 and len(fold.train) == 6
        assert not (set(fold.train) & set(fold.valid) | set(fold.train) & set(fold.test) | set(fold.valid) & set(fold.test))
    assert sorted(v for fold in misa.folds for v in fold.test) == sorted(set(misa.video_ids))
    # the same word gets the same vector wherever it occurs (context-free encoding)
    where = {}
    for i, text in enumerate(misa.transcripts):
        for k, word in enumerate(text.split()):
            where.setdefault(word, []).append((i, k))
    (i, k), (j, q) = where["movie"][0], where["movie"][-1]
    assert i != j
    np.testing.assert_array_equal(misa.features["l"][i, k], misa.features["l"][j, q])
    assert not np.array_equal(misa.features["l"][i, k], misa.features["l"][where["the"][0]])


def test_a_damaged_file_is_refused_naming_it(misa_root, tmp_path):
    root = tmp_path / "data"
    (root / PICKLE).parent.mkdir(parents=True)
    shutil.copy(misa_root / PICKLE, root / PICKLE)
    items = pickle.loads((root / PICKLE).read_bytes())
    (ids, visual, audio, words), label, segment = items[3]
    items[3] = ((ids, visual[:-1], audio, words), label, segment)
    (root / PICKLE).write_bytes(pickle.dumps(items))
    with pytest.raises(DataError, match=r"dev\.pkl.*item 3.*one 47-d and one 74-d row per word"):
        from imsa.data.mosi_misa import read_items

        read_items(root / PICKLE)


def test_sequence_methods_and_the_frames_protocol_run_on_it(misa_root, tmp_path, capsys):
    assert (
        main(
            [
                "run",
                "--method",
                "late_fusion",
                "--dataset",
                "mosi-misa",
                "--data-dir",
                str(misa_root),
                "--protocol",
                "frames",
                "--rates",
                "0",
                "0.5",
                "--folds",
                "0",
                "--set",
                "epochs=2",
                "--out",
                str(tmp_path / "frames"),
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "run",
                "--method",
                "mult",
                "--dataset",
                "mosi-misa",
                "--data-dir",
                str(misa_root),
                "--folds",
                "0",
                "--set",
                "epochs=1",
                "--set",
                "dim=8",
                "--set",
                "depth=1",
                "--set",
                "heads=2",
                "--out",
                str(tmp_path / "mult"),
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "frames=0.5" in printed and "l,a,v" in printed


def test_imsa_features_text_fills_the_cache_the_loader_reads(misa_root, tmp_path):
    cache = tmp_path / "cache"
    assert main(["features", "text", "--dataset", "mosi-misa", "--data-dir", str(misa_root), "--cache-dir", str(cache)]) == 0
    written = sorted(cache.glob("*.npz"))
    load_dataset("mosi-misa", misa_root, cache_dir=str(cache))
    assert len(written) == 1 and sorted(cache.glob("*.npz")) == written  # nothing encoded again


def test_the_tokens_variant_holds_word_pieces_a_text_encoder_fine_tunes(misa_root, misa, tmp_path):
    from imsa.frames import PROTECTED_ENDS, keyed_frame_masks
    from imsa.nn.text_encoder import load_tokenizer

    tokens = load_dataset("mosi-misa-tokens", misa_root, max_length=12)
    assert tokens.family == "mosi" and tokens.utterance_ids == misa.utterance_ids and np.array_equal(tokens.labels, misa.labels)
    assert tokens.folds == misa.folds and np.array_equal(tokens.features["a"], misa.features["a"])
    ids, attention, segments = tokens.annotations["text_bert"].transpose(1, 0, 2)
    assert ids.shape == (229, 12) and not segments.any() and np.array_equal(attention.sum(1), tokens.lengths["l"])
    pieces = load_tokenizer(None).convert_ids_to_tokens(ids[0, : tokens.lengths["l"][0]].tolist())
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]" and "".join(pieces[1:-1]).replace("##", "") in misa.transcripts[0].replace(" ", "")
    assert tokens.features["l"].shape == (229, 12, 384) and not tokens.features["l"][attention == 0].any()  # frozen token states, zero padding
    assert tokens.annotations[PROTECTED_ENDS][0] == ("l",)
    kept = keyed_frame_masks(tokens, np.arange(229), 0.9, 0)["l"]
    last = tokens.lengths["l"] - 1
    assert kept[:, 0].all() and kept[np.arange(229), last].all()  # [CLS] and [SEP] never dropped
    with pytest.raises(Exception, match="max_length"):
        load_dataset("mosi-misa-tokens", misa_root, max_length=2)
