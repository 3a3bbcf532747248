"""The leak-free CMU-MOSI loader (``mosi-bclstm``) on the real files.

Every test here needs the real data and uses the ``data_root`` / ``mosi`` fixtures, so
it skips with the reason when ``../shared/datasets`` (or ``$IMSA_DATA``) is absent.
"""

from __future__ import annotations

import csv
import os
import pickle
import shutil
import stat
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from imsa.data.mosi_bclstm import assign_parts, cross_validation_folds
from imsa.data.registry import load_dataset
from imsa.errors import DataError

BCLSTM = Path("cmu-mosi/bc-lstm")
PICKLE = Path("cmu-mosi/CMUMOSI_features_raw_2way.pkl")
FEATURE_CSVS = {"l": BCLSTM / "text/text_test0.csv", "a": BCLSTM / "audio/audio_test0.csv", "v": BCLSTM / "video/video_test0.csv"}

# The fixed video-to-part assignment (as in docs/datasets.md). Fold k tests on part k.
PARTS = [
    ["1iG0909rllw", "2WGyTLYerpo", "Njd1F0vZSm4", "Vj1wYRQjB-o", "iiK8YX8oH1E", "vyB00TXsimI"],
    ["9c67fiY0wGQ", "Ci-AH39fi3Y", "Clx4VXItLTE", "OQvJTdtJ2H4", "cW1FSBF59ik", "tmZoasNr4rU"],
    ["9J25DZhivz8", "BXuRRbG0Ugk", "I5y0__X72p0", "Iu2PFX3z_1s", "Jkswaaud0hk", "tStelxIAHjw"],
    ["0h-zjBukYpk", "BI97DNYfe5I", "Dg_0XKD0Mf4", "Sqr0AcuoNnk", "ZUXBRvtny7o", "cM3Yna7AavY"],
    ["03bSnISJMiM", "8d-gEyoeBzc", "Af8D0E4ZXaw", "G-xst2euQUc", "GWuJjcEuzt8", "Nzq88NnDkEk", "vvZ4IcEtiZc"],
]
PART_SIZES = [155, 147, 147, 146, 157]


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return [row for row in csv.reader(f) if row]


def csv_utterance_ids(root: Path, split: str) -> list[str]:
    """Utterance id of each row of the ``*_{split}0.csv`` files, via text_{split}.csv -> transcripts.csv."""
    transcripts = read_csv(root / BCLSTM / "transcripts.csv")
    return [transcripts[int(row[0])][0] for row in read_csv(root / BCLSTM / f"text_{split}.csv")]


@pytest.fixture(scope="module")
def label_table(data_root):
    with open(data_root / PICKLE, "rb") as f:  # the project's own copy: plain pickle is fine here
        return pickle.load(f, encoding="latin1")


# ============================================================================ contents


def test_sizes_modalities_and_dims(mosi):
    assert mosi.name == "mosi-bclstm"
    assert len(mosi) == 752
    assert len(set(mosi.video_ids)) == 31 == len(mosi.video_index)
    assert mosi.modalities == ("l", "a", "v")
    assert mosi.dims == {"l": 100, "a": 73, "v": 100}
    for m in mosi.modalities:
        assert mosi.features[m].shape == (752, mosi.dims[m]) and mosi.features[m].dtype == np.float32
        assert np.all(np.isfinite(mosi.features[m]))
    assert mosi.task == "regression" and mosi.output_dim == 1
    assert len(mosi.checksums) == 10  # provenance: all files of the mosi-bclstm file set


def test_labels_are_continuous_sentiment(mosi):
    labels = mosi.labels
    assert labels.dtype == np.float32
    assert labels.min() == -3.0 and labels.max() == 3.0
    assert len(np.unique(labels)) > 20  # continuous scores, not classes
    assert np.any(labels != np.round(labels))
    assert int((labels >= 0).sum()) == 467  # 467 / 752 = 62.1 % non-negative
    assert round(float((labels >= 0).mean()), 3) == 0.621
    assert int((labels == 0).sum()) == 31
    assert len(np.unique(labels)) == 47


@pytest.mark.parametrize(
    "utterance, label, transcript",
    [
        ("03bSnISJMiM_1", 2.4, "ANYHOW IT WAS REALLY GOOD"),
        ("2WGyTLYerpo_10", 0.8, "AND ITS SATISFACTORY"),
        ("Vj1wYRQjB-o_9", 2.0, "THEY DID A GOOD JOB WITH THE FIGHT SCENES"),
        ("I5y0__X72p0_3", -1.6, None),
    ],
)
def test_pinned_labels_match_the_pickle(mosi, label_table, utterance, label, transcript):
    video_ids, video_labels, _, video_sentences = label_table[:4]
    i = mosi.utterance_ids.index(utterance)
    video = mosi.video_ids[i]
    assert utterance.startswith(video + "_")
    k = list(video_ids[video]).index(utterance)
    assert float(video_labels[video][k]) == pytest.approx(label)
    assert mosi.labels[i] == pytest.approx(label)
    assert mosi.transcripts[i] == video_sentences[video][k]
    if transcript is not None:
        assert mosi.transcripts[i] == transcript


