"""The folder `imsa extract` writes, read back as a dataset (no media packages needed: the folder is built from arrays)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from imsa.batch import iterate_batches
from imsa.data.dataset import SOURCE_PRESENT
from imsa.data.registry import load_dataset
from imsa.errors import DataError
from imsa.media.corpus import write_dataset
from imsa.media.pipeline import ExtractionConfig
from imsa.protocols import Protocol


def make_folder(path, *, videos=6, per_video=3, labels=None, splits=None, present=None):
    """A folder as imsa extract writes it: ``videos`` x ``per_video`` utterances, features random."""
    rng = np.random.default_rng(0)
    n = videos * per_video
    ids = [f"v{k // per_video}_{k % per_video + 1}" for k in range(n)]
    present = np.ones((n, 3), bool) if present is None else present
    rows = [
        {
            "utterance_id": u,
            "video_id": u.split("_")[0],
            "media": f"{u.split('_')[0]}.mp4",
            "start": 0.0,
            "end": 1.0,
            "text": "words",
            "has_text": int(present[k, 0]),
            "audio": int(present[k, 1]),
            "visual": int(present[k, 2]),
            "reason": "",
            "label": None if labels is None else labels[k],
            "split": None if splits is None else splits[k],
        }
        for k, u in enumerate(ids)
    ]
    arrays = {"utterance_ids": np.asarray(ids), "video_ids": np.asarray([r["video_id"] for r in rows]), "present": present}
    for m, dim in (("l", 4), ("a", 3), ("v", 2)):
        keep = present[:, "lav".index(m)]
        arrays[f"vectors_{m}"] = (rng.normal(size=(n, dim)) * keep[:, None]).astype(np.float32)
        arrays[f"sequence_{m}"] = (rng.normal(size=(n, 5, dim)) * keep[:, None, None]).astype(np.float32)
    arrays["lengths_l"] = np.full(n, 5)
    arrays["lengths_av"] = np.full(n, 4)
    arrays["aligned"] = np.asarray(False)
    write_dataset(path, rows, arrays, ExtractionConfig(), [])
    return path


def test_round_trip_with_labels_and_grouped_folds(tmp_path):
    labels = [str(x) for x in np.linspace(-1, 1, 18)]
    dataset = load_dataset(str(make_folder(tmp_path / "ds", labels=labels)))
    assert dataset.task == "regression" and np.allclose(dataset.labels, np.linspace(-1, 1, 18))
    assert dataset.features["l"].shape == (18, 4) and dataset.extraction["labelled"] and dataset.extraction["features"] == "vectors"
    assert len(dataset.folds) == 5
    tested = [v for fold in dataset.folds for v in fold.test]
    assert sorted(tested) == sorted(set(dataset.video_ids))  # every video tested once
    for fold in dataset.folds:
        assert not set(fold.train) & (set(fold.valid) | set(fold.test)) and fold.valid and fold.test
    sequences = load_dataset(str(tmp_path / "ds"), features="sequences")
    assert sequences.features["a"].shape == (18, 5, 3) and (sequences.lengths["a"] == 4).all() and (sequences.lengths["l"] == 5).all()


def test_class_labels_and_a_split_column(tmp_path):
    splits = ["train"] * 9 + ["valid"] * 3 + ["test"] * 6
    dataset = load_dataset(str(make_folder(tmp_path / "ds", labels=["happy", "sad", "angry"] * 6, splits=splits)))
    assert dataset.task == "classification" and dataset.class_names == ("angry", "happy", "sad")
    assert len(dataset.folds) == 1 and dataset.folds[0].test == ("v4", "v5")


def test_source_missingness_survives_every_protocol(tmp_path):
    present = np.ones((18, 3), bool)
    present[::4, 2] = False
    present[1::5, 1] = False
    dataset = load_dataset(str(make_folder(tmp_path / "ds", labels=["1"] * 18, present=present)))
    assert np.array_equal(dataset.annotations[SOURCE_PRESENT], present)
    subset = dataset.split(0)["train"]
    batch = next(iterate_batches(subset, 64))
    assert np.array_equal(batch.present.numpy(), present[batch.index.numpy()])
    masks = Protocol("random", rate=0.5).settings(subset)["rate=0.5"]
    batch = next(iterate_batches(subset, 64, present=masks))
    rows = batch.index.numpy()
    assert np.array_equal(batch.present.numpy(), masks[rows] & present[rows])
    assert not batch.inputs["v"].numpy()[~present[rows, 2]].any()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: (p / "features.npz").unlink(), "features.npz is missing"),
        (lambda p: _edit_rows(p, lambda rows: rows[::-1]), "same order"),
        (lambda p: _edit_rows(p, lambda rows: [{**r, "label": "" if k == 2 else r["label"]} for k, r in enumerate(rows)]), "1 utterance\\(s\\) have no label"),
        (
            lambda p: _edit_rows(p, lambda rows: [{**r, "split": "train" if k < 10 else "test"} for k, r in enumerate(rows)]),
            "video v3 has utterances in both train and test",
        ),
        (lambda p: _edit_rows(p, lambda rows: [{**r, "split": "dev"} for r in rows]), "split 'dev'"),
    ],
)
def test_a_damaged_folder_names_the_problem(tmp_path, change, message):
    folder = make_folder(tmp_path / "ds", labels=["0.5"] * 18)
    change(folder)
    with pytest.raises(DataError, match=message):
        load_dataset(str(folder))


def test_too_few_videos_for_grouped_folds(tmp_path):
    with pytest.raises(DataError, match="need at least 3"):
        load_dataset(str(make_folder(tmp_path / "ds", videos=2, labels=["1"] * 6)))
    with pytest.raises(DataError, match="choose one of vectors, sequences|choose one of sequences, vectors"):
        load_dataset(str(make_folder(tmp_path / "ds2", labels=["1"] * 18)), features="frames")


def _edit_rows(folder, edit):
    path = folder / "utterances.csv"
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, list(reader)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(edit(rows))


def test_no_corpus_family_is_guessed_for_extracted_features(tmp_path):
    folder = make_folder(tmp_path / "ds", labels=["1", "-1", "0.5"] * 6)  # CH-SIMS' label range
    dataset = load_dataset(str(folder))
    assert dataset.family == "" and dataset.family_source.startswith("none")
    assert load_dataset(str(folder), family="sims").family == "sims"  # a user who knows says so
