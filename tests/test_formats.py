"""Loaders of the published formats (MMSA, MulT, MAG/MIB, GCNet/MoMKE), format detection,
safe loading, bad input and the GCNet export.

Each format's test file is built here with the published keys, shapes and dtypes
(docs: ../shared/docs/formats.md) and a few samples per split. The IEMOCAP tests use
the real label pickles of ``../shared/datasets/iemocap`` (skipped when absent) with
tiny generated per-utterance feature files.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from imsa.cli import main
from imsa.data.dataset import SPLITS
from imsa.data.export import export_gcnet
from imsa.data.formats import detect_format, list_formats
from imsa.data.registry import load_dataset
from imsa.errors import ConfigError, DataError

FORMATS = ("gcnet", "mag", "mmsa", "mult")


def write_pickle(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def check_common_schema(d):
    """What every loader promises: one row per utterance, contiguous videos, folds over all videos."""
    n = len(d)
    assert len(d.labels) == len(d.video_ids) == n
    seen, last = set(), None
    for v in d.video_ids:  # each video's utterances are contiguous
        if v != last:
            assert v not in seen
            seen.add(v)
            last = v
    for m in d.modalities:
        x = d.features[m]
        assert x.dtype == np.float32 and len(x) == n and np.isfinite(x).all()
        if x.ndim == 3:
            steps = np.arange(x.shape[1])[None, :] >= d.lengths[m][:, None]
            assert not np.any(x[steps]), f"{m}: padding must be zero"
    for fold in d.folds:
        assert not set(fold.train) & set(fold.test) and not set(fold.valid) & set(fold.test) and not set(fold.train) & set(fold.valid)
    if d.task == "classification":
        assert d.labels.dtype == np.int64 and d.labels.max() < d.num_classes
    elif d.task == "multilabel":
        assert d.labels.dtype == np.int64 and d.labels.shape == (n, d.num_classes) and np.isin(d.labels, (0, 1)).all()
    else:
        assert d.labels.dtype == np.float32


# ================================================================================ MMSA

MMSA_VIDEOS = {"train": {"vidA": 3, "vidB": 1}, "valid": {"vidC": 2}, "test": {"vidD": 2, "vidE": 1}}


def mmsa_content(aligned: bool, seed: int = 0) -> dict:
    """An MMSA MOSI pickle: aligned_50 (50 steps) or unaligned_50 (text 50, audio 375, vision 500)."""
    rng = np.random.default_rng(seed)
    t_a, t_v = (50, 50) if aligned else (375, 500)
    content = {}
    for split, videos in MMSA_VIDEOS.items():
        ids = [f"{v}$_${c}" for v, k in videos.items() for c in range(k, 0, -1)]  # clips listed out of order
        n = len(ids)
        words = rng.integers(3, 40, size=n)
        mask = (np.arange(50)[None, :] < words[:, None]).astype(np.float32)
        text_bert = np.stack([rng.integers(100, 30000, size=(n, 50)) * mask, mask, np.zeros((n, 50))], axis=1).astype(np.float32)
        part = {
            "id": ids,
            "raw_text": [f"utterance {i} of {split}" for i in ids],
            "text": (rng.standard_normal((n, 50, 768)) * mask[..., None]).astype(np.float32),
            "text_bert": text_bert,
            "audio": rng.standard_normal((n, t_a, 5)).astype(np.float32),
            "vision": rng.standard_normal((n, t_v, 20)).astype(np.float32),
            "regression_labels": rng.uniform(-3, 3, size=n).astype(np.float32),
            "annotations": ["Positive"] * n,
        }
        part["classification_labels"] = np.digitize(part["regression_labels"], [-0.5, 0.5]).astype(np.float32)
        part["audio"][0, 0, 1] = -np.inf  # MOSI audio holds -inf
        if not aligned:
            part["audio_lengths"] = [int(x) for x in rng.integers(1, t_a, size=n)]
            part["vision_lengths"] = [int(x) for x in rng.integers(1, t_v, size=n)]
        content[split] = part
    return content


@pytest.mark.parametrize("aligned", [True, False], ids=["aligned_50", "unaligned_50"])
def test_mmsa_loads_published_structure(tmp_path, aligned):
    content = mmsa_content(aligned)
    path = write_pickle(tmp_path / ("aligned_50.pkl" if aligned else "unaligned_50.pkl"), content)
    d = load_dataset(str(path))  # format detected
    check_common_schema(d)
    assert d.modalities == ("l", "a", "v") and d.dims == {"l": 768, "a": 5, "v": 20}
    assert d.task == "regression" and len(d.folds) == 1
    fold = d.folds[0]
    assert {s: set(fold.videos(s)) for s in SPLITS} == {s: set(v) for s, v in MMSA_VIDEOS.items()}
    # clips come in spoken order within their video; every value lands on its utterance
    assert d.utterance_ids[:4] == ["vidA$_$1", "vidA$_$2", "vidA$_$3", "vidB$_$1"]
    for split in SPLITS:
        part = content[split]
        for k, uid in enumerate(part["id"]):
            i = d.utterance_ids.index(uid)
            assert d.labels[i] == pytest.approx(part["regression_labels"][k])
            assert d.transcripts[i] == part["raw_text"][k]
            n_text = int(part["text_bert"][k, 1].sum())
            assert d.lengths["l"][i] == n_text
            np.testing.assert_array_equal(d.annotations["text_bert"][i], part["text_bert"][k].astype(np.int64))  # token ids kept
            a_len = part["audio_lengths"][k] if not aligned else n_text
            assert d.lengths["a"][i] == a_len
            expected = np.where(np.isfinite(part["audio"][k, :a_len]), part["audio"][k, :a_len], 0)
            np.testing.assert_array_equal(d.features["a"][i, :a_len], expected)
            v_len = part["vision_lengths"][k] if not aligned else n_text
            np.testing.assert_array_equal(d.features["v"][i, :v_len], part["vision"][k, :v_len])
    assert d.features["a"][d.utterance_ids.index("vidA$_$3"), 0, 1] == 0  # -inf cleaned


def test_mmsa_classification_labels(tmp_path):
    content = mmsa_content(True)
    path = write_pickle(tmp_path / "aligned_50.pkl", content)
    d = load_dataset(str(path), format="mmsa", task="classification")
    check_common_schema(d)
    assert d.task == "classification" and d.class_names == ("negative", "neutral", "positive")
    i = d.utterance_ids.index(content["test"]["id"][0])
    assert d.labels[i] == int(content["test"]["classification_labels"][0])


def test_mmsa_video_split_between_splits_keeps_published_membership(tmp_path):
    content = mmsa_content(True)
    content["valid"]["id"] = ["vidA$_$7", "vidA$_$8"]  # CH-SIMS-like: one video in two splits
    path = write_pickle(tmp_path / "unaligned_39.pkl", content)
    with pytest.raises(DataError, match=r"vidA in train and valid: leakage.*data.shared_videos=allow"):
        load_dataset(str(path), format="mmsa")  # refused unless the published split is wanted as it is
    d = load_dataset(str(path), format="mmsa", shared_videos="allow")
    fold = d.folds[0]
    assert "valid/vidA" in fold.valid and "train/vidA" in fold.train
    assert len(d.split(0)["valid"]) == 2 and len(d.split(0)["train"]) == 4


# ================================================================================ MulT


def mult_content(iemocap: bool, seed: int = 0, id_rows: bool = False) -> dict:
    """A MulT pickle: MOSI aligned (50 steps, 300/5/20, labels (N, 1, 1)) or IEMOCAP (20 steps, 300/74/35, labels (N, 4, 2))."""
    rng = np.random.default_rng(seed)
    steps, dims = (20, (300, 74, 35)) if iemocap else (50, (300, 5, 20))
    content = {}
    for s, split in enumerate(SPLITS):
        n = 3 + s
        lengths = rng.integers(1, steps + 1, size=n)
        pad = (np.arange(steps)[None, :] >= steps - lengths[:, None])[..., None]  # MulT pads at the start
        x = {k: (rng.standard_normal((n, steps, d)) * pad).astype(np.float32) for k, d in zip(("text", "audio", "vision"), dims)}
        if iemocap:
            emotion = rng.integers(0, 4, size=n)
            labels = np.zeros((n, 4, 2), np.float32)
            labels[:, :, 0] = 1
            labels[np.arange(n), emotion] = [0, 1]
            videos = [f"Ses0{s + 1}F_impro0{k % 2}" for k in range(n)]
        else:
            labels = rng.uniform(-3, 3, size=(n, 1, 1)).astype(np.float32)
            videos = [f"{split}vid{k % 2}" for k in range(n)]
        ids = np.array([[v, str(k)] for k, v in enumerate(videos)]) if id_rows else np.array([f"{v}_{k}" for k, v in enumerate(videos)])
        content[split] = {**x, "labels": labels, "id": ids}
    return content


@pytest.mark.parametrize("id_rows", [False, True], ids=["string-ids", "row-ids"])
def test_mult_mosi_loads_regression_and_moves_padding_to_the_end(tmp_path, id_rows):
    content = mult_content(iemocap=False, id_rows=id_rows)
    d = load_dataset(str(write_pickle(tmp_path / "mosi_data.pkl", content)))
    check_common_schema(d)
    assert d.task == "regression" and d.dims == {"l": 300, "a": 5, "v": 20} and len(d) == 3 + 4 + 5
    assert [len(d.split(0)[s]) for s in SPLITS] == [3, 4, 5]
    part = content["test"]
    for k in range(len(part["labels"])):
        uid = "_".join(part["id"][k]) if id_rows else part["id"][k]
        i = d.utterance_ids.index(uid)
        assert d.labels[i] == pytest.approx(part["labels"][k, 0, 0])
        n = d.lengths["a"][i]
        np.testing.assert_array_equal(d.features["a"][i, :n], part["audio"][k, -n:])


def test_mult_iemocap_keeps_one_binary_task_per_emotion(tmp_path):
    content = mult_content(iemocap=True)
    content["valid"]["labels"][1, :, 1] = [1, 1, 0, 0]  # two emotions present
    content["valid"]["labels"][1, :, 0] = [0, 0, 1, 1]
    d = load_dataset(str(write_pickle(tmp_path / "iemocap_data.pkl", content)), format="mult")
    check_common_schema(d)
    assert d.task == "multilabel" and d.class_names == ("neutral", "happy", "sad", "angry") and d.output_dim == 8
    assert d.family == "iemocap4"
    for split in SPLITS:
        part = content[split]
        for k, uid in enumerate(part["id"]):
            np.testing.assert_array_equal(d.labels[d.utterance_ids.index(uid)], part["labels"][k, :, 1])


def test_mult_iemocap_as_one_class_per_utterance(tmp_path):
    content = mult_content(iemocap=True)
    d = load_dataset(str(write_pickle(tmp_path / "iemocap_data.pkl", content)), format="mult", emotions="classes")
    check_common_schema(d)
    assert d.task == "classification" and d.class_names == ("neutral", "happy", "sad", "angry")
    assert d.dims == {"l": 300, "a": 74, "v": 35}
    for split in SPLITS:
        part = content[split]
        for k, uid in enumerate(part["id"]):
            i = d.utterance_ids.index(uid)
            assert d.labels[i] == int(np.argmax(part["labels"][k, :, 1]))
            np.testing.assert_array_equal(d.annotations["emotions"][i], part["labels"][k, :, 1] > 0.5)


def test_mult_iemocap_sample_with_two_emotions_is_named_when_classes_are_asked_for(tmp_path):
    content = mult_content(iemocap=True)
    content["valid"]["labels"][1, :, 1] = 1
    path = write_pickle(tmp_path / "iemocap_data.pkl", content)
    with pytest.raises(DataError, match="sample 1") as info:
        load_dataset(str(path), emotions="classes")
    assert str(path) in str(info.value) and "'valid'" in str(info.value) and "data.emotions=multilabel" in str(info.value)
    with pytest.raises(ConfigError, match="emotions"):
        load_dataset(str(path), emotions="binary")


# ================================================================================ MAG / MIB


def mag_content(seed: int = 0) -> dict:
    """A MAG/MIB mosi.pkl: ((words, visual (n, 47), acoustic (n, 74)), label (1, 1), segment id)."""
    rng = np.random.default_rng(seed)
    vocabulary = ["i", "really", "liked", "the", "movie", "but", "ending", "was", "weak"]
    content = {}
    for s, split in enumerate(("train", "dev", "test")):
        items = []
        for k in range(2 + s):
            n = int(rng.integers(2, 9))
            words = [str(w) for w in rng.choice(vocabulary, size=n)]
            visual = rng.standard_normal((n, 47)).astype(np.float32)
            acoustic = rng.standard_normal((n, 74)).astype(np.float32)
            label = np.array([[rng.uniform(-3, 3)]], dtype=np.float32)
            items.append(((words, visual, acoustic), label, f"{split}video{k // 2}[{k}]"))
        content[split] = items
    return content


def test_mag_keeps_words_and_one_row_per_word(tmp_path):
    content = mag_content()
    d = load_dataset(str(write_pickle(tmp_path / "mosi.pkl", content)))
    check_common_schema(d)
    assert d.modalities == ("a", "v") and d.dims == {"a": 74, "v": 47}
    assert [len(d.split(0)[s]) for s in SPLITS] == [2, 3, 4]
    for file_split in ("train", "dev", "test"):
        for (words, visual, acoustic), label, segment in content[file_split]:
            i = d.utterance_ids.index(segment)
            assert d.annotations["words"][i] == words and d.transcripts[i] == " ".join(words)
            assert d.lengths["a"][i] == d.lengths["v"][i] == len(words)
            np.testing.assert_array_equal(d.features["v"][i, : len(words)], visual)
            np.testing.assert_array_equal(d.features["a"][i, : len(words)], acoustic)
            assert d.labels[i] == pytest.approx(label[0, 0])
            assert d.video_ids[i] == segment.split("[")[0]


def test_mag_word_pieces_follow_the_text_encoders_tokens(tmp_path):
    from imsa.nn.text_encoder import load_tokenizer

    try:
        tokenizer = load_tokenizer(None)
    except ConfigError as e:
        pytest.skip(str(e))
    content = mag_content()
    (_, visual, acoustic), label, segment = content["train"][0]
    words = ["cinematographically", "unremarkable", "movie"][: len(visual)] + ["ok"] * max(0, len(visual) - 3)
    content["train"][0] = ((words, visual, acoustic), label, segment)
    pieces = [len(tokenizer.tokenize(w)) for w in words]
    assert max(pieces) > 1  # the check below can tell words from word pieces
    d = load_dataset(str(write_pickle(tmp_path / "mosi.pkl", content)), word_pieces="minilm")
    check_common_schema(d)
    assert d.modalities == ("l", "a", "v") and d.transcripts is not None
    i = d.utterance_ids.index(segment)
    steps = len(tokenizer(d.transcripts[i])["input_ids"])  # [CLS] pieces... [SEP]
    assert d.lengths["a"][i] == d.lengths["v"][i] == steps == sum(pieces) + 2
    expected = np.concatenate([np.zeros((1, 47)), np.repeat(visual, pieces, axis=0), np.zeros((1, 47))])
    np.testing.assert_array_equal(d.features["v"][i, :steps], expected)
    # the text of such a file is an all-zero placeholder: a method that would read it is refused, naming the fix
    from imsa.methods import create_method

    split = d.split(0)
    with pytest.raises(DataError, match=r"modality 'l' are all zero.*set text_encoder=minilm"):
        create_method("cmad", epochs=1, teacher_epochs=1).fit(split["train"], split["valid"])
    with pytest.raises(DataError, match=r"modality 'l' are all zero.*late_fusion would train on it"):
        create_method("late_fusion", epochs=1).fit(split["train"], split["valid"])


def test_mag_row_count_must_match_words(tmp_path):
    content = mag_content()
    (words, visual, acoustic), label, segment = content["dev"][1]
    content["dev"][1] = ((words, visual[:-1], acoustic), label, segment)
    path = write_pickle(tmp_path / "mosi.pkl", content)
    with pytest.raises(DataError) as info:
        load_dataset(str(path), format="mag")
    message = str(info.value)
    assert str(path) in message and segment in message and "one row per word" in message


# ================================================================================ GCNet / MoMKE


def gcnet_mosi_folder(root: Path, seed: int = 0) -> Path:
    """A GCNet MOSI-style folder: the 7-item label pickle and features/<name>/ as GCNet names them."""
    rng = np.random.default_rng(seed)
    splits = {"train": ["v1", "v2", "v3"], "valid": ["v4"], "test": ["v5", "v6"]}
    ids, labels, speakers, sentences = {}, {}, {}, {}
    for videos in splits.values():
        for v in videos:
            n = int(rng.integers(2, 5))
            ids[v] = [f"{v}_{k}" for k in range(1, n + 1)]
            labels[v] = list(rng.uniform(-3, 3, size=n))  # numpy float64, as in the real pickle
            speakers[v] = [""] * n
            sentences[v] = [f"SENTENCE {k} OF {v.upper()}" for k in range(n)]
    table = [ids, labels, speakers, sentences, set(splits["train"]), set(splits["valid"]), set(splits["test"])]
    write_pickle(root / "CMUMOSI_features_raw_2way.pkl", table)
    for v, uids in ids.items():
        for k, uid in enumerate(uids):
            for name, shape in (("deberta-large-4-UTT", (6,)), ("wav2vec-large-c-UTT", (3, 4))):
                (root / "features" / name).mkdir(parents=True, exist_ok=True)
                np.save(root / "features" / name / f"{uid}.npy", rng.standard_normal(shape).astype(np.float32))
            faces = root / "features" / "manet_UTT" / uid
            faces.mkdir(parents=True)
            for f in range(k % 3):  # some utterances have no face
                np.save(faces / f"frame{f:03d}.npy", rng.standard_normal(5).astype(np.float32))
    return root


def test_gcnet_mosi_folder_loads_features_labels_and_split(tmp_path):
    root = gcnet_mosi_folder(tmp_path / "CMUMOSI")
    d = load_dataset(str(root))
    check_common_schema(d)
    assert d.modalities == ("l", "a", "v") and d.dims == {"l": 6, "a": 4, "v": 5}
    assert d.task == "regression"
    assert [set(d.folds[0].videos(s)) for s in SPLITS] == [{"v1", "v2", "v3"}, {"v4"}, {"v5", "v6"}]
    feats = root / "features"
    i = d.utterance_ids.index("v2_1")
    np.testing.assert_allclose(d.features["a"][i], np.load(feats / "wav2vec-large-c-UTT" / "v2_1.npy").mean(0), rtol=1e-6)
    np.testing.assert_array_equal(d.features["l"][i], np.load(feats / "deberta-large-4-UTT" / "v2_1.npy"))
    np.testing.assert_array_equal(d.features["v"][i], 0)  # no face: zero vector
    j = d.utterance_ids.index("v2_3")  # two faces: averaged
    faces = [np.load(p) for p in sorted((feats / "manet_UTT" / "v2_3").iterdir())]
    np.testing.assert_allclose(d.features["v"][j], np.mean(faces, axis=0), rtol=1e-6)
    assert d.transcripts[j] == "SENTENCE 2 OF V2"


def test_gcnet_missing_utterance_file_is_named(tmp_path):
    root = gcnet_mosi_folder(tmp_path / "CMUMOSI")
    (root / "features" / "wav2vec-large-c-UTT" / "v5_2.npy").unlink()
    with pytest.raises(DataError) as info:
        load_dataset(str(root / "CMUMOSI_features_raw_2way.pkl"), format="gcnet")
    message = str(info.value)
    assert "'v5_2'" in message and "wav2vec-large-c-UTT" in message


def test_gcnet_feature_folders_can_be_named(tmp_path):
    root = gcnet_mosi_folder(tmp_path / "CMUMOSI")
    shutil.copytree(root / "features" / "wav2vec-large-c-UTT", root / "features" / "wav2vec-other")
    with pytest.raises(DataError, match="several feature folders could be modality 'a'"):
        load_dataset(str(root))
    d = load_dataset(str(root), audio_feature="wav2vec-other")
    assert d.dims["a"] == 4
    with pytest.raises(DataError, match="not found"):
        load_dataset(str(root), audio_feature="opensmile")


# ------------------------------------------------------------------ IEMOCAP (real label pickles)

IEMOCAP4_SESSIONS = [1085, 1023, 1151, 1031, 1241]


def iemocap_folder(data_root: Path, out: Path, classes: int) -> Path:
    """The real IEMOCAP label pickle with generated 4-d audio files and per-speaker face folders.

    Audio of utterance u is [session, index, 0, 0]; a face file of speaker S holds +1 (F)
    or -1 (M) in column 0 and the face number in column 1, so averages can be checked.
    """
    label = data_root / "iemocap" / f"IEMOCAP_features_raw_{classes}way.pkl"
    shutil.copy(label, out / label.name)
    with open(label, "rb") as f:
        ids = pickle.load(f, encoding="latin1")[0]
    audio, video = out / "features" / "wav2vec-large-c-UTT", out / "features" / "manet_UTT"
    audio.mkdir(parents=True)
    video.mkdir(parents=True)
    for v in sorted(ids):
        for k, uid in enumerate(ids[v]):
            np.save(audio / f"{uid}.npy", np.array([int(v[4]), k, 0, 0], np.float32))
            faces = video / uid
            faces.mkdir()
            if k % 5 == 4:
                continue  # no face detected
            for f in range(2):
                np.save(faces / f"{uid}_F_{f}.npy", np.array([1, f, 0, 0], np.float32))
            np.save(faces / "M_0.npy", np.array([-1, 5, 0, 0], np.float32))  # with or without the utterance id
    return out


@pytest.fixture(scope="module")
def iemocap4(data_root, tmp_path_factory):
    folder = iemocap_folder(data_root, tmp_path_factory.mktemp("iemocap4"), 4)
    return folder, load_dataset(str(folder))


def test_iemocap4_session_folds_match_the_known_sizes(iemocap4):
    _, d = iemocap4
    check_common_schema(d)
    assert len(d) == 5531 and len(d.video_index) == 151 and d.task == "classification"
    assert d.class_names == ("happy", "sad", "neutral", "angry")
    assert np.bincount(d.labels).tolist() == [1636, 1084, 1708, 1103]
    assert len(d.folds) == 5
    for k, fold in enumerate(d.folds):
        split = d.split(k)
        assert len(split["test"]) == IEMOCAP4_SESSIONS[k]
        assert {int(v[4]) for v in fold.test} == {k + 1}
        assert {int(v[4]) for v in fold.train + fold.valid} == set(range(1, 6)) - {k + 1}  # valid from the training sessions
        assert len(split["train"]) + len(split["valid"]) == 5531 - IEMOCAP4_SESSIONS[k]
        assert 0.05 < len(fold.valid) / (len(fold.train) + len(fold.valid)) < 0.15
    # a dialogue of session 1 is a validation dialogue in every fold that trains on session 1
    assert set(d.folds[1].valid) & set(d.folds[2].valid) & {v for v in d.video_index if v.startswith("Ses01")}


def test_iemocap_per_speaker_faces_and_audio_files(iemocap4):
    _, d = iemocap4
    speakers = d.annotations["speakers"]
    for i in range(0, len(d), 97):
        v = d.video_ids[i]
        k = int(np.flatnonzero(d.video_index[v] == i)[0])
        np.testing.assert_array_equal(d.features["a"][i], [int(v[4]), k, 0, 0])
        if k % 5 == 4:
            np.testing.assert_array_equal(d.features["v"][i], 0)
        elif speakers[i] == "F":
            np.testing.assert_array_equal(d.features["v"][i], [1, 0.5, 0, 0])  # mean of the two F faces
        else:
            np.testing.assert_array_equal(d.features["v"][i], [-1, 5, 0, 0])
    assert set(speakers) == {"F", "M"}
    assert d.transcripts[0] == "Excuse me."


def test_iemocap6_has_7433_utterances(data_root, tmp_path):
    label = data_root / "iemocap" / "IEMOCAP_features_raw_6way.pkl"
    shutil.copy(label, tmp_path / label.name)
    with open(label, "rb") as f:
        ids = pickle.load(f, encoding="latin1")[0]
    (tmp_path / "features" / "audio").mkdir(parents=True)
    for uids in ids.values():
        for uid in uids:
            np.save(tmp_path / "features" / "audio" / f"{uid}.npy", np.zeros(2, np.float32))
    d = load_dataset(str(tmp_path / label.name), format="gcnet")
    assert len(d) == 7433 and d.num_classes == 6 and d.modalities == ("a",)
    assert sum(len(d.split(k)["test"]) for k in range(5)) == 7433


def test_face_file_without_speaker_letter_is_named(data_root, tmp_path):
    folder = tmp_path / "iemo"
    folder.mkdir()
    label = data_root / "iemocap" / "IEMOCAP_features_raw_4way.pkl"
    shutil.copy(label, folder / label.name)
    with open(label, "rb") as f:
        ids = pickle.load(f, encoding="latin1")[0]
    for uids in ids.values():
        for uid in uids:
            (folder / "features" / "video" / uid).mkdir(parents=True)
    first = ids[sorted(ids)[0]][0]
    np.save(folder / "features" / "video" / first / "face0.npy", np.ones(3, np.float32))
    with pytest.raises(DataError, match="names no speaker") as info:
        load_dataset(str(folder))
    assert first in str(info.value)


# ================================================================================ export


def test_export_then_gcnet_load_round_trips(tmp_path, synthetic):
    path = export_gcnet(synthetic, tmp_path / "out")
    back = load_dataset(str(path), format="gcnet")
    assert back.modalities == synthetic.modalities and back.task == synthetic.task
    for m in synthetic.modalities:
        order = [back.utterance_ids.index(u) for u in synthetic.utterance_ids]
        np.testing.assert_array_equal(back.features[m][order], synthetic.features[m])
    np.testing.assert_array_equal(back.labels[order], synthetic.labels)
    assert [set(back.folds[0].videos(s)) for s in SPLITS] == [set(synthetic.folds[0].videos(s)) for s in SPLITS]


def test_export_of_classification_keeps_classes(tmp_path):
    d = load_dataset("synthetic", num_videos=10, num_classes=3)
    path = export_gcnet(d, tmp_path / "out")
    assert load_dataset(str(path)).task == "regression"  # a 7-item table holds sentiment scores, whatever their values
    back = load_dataset(str(path), task="classification")  # declared, never guessed from integer labels
    assert back.task == "classification" and back.num_classes == 3
    np.testing.assert_array_equal(back.labels[[back.utterance_ids.index(u) for u in d.utterance_ids]], d.labels)


def test_export_of_iemocap_keeps_session_folds_and_speakers(iemocap4, tmp_path):
    _, d = iemocap4
    path = export_gcnet(d, tmp_path / "out")
    with open(path, "rb") as f:
        assert len(pickle.load(f)) == 6  # IEMOCAP layout
    back = load_dataset(str(tmp_path / "out"))
    assert back.utterance_ids == d.utterance_ids and back.folds == d.folds
    np.testing.assert_array_equal(back.labels, d.labels)
    for m in d.modalities:
        np.testing.assert_array_equal(back.features[m], d.features[m])
    assert back.annotations["speakers"] == d.annotations["speakers"] and back.transcripts == d.transcripts


def test_export_of_sequences_writes_valid_steps_only(tmp_path):
    content = mag_content()
    d = load_dataset(str(write_pickle(tmp_path / "mosi.pkl", content)))
    export_gcnet(d, tmp_path / "out")
    (words, visual, acoustic), _, segment = content["test"][0]
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "features" / "video" / f"{segment}.npy"), visual)
    back = load_dataset(str(tmp_path / "out"))
    np.testing.assert_allclose(back.features["v"][back.utterance_ids.index(segment)], visual.mean(0), rtol=1e-5)


def test_cli_data_export(tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["data", "export", "synthetic", "--to", "gcnet", "--out", str(out), "--set", "data.num_videos=6"]) == 0
    printed = capsys.readouterr().out
    assert "synthetic_features_raw.pkl" in printed
    assert len(list((out / "features" / "audio").glob("*.npy"))) == len(load_dataset("synthetic", num_videos=6))


# ================================================================================ run on files


def test_cli_run_on_a_file_with_format(tmp_path, capsys):
    path = write_pickle(tmp_path / "mosi.pkl", mag_content())
    out = tmp_path / "run"
    assert main(["run", "--dataset", str(path), "--format", "mag", "--set", "epochs=2", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    for condition in ("a", "v", "a,v"):
        assert f"\n{condition} " in printed


# ================================================================================ detection and bad input


def test_every_format_is_registered():
    assert [f.name for f in list_formats()] == sorted([*FORMATS, "extracted"])  # the pickle formats and imsa extract's folders


@pytest.mark.parametrize(
    "build, expected",
    [(lambda: mmsa_content(True), "mmsa"), (lambda: mult_content(False), "mult"), (mag_content, "mag")],
    ids=["mmsa", "mult", "mag"],
)
def test_format_is_detected_from_the_content(tmp_path, build, expected):
    assert detect_format(write_pickle(tmp_path / "data.pkl", build())) == expected


def test_gcnet_is_detected_from_pickle_and_folder(tmp_path):
    root = gcnet_mosi_folder(tmp_path / "CMUMOSI")
    assert detect_format(root) == "gcnet" == detect_format(root / "CMUMOSI_features_raw_2way.pkl")


def test_unknown_format_lists_the_valid_ones(tmp_path):
    path = write_pickle(tmp_path / "mosi.pkl", mag_content())
    with pytest.raises(ConfigError) as info:
        load_dataset(str(path), format="mmsb")
    assert "'mmsb'" in str(info.value) and all(f in str(info.value) for f in FORMATS)


def test_wrong_format_names_the_file_and_the_right_one(tmp_path):
    path = write_pickle(tmp_path / "mosi.pkl", mag_content())
    with pytest.raises(DataError) as info:
        load_dataset(str(path), format="mmsa")
    assert str(path) in str(info.value) and "--format mag" in str(info.value)


def test_unrecognised_file_asks_for_the_format(tmp_path):
    path = write_pickle(tmp_path / "other.pkl", {"train": [1, 2], "x": np.zeros(3)})
    with pytest.raises(DataError, match="not recognised") as info:
        load_dataset(str(path))
    assert str(path) in str(info.value) and "--format" in str(info.value)


def test_missing_file_with_format_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_dataset(str(tmp_path / "absent.pkl"), format="mmsa")


def test_unknown_loader_option_of_a_format_is_named(tmp_path):
    path = write_pickle(tmp_path / "mosi.pkl", mag_content())
    with pytest.raises(ConfigError, match="'tsk'"):
        load_dataset(str(path), tsk="regression")


@pytest.mark.parametrize(
    "fmt, split, key",
    [("mmsa", "valid", "regression_labels"), ("mmsa", "test", "vision"), ("mult", "train", "labels"), ("mult", "test", "id")],
)
def test_missing_key_is_named(tmp_path, fmt, split, key):
    content = mmsa_content(True) if fmt == "mmsa" else mult_content(False)
    del content[split][key]
    path = write_pickle(tmp_path / "data.pkl", content)
    with pytest.raises(DataError) as info:
        load_dataset(str(path), format=fmt)
    message = str(info.value)
    assert str(path) in message and repr(key) in message


@pytest.mark.parametrize("fmt, key", [("mmsa", "audio"), ("mmsa", "regression_labels"), ("mult", "vision"), ("mult", "id")])
def test_inconsistent_shapes_are_named(tmp_path, fmt, key):
    content = mmsa_content(True) if fmt == "mmsa" else mult_content(False)
    content["train"][key] = content["train"][key][:-1]
    path = write_pickle(tmp_path / "data.pkl", content)
    with pytest.raises(DataError) as info:
        load_dataset(str(path), format=fmt)
    message = str(info.value)
    assert str(path) in message and repr(key) in message and "'train'" in message


def test_mmsa_feature_size_must_agree_between_splits(tmp_path):
    content = mmsa_content(True)
    content["test"]["vision"] = np.zeros((3, 50, 35), np.float32)
    path = write_pickle(tmp_path / "data.pkl", content)
    with pytest.raises(DataError, match="'vision' has \\[20, 35\\] features"):
        load_dataset(str(path))


def test_gcnet_label_pickle_with_short_label_list_is_named(tmp_path):
    root = gcnet_mosi_folder(tmp_path / "CMUMOSI")
    path = root / "CMUMOSI_features_raw_2way.pkl"
    with open(path, "rb") as f:
        table = pickle.load(f)
    table[1]["v3"] = table[1]["v3"][:-1]
    write_pickle(path, table)
    with pytest.raises(DataError, match="videoLabels\\['v3'\\]"):
        load_dataset(str(root))


# ================================================================================ malicious pickles


class _Payload:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _evil() -> bytes:
    return pickle.dumps({"train": _Payload(os.system, "echo pwned > somefile")}, protocol=2)


@pytest.mark.parametrize("fmt", [None, *FORMATS])
def test_malicious_pickle_is_refused_by_every_format(tmp_path, monkeypatch, fmt):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "data.pkl"
    path.write_bytes(_evil())
    with pytest.raises(DataError, match="refused to load") as info:
        load_dataset(str(path), format=fmt)
    assert str(path) in str(info.value)
    assert not (tmp_path / "somefile").exists()


def test_malicious_label_pickle_in_a_gcnet_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ds" / "features" / "audio").mkdir(parents=True)
    (tmp_path / "ds" / "X_features_raw_4way.pkl").write_bytes(_evil())
    with pytest.raises(DataError, match="refused to load"):
        load_dataset(str(tmp_path / "ds"), format="gcnet")
    assert not (tmp_path / "somefile").exists()


@pytest.mark.parametrize(
    "name, label", [("mosi-transcripts", "cmu-mosi/CMUMOSI_features_raw_2way.pkl"), ("iemocap4-text", "iemocap/IEMOCAP_features_raw_4way.pkl")]
)
def test_malicious_label_pickle_of_a_registered_text_dataset_is_refused(tmp_path, monkeypatch, name, label):
    from imsa.data.download import remote_files

    monkeypatch.chdir(tmp_path)
    root = tmp_path / "root"
    for remote in remote_files(name):  # present but fake files: the label pickle is read first
        (root / remote.path).parent.mkdir(parents=True, exist_ok=True)
        (root / remote.path).write_bytes(_evil() if remote.path == label else b"0,0\n")
    with pytest.raises(DataError, match="modified since it was downloaded"):  # refused by its checksum, before any unpickling
        load_dataset(name, root)
    assert not (tmp_path / "somefile").exists()


def test_repeated_ids_are_numbered_not_merged(tmp_path, caplog):
    content = mult_content(iemocap=False)
    content["train"]["id"][1] = content["train"]["id"][0]
    d = load_dataset(str(write_pickle(tmp_path / "mosei_senti_data.pkl", content)))
    first = str(content["train"]["id"][0])
    assert first in d.utterance_ids and f"{first}#2" in d.utterance_ids and len(d) == 12
    assert "occur more than once" in caplog.text