def test_all_labels_and_transcripts_match_the_pickle(mosi, label_table):
    video_ids, video_labels, _, video_sentences = label_table[:4]
    expected = {}
    for v in set(mosi.video_ids):
        for u, y, s in zip(video_ids[v], video_labels[v], video_sentences[v]):
            expected[u] = (np.float32(y), s)
    assert len(expected) == 752
    assert len(mosi.transcripts) == 752
    assert all(isinstance(t, str) and t.strip() for t in mosi.transcripts)
    for u, y, t in zip(mosi.utterance_ids, mosi.labels, mosi.transcripts):
        assert (y, t) == expected[u]


def test_features_are_the_csv_rows_of_each_utterance(mosi, data_root):
    row_of = {u: r for r, u in enumerate(csv_utterance_ids(data_root, "test"))}
    assert len(row_of) == 752 and set(row_of) == set(mosi.utterance_ids)
    order = [row_of[u] for u in mosi.utterance_ids]
    for m, rel in FEATURE_CSVS.items():
        table = np.array(read_csv(data_root / rel), dtype=np.float64)
        np.testing.assert_array_equal(mosi.features[m], table[order, :-1].astype(np.float32))
        # the CSVs' binary label is 1 exactly where the continuous label is >= 0
        np.testing.assert_array_equal(table[order, -1] == 1, mosi.labels >= 0)


def test_utterances_are_ordered_by_video_and_spoken_order(mosi, label_table):
    video_ids = label_table[0]
    runs = [v for k, v in enumerate(mosi.video_ids) if k == 0 or v != mosi.video_ids[k - 1]]
    assert runs == sorted(set(mosi.video_ids))  # contiguous, videos sorted by id
    for v, ix in mosi.video_index.items():
        assert [mosi.utterance_ids[i] for i in ix] == list(video_ids[v])
    # spoken order is numeric (_1, _2, ..., _10), unlike the CSVs' text order (_1, _10, _11, ...)
    first = mosi.video_index["03bSnISJMiM"]
    assert [mosi.utterance_ids[i] for i in first[:3]] == ["03bSnISJMiM_1", "03bSnISJMiM_2", "03bSnISJMiM_3"]
    assert [mosi.utterance_ids[i].rsplit("_", 1)[0] for i in first] == ["03bSnISJMiM"] * 13


# =============================================================================== folds


def test_five_folds_partition_the_videos(mosi):
    folds = mosi.folds
    assert len(folds) == 5
    videos = set(mosi.video_ids)
    test_count, valid_count = Counter(), Counter()
    for k, fold in enumerate(folds):
        train, valid, test = set(fold.train), set(fold.valid), set(fold.test)
        assert not (train & valid) and not (train & test) and not (valid & test)
        assert train | valid | test == videos
        assert fold.valid == folds[(k + 1) % 5].test
        test_count.update(fold.test)
        valid_count.update(fold.valid)
        split = mosi.split(k)
        assert sum(len(s) for s in split.values()) == 752
    assert test_count == Counter({v: 1 for v in videos})
    assert valid_count == Counter({v: 1 for v in videos})


def test_video_to_part_assignment_is_pinned(mosi):
    assert [list(f.test) for f in mosi.folds] == PARTS
    sizes = {v: len(ix) for v, ix in mosi.video_index.items()}
    assert assign_parts(sizes) == PARTS
    assert [sum(sizes[v] for v in part) for part in PARTS] == PART_SIZES
    for k, fold in enumerate(mosi.folds):
        assert list(fold.train) == sorted(v for p in range(5) if p not in (k, (k + 1) % 5) for v in PARTS[p])


def test_assign_parts_small_example_by_hand():
    # Sizes a=5, b=4, c=3, d=3, e=1 into 2 parts; videos go largest first (ties by id),
    # each to the part with the fewest utterances so far (ties to the lower part):
    #   a(5) -> part 0 (0 vs 0, tie)  totals [5, 0]
    #   b(4) -> part 1                totals [5, 4]
    #   c(3) -> part 1 (4 < 5)        totals [5, 7]
    #   d(3) -> part 0 (5 < 7)        totals [8, 7]
    #   e(1) -> part 1 (7 < 8)        totals [8, 8]
    assert assign_parts({"e": 1, "d": 3, "c": 3, "b": 4, "a": 5}, 2) == [["a", "d"], ["b", "c", "e"]]
    # Ties: x, y, z (2 each) fill parts 0, 1, 2; w(1) then goes to the lowest of three equal parts.
    assert assign_parts({"z": 2, "w": 1, "y": 2, "x": 2}, 3) == [["w", "x"], ["y"], ["z"]]
    folds = cross_validation_folds([["p0"], ["p1"], ["p2"]])
    assert [(f.train, f.valid, f.test) for f in folds] == [
        (("p2",), ("p1",), ("p0",)),
        (("p0",), ("p2",), ("p1",)),
        (("p1",), ("p0",), ("p2",)),
    ]


def test_no_bclstm_train_video_is_in_the_dataset(mosi, data_root):
    # The text and video extractors were trained on these 62 videos (leakage guard).
    train_ids = csv_utterance_ids(data_root, "train")
    assert len(train_ids) == 1447 == len(read_csv(data_root / BCLSTM / "text/text_train0.csv"))
    train_videos = {u.rsplit("_", 1)[0] for u in train_ids}
    assert len(train_videos) == 62
    assert not train_videos & set(mosi.video_ids)
    assert not set(train_ids) & set(mosi.utterance_ids)
    assert set(mosi.video_ids) == {u.rsplit("_", 1)[0] for u in csv_utterance_ids(data_root, "test")}


# ========================================================================= bad input


@pytest.fixture
def copy_root(data_root, tmp_path) -> Path:
    """A writable copy of the cmu-mosi folder under tmp_path, to damage."""
    root = tmp_path / "data"
    shutil.copytree(data_root / "cmu-mosi", root / "cmu-mosi", copy_function=shutil.copyfile)
    for here, _, _ in os.walk(root):  # copytree keeps the source's read-only folder modes
        os.chmod(here, stat.S_IRWXU)
    return root


def load(root: Path):
    return load_dataset("mosi-bclstm", root)


def rewrite_csv(path: Path, edit) -> None:
    rows = read_csv(path)
    edit(rows)
    with open(path, "w", newline="") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerows(rows)


def test_copy_loads_like_the_original(copy_root, mosi):
    d = load(copy_root)
    assert d.utterance_ids == mosi.utterance_ids and d.checksum == mosi.checksum


@pytest.mark.parametrize("rel", [FEATURE_CSVS["a"], BCLSTM / "transcripts.csv", PICKLE])
def test_missing_file(copy_root, rel):
    (copy_root / rel).unlink()
    with pytest.raises(DataError) as info:
        load(copy_root)
    message = str(info.value)
    assert rel.as_posix() in message
    assert "imsa data download mosi-bclstm" in message


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _foreign(path):
    path.write_bytes(pickle.dumps({"videoIDs": {}, "videoLabels": {}}))


def _drop_row(path):
    rewrite_csv(path, lambda rows: rows.pop(100))


def _drop_column(path):
    rewrite_csv(path, lambda rows: rows[9].pop(50))


def _flip_label(path):
    def flip(rows):
        rows[20][-1] = "0" if float(rows[20][-1]) == 1 else "1"

    rewrite_csv(path, flip)


def _nan_cell(path):
    def poison(rows):
        rows[4][2] = "nan"

    rewrite_csv(path, poison)


@pytest.mark.parametrize(
    "rel, change",
    [
        (PICKLE, _truncate),
        (PICKLE, _foreign),
        (FEATURE_CSVS["v"], _drop_row),
        (FEATURE_CSVS["l"], _drop_column),
        (FEATURE_CSVS["a"], _flip_label),
        (FEATURE_CSVS["a"], _nan_cell),
    ],
    ids=["truncated-pickle", "foreign-pickle", "csv-row-removed", "csv-column-removed", "binary-label-flipped", "nan-cell"],
)
def test_a_file_modified_after_download_is_refused_by_its_checksum(copy_root, rel, change):
    path = copy_root / rel
    change(path)
    with pytest.raises(DataError, match="modified since it was downloaded") as info:
        load(copy_root)
    message = str(info.value)
    assert str(path) in message and "imsa data download mosi-bclstm --force" in message


def test_a_verified_file_is_not_hashed_again_until_it_changes(copy_root, monkeypatch):
    import imsa.data.download as download

    load(copy_root)  # verifies and remembers every file
    calls = []
    original = download.sha256_file
    monkeypatch.setattr(download, "sha256_file", lambda path: calls.append(path) or original(path))
    load(copy_root)
    assert calls == []  # size and modification time unchanged: nothing hashed
    os.utime(copy_root / FEATURE_CSVS["a"], ns=(1, 1))  # touched, not changed
    load(copy_root)
    assert calls == [copy_root / FEATURE_CSVS["a"]]
