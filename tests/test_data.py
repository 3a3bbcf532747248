"""The data model without real files: the synthetic benchmark, Dataset validation,
batches, the safe pickle loader and the dataset registry."""

from __future__ import annotations

import collections
import logging
import os
import pickle

import numpy as np
import pytest
import torch

from imsa.batch import iterate_batches
from imsa.data.dataset import Dataset, Fold
from imsa.data.registry import load_dataset
from imsa.data.safe_pickle import load_pickle
from imsa.errors import ConfigError, DataError
from imsa.missing import IndependentDropout

MODALITIES = ("l", "a", "v")


def synth(**options):
    return load_dataset("synthetic", **options)


def r_squared(x: np.ndarray, y: np.ndarray) -> float:
    """R² of the least-squares fit of y on x (with an intercept)."""
    design = np.c_[x.reshape(len(x), -1), np.ones(len(x))]
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    return 1.0 - float((y - design @ coef).var() / y.var())


# =========================================================================== synthetic


def test_synthetic_same_arguments_give_identical_arrays():
    a = synth(num_videos=10, seed=3)
    b = synth(num_videos=10, seed=3)
    for m in MODALITIES:
        np.testing.assert_array_equal(a.features[m], b.features[m])
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.utterance_ids == b.utterance_ids and a.video_ids == b.video_ids
    assert a.folds == b.folds
    assert a.checksum == b.checksum


def test_synthetic_different_seed_gives_different_data():
    a = synth(num_videos=10, seed=0)
    b = synth(num_videos=10, seed=1)
    assert a.checksum != b.checksum
    for m in MODALITIES:
        # different utterance counts or different values, never the same array
        assert a.features[m].shape != b.features[m].shape or not np.array_equal(a.features[m], b.features[m])
    assert len(a.labels) != len(b.labels) or not np.array_equal(a.labels, b.labels)


def test_synthetic_dims_follow_options():
    d = synth(num_videos=6, dim_l=5, dim_a=7, dim_v=3)
    assert d.modalities == MODALITIES
    assert d.dims == {"l": 5, "a": 7, "v": 3}
    for m in MODALITIES:
        assert d.features[m].shape == (len(d), d.dims[m])
        assert d.features[m].dtype == np.float32
        assert not d.is_sequence(m)


def test_synthetic_utterances_per_video_in_range(synthetic):
    sizes = [len(ix) for ix in synthetic.video_index.values()]
    assert len(sizes) == 20
    assert min(sizes) >= 3 and max(sizes) <= 6
    assert sum(sizes) == len(synthetic)
    # utterances of a video are contiguous and numbered in spoken order
    for v, ix in synthetic.video_index.items():
        assert list(ix) == list(range(ix[0], ix[0] + len(ix)))
        assert [synthetic.utterance_ids[i] for i in ix] == [f"{v}_{k + 1}" for k in range(len(ix))]


def test_synthetic_split_is_disjoint_by_video_and_covers_everything(synthetic):
    assert len(synthetic.folds) == 1
    fold = synthetic.folds[0]
    train, valid, test = set(fold.train), set(fold.valid), set(fold.test)
    assert not (train & valid) and not (train & test) and not (valid & test)
    assert train | valid | test == set(synthetic.video_ids)
    assert (len(train), len(valid), len(test)) == (12, 4, 4)  # 60/20/20 % of 20 videos
    parts = synthetic.split(0)
    seen = np.concatenate([parts[s].indices for s in ("train", "valid", "test")])
    assert sorted(seen.tolist()) == list(range(len(synthetic)))
    for s, subset in parts.items():
        assert {synthetic.video_ids[i] for i in subset.indices} == set(fold.videos(s))


def test_synthetic_labels_are_clipped_to_the_sentiment_range():
    d = synth(num_videos=30, weight_l=4.0)  # large weight: many labels beyond +-3 before clipping
    assert d.task == "regression" and d.labels.dtype == np.float32
    assert d.labels.min() == -3.0 and d.labels.max() == 3.0
    assert np.all((d.labels >= -3) & (d.labels <= 3))
    default = synth(num_videos=10)
    assert np.all((default.labels >= -3) & (default.labels <= 3))


def test_synthetic_label_depends_on_modalities_as_weighted():
    options = dict(num_videos=120, feature_noise=0.05, dim_l=4, dim_a=4, dim_v=4, seed=0)
    d = synth(**options)
    r2 = {m: r_squared(d.features[m], d.labels) for m in MODALITIES}
    assert r2["l"] > r2["a"] > r2["v"] > 0.05, r2
    # weight_v = 0: the label does not depend on the v features at all (chance R² ~ 4/1200)
    d0 = synth(**options, weight_v=0.0)
    r2_0 = {m: r_squared(d0.features[m], d0.labels) for m in MODALITIES}
    assert r2_0["v"] < 0.03, r2_0
    assert r2_0["l"] > r2_0["a"] > 0.1, r2_0


def test_synthetic_sequences_are_zero_padded_with_lengths():
    d = synth(num_videos=8, sequence_length=6, dim_l=3, dim_a=2, dim_v=4)
    n = len(d)
    for m in MODALITIES:
        x, lengths = d.features[m], d.lengths[m]
        assert d.is_sequence(m)
        assert x.shape == (n, 6, d.dims[m])
        assert lengths.shape == (n,)
        assert lengths.min() >= 1 and lengths.max() <= 6
        valid = np.arange(6)[None, :] < lengths[:, None]  # (N, T)
        assert np.all(x[~valid] == 0)
        assert np.all(np.abs(x[valid]).sum(axis=-1) > 0)  # every valid step carries signal or noise


def test_synthetic_classification_has_balanced_integer_classes():
    d = synth(num_videos=20, num_classes=3)
    assert d.task == "classification"
    assert d.labels.dtype == np.int64
    assert d.num_classes == 3 and d.output_dim == 3
    counts = np.bincount(d.labels, minlength=3)
    assert len(counts) == 3 and counts.sum() == len(d)
    assert counts.max() - counts.min() <= 2, counts
    # classes are ordered bins of the regression label of the same seed
    reg = synth(num_videos=20)
    for k in range(2):
        assert reg.labels[d.labels == k].max() <= reg.labels[d.labels == k + 1].min()


@pytest.mark.parametrize(
    "options, name",
    [
        ({"num_videos": 2}, "num_videos"),
        ({"num_classes": 1}, "num_classes"),
        ({"num_classes": -2}, "num_classes"),
        ({"min_utterances": 5, "max_utterances": 3}, "min_utterances"),
    ],
)
def test_synthetic_bad_parameters_raise_config_error(options, name):
    with pytest.raises(ConfigError, match=repr(name)):
        synth(**options)


# ===================================================================== Dataset validation


def tiny_dataset(**override) -> Dataset:
    kwargs = dict(
        name="tiny",
        modalities=("l", "a"),
        features={"l": np.ones((4, 2)), "a": np.ones((4, 3))},
        labels=np.zeros(4, np.float32),
        utterance_ids=["v1_1", "v1_2", "v2_1", "v2_2"],
        video_ids=["v1", "v1", "v2", "v2"],
        folds=[Fold(train=("v1",), valid=(), test=("v2",))],
    )
    kwargs.update(override)
    return Dataset(**kwargs)


def test_tiny_dataset_is_valid():
    d = tiny_dataset()
    assert len(d) == 4 and d.dims == {"l": 2, "a": 3}
    assert d.features["l"].dtype == np.float32


def test_dataset_rejects_mismatched_label_count():
    with pytest.raises(DataError, match="4 utterance ids but 3 labels"):
        tiny_dataset(labels=np.zeros(3, np.float32))


def test_dataset_rejects_duplicate_utterance_ids():
    with pytest.raises(DataError, match="not unique"):
        tiny_dataset(utterance_ids=["v1_1", "v1_2", "v2_1", "v1_1"])


def test_dataset_rejects_fold_with_unknown_video():
    with pytest.raises(DataError, match=r"fold 0 test names unknown videos \['v9'\]"):
        tiny_dataset(folds=[Fold(train=("v1",), valid=(), test=("v2", "v9"))])


def test_dataset_rejects_features_with_wrong_row_count():
    with pytest.raises(DataError, match="modality 'a'"):
        tiny_dataset(features={"l": np.ones((4, 2)), "a": np.ones((3, 3))})


def test_dataset_replaces_non_finite_features_and_counts_them(caplog):
    l = np.arange(8, dtype=np.float64).reshape(4, 2) + 1
    l[0, 1], l[2, 0], l[3, 1] = np.nan, np.inf, -np.inf
    original = l.copy()
    with caplog.at_level(logging.WARNING, logger="imsa"):
        d = tiny_dataset(features={"l": l, "a": np.ones((4, 3))})
    x = d.features["l"]
    assert x.dtype == np.float32 and np.all(np.isfinite(x))
    assert x[0, 1] == 0 and x[2, 0] == 0 and x[3, 1] == 0
    keep = np.isfinite(original)
    np.testing.assert_array_equal(x[keep], original[keep].astype(np.float32))
    np.testing.assert_array_equal(l[keep], original[keep])  # the caller's array is not modified
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "tiny/l" in warnings[0].getMessage() and "replaced 3 non-finite" in warnings[0].getMessage()


def test_dataset_with_finite_features_logs_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="imsa"):
        tiny_dataset()
    assert not caplog.records


# ================================================================================ batches


def batches(subset, batch_size, **kwargs):
    return list(iterate_batches(subset, batch_size, **kwargs))


@pytest.mark.parametrize("shuffle", [False, True])
def test_utterance_batches_cover_each_utterance_once(synthetic, shuffle):
    subset = synthetic.split(0)["train"]
    out = batches(subset, 7, shuffle=shuffle, rng=np.random.default_rng(0))
    assert [len(b) for b in out[:-1]] == [7] * (len(out) - 1) and 1 <= len(out[-1]) <= 7
    index = torch.cat([b.index for b in out]).numpy()
    assert sorted(index.tolist()) == sorted(subset.indices.tolist())
    assert len(set(index.tolist())) == len(subset)
    if not shuffle:
        np.testing.assert_array_equal(index, subset.indices)
    for b in out:
        assert b.level == "utterance" and b.utterance_mask is None
        assert b.present.dtype == torch.bool and b.present.shape == (len(b), 3) and bool(b.present.all())
        ix = b.index.numpy()
        for m in MODALITIES:
            np.testing.assert_array_equal(b.inputs[m].numpy(), synthetic.features[m][ix])
        np.testing.assert_array_equal(b.labels.numpy(), synthetic.labels[ix])
        assert b.labels.dtype == torch.float32


def test_with_present_zeroes_exactly_the_missing_modalities(synthetic):
    batch = next(iterate_batches(synthetic.split(0)["test"], 16))
    mask = torch.from_numpy(np.random.default_rng(1).random((len(batch), 3)) < 0.5)
    out = batch.with_present(mask)
    assert out.present.dtype == torch.bool and out.present.shape == (len(batch), 3)
    assert torch.equal(out.present, mask)
    for k, m in enumerate(MODALITIES):
        kept, lost = mask[:, k], ~mask[:, k]
        assert torch.equal(out.inputs[m][kept], batch.inputs[m][kept])
        assert torch.count_nonzero(out.inputs[m][lost]) == 0
        assert torch.count_nonzero(batch.inputs[m][lost]) > 0 or not lost.any()  # the original is untouched
    assert torch.equal(out.labels, batch.labels) and torch.equal(out.index, batch.index)


def test_fixed_masks_are_indexed_by_dataset_utterance(synthetic):
    rng = np.random.default_rng(2)
    fixed = rng.random((len(synthetic), 3)) < 0.6
    fixed[~fixed.any(axis=1), 0] = True
    subset = synthetic.split(0)["test"]
    assert not np.array_equal(subset.indices, np.arange(len(subset)))  # dataset and subset positions differ
    for level, size in (("utterance", 5), ("video", 2)):
        for b in iterate_batches(subset, size, level=level, present=fixed):
            ix = b.index.numpy()
            real = ix >= 0
            expected = np.where(real[..., None], fixed[np.clip(ix, 0, None)], False)
            np.testing.assert_array_equal(b.present.numpy(), expected)
            for k, m in enumerate(MODALITIES):
                x = b.inputs[m].numpy()
                assert np.all(x[~expected[..., k]] == 0)
                np.testing.assert_array_equal(x[expected[..., k]], synthetic.features[m][ix[expected[..., k]]])


def test_video_batches_pad_with_index_minus_one(synthetic):
    subset = synthetic.split(0)["train"]
    out = batches(subset, 3, level="video")
    seen_videos = []
    for b in out:
        assert b.level == "video"
        B, S = b.utterance_mask.shape
        assert b.index.shape == (B, S) and b.labels.shape == (B, S) and b.present.shape == (B, S, 3)
        for m in MODALITIES:
            assert b.inputs[m].shape == (B, S, synthetic.dims[m])
        real = b.utterance_mask
        assert real.dtype == torch.bool
        assert torch.equal(real, b.index >= 0)
        assert S == int(real.sum(1).max())  # padded only up to the longest video of the batch
        assert bool((b.index[~real] == -1).all())
        assert not b.present[~real].any() and bool(b.present[real].all())
        assert bool((b.labels[~real] == 0).all())
        for m in MODALITIES:
            assert torch.count_nonzero(b.inputs[m][~real]) == 0
            ix = b.index[real].numpy()
            np.testing.assert_array_equal(b.inputs[m][real].numpy(), synthetic.features[m][ix])
        for row in range(B):
            ix = b.index[row][real[row]].numpy()
            video = synthetic.video_ids[ix[0]]
            np.testing.assert_array_equal(ix, synthetic.video_index[video])  # the whole video, in order
            assert bool(real[row, : len(ix)].all())  # real utterances first, then padding
            seen_videos.append(video)
    assert seen_videos == list(subset.videos)


def test_sequence_batches_have_padding_masks():
    d = synth(num_videos=10, sequence_length=5, dim_l=3, dim_a=2, dim_v=2)
    subset = d.split(0)["train"]
    b = next(iterate_batches(subset, 8))
    ix = b.index.numpy()
    for m in MODALITIES:
        assert b.inputs[m].shape == (8, 5, d.dims[m])
        assert b.padding[m].dtype == torch.bool and b.padding[m].shape == (8, 5)
        np.testing.assert_array_equal(b.padding[m].numpy(), np.arange(5)[None, :] < d.lengths[m][ix][:, None])
    # missing modalities are zeroed over all time steps
    mask = torch.tensor([[True, False, True]] * 8)
    out = b.with_present(mask)
    assert torch.count_nonzero(out.inputs["a"]) == 0 and torch.equal(out.inputs["l"], b.inputs["l"])
    # video level: (B, S, T) padding, all False at padded utterances
    v = next(iterate_batches(subset, 4, level="video"))
    B, S = v.utterance_mask.shape
    for m in MODALITIES:
        assert v.inputs[m].shape == (B, S, 5, d.dims[m])
        assert v.padding[m].shape == (B, S, 5)
        assert not v.padding[m][~v.utterance_mask].any()
        real_ix = v.index[v.utterance_mask].numpy()
        np.testing.assert_array_equal(v.padding[m][v.utterance_mask].numpy(), np.arange(5)[None, :] < d.lengths[m][real_ix][:, None])


@pytest.mark.parametrize("level", ["utterance", "video"])
def test_repeat_stacks_the_batch(synthetic, level):
    b = next(iterate_batches(synthetic.split(0)["train"], 4, level=level))
    mask = torch.zeros(b.present.shape, dtype=torch.bool)
    mask[..., 0] = True
    b = b.with_present(mask)
    r = b.repeat(3)
    n = len(b)
    assert len(r) == 3 * n and r.level == b.level and r.modalities == b.modalities
    for k in range(3):
        part = slice(k * n, (k + 1) * n)
        for m in MODALITIES:
            assert torch.equal(r.inputs[m][part], b.inputs[m])
        assert torch.equal(r.present[part], b.present)
        assert torch.equal(r.labels[part], b.labels)
        assert torch.equal(r.index[part], b.index)
        if level == "video":
            assert torch.equal(r.utterance_mask[part], b.utterance_mask)


@pytest.mark.parametrize("level", ["utterance", "video"])
def test_sampler_masks_keep_at_least_one_modality(synthetic, level):
    sampler = IndependentDropout(0.7)
    out = batches(synthetic.split(0)["train"], 4, level=level, present=sampler, rng=np.random.default_rng(0))
    present = []
    for b in out:
        real = torch.ones(b.index.shape, dtype=torch.bool) if b.utterance_mask is None else b.utterance_mask
        assert bool(b.present[real].any(-1).all())
        assert not b.present[~real].any()
        for k, m in enumerate(MODALITIES):
            assert torch.count_nonzero(b.inputs[m][~b.present[..., k]]) == 0
        present.append(b.present[real])
    present = torch.cat(present)
    assert not bool(present.all())  # p = 0.7: plenty of modalities are dropped
    assert present.sum(1).min() == 1


# ============================================================================ safe pickle


class _Payload:
    """Pickles as a call of ``func(*args)``: what a malicious pickle looks like."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


@pytest.mark.parametrize("protocol", [0, 2, pickle.DEFAULT_PROTOCOL])
def test_pickle_that_runs_os_system_is_refused(tmp_path, monkeypatch, protocol):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Payload(os.system, "echo pwned > somefile"), protocol=protocol))
    with pytest.raises(DataError) as info:
        load_pickle(path)
    message = str(info.value)
    assert f"{os.system.__module__}.system" in message and "refused" in message
    assert str(path) in message
    assert not (tmp_path / "somefile").exists()


def test_pickle_calling_a_refused_builtin_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for protocol in (0, 2, pickle.DEFAULT_PROTOCOL):  # 0 and 2 name it __builtin__.eval
        path = tmp_path / f"eval{protocol}.pkl"
        path.write_bytes(pickle.dumps(_Payload(eval, "open('somefile', 'w').write('pwned')"), protocol=protocol))
        with pytest.raises(DataError, match="refused to load builtins.eval"):
            load_pickle(path)
    assert not (tmp_path / "somefile").exists()


def test_the_crafted_payload_does_run_under_plain_pickle(tmp_path, monkeypatch):
    # Control for the two tests above: the payload is real, only load_pickle stops it.
    monkeypatch.chdir(tmp_path)
    pickle.loads(pickle.dumps(_Payload(os.system, "echo pwned > somefile")))
    assert (tmp_path / "somefile").read_text().strip() == "pwned"


def _plain_objects():
    return {
        "dict": {"a": [1, 2.5, "x"], "b": {"c": (None, True, b"raw")}},
        "list": [1, (2, 3), {4, 5}, frozenset({6}), 7 + 1j, range(3)],
        "ordered": collections.OrderedDict(z=1, a=2),
        "float array": np.arange(12, dtype=np.float32).reshape(3, 4),
        "int array": np.array([[1, -2], [3, 4]], dtype=np.int64),
        "bool array": np.array([True, False]),
        "str array": np.array(["ab", "c"]),
        "scalars": [np.float32(1.5), np.int64(-3), np.float64(2.0)],
        "labels table": [{"v1": ["v1_1", "v1_2"]}, {"v1": np.array([0.4, -1.2])}, {"v1", "v2"}],
    }


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("kind", list(_plain_objects()))
def test_plain_data_pickles_load(tmp_path, kind, protocol):
    obj = _plain_objects()[kind]
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    loaded = load_pickle(path)
    assert type(loaded) is type(obj)
    if isinstance(obj, np.ndarray):
        assert loaded.dtype == obj.dtype
        np.testing.assert_array_equal(loaded, obj)
    elif kind == "scalars":
        assert [type(x) for x in loaded] == [type(x) for x in obj] and loaded == obj
    elif kind == "labels table":
        assert loaded[0] == obj[0] and loaded[2] == obj[2]
        np.testing.assert_array_equal(loaded[1]["v1"], obj[1]["v1"])
    else:
        assert loaded == obj


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_truncated_pickle_is_reported(tmp_path, protocol):
    data = pickle.dumps({"ids": [f"u{k}" for k in range(200)], "x": np.ones((20, 20), np.float32)}, protocol=protocol)
    path = tmp_path / "half.pkl"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupted") as info:
        load_pickle(path)
    assert str(path) in str(info.value) and "Download it again" in str(info.value)


def test_empty_pickle_is_reported_as_truncated(tmp_path):
    path = tmp_path / "empty.pkl"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="truncated or corrupted"):
        load_pickle(path)


@pytest.mark.parametrize(
    "content",
    [b"utterance,label\nv1_1,0.4\nv1_2,-1.2\n", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), b"\x00" * 64],
    ids=["csv", "binary", "zeros"],
)
def test_non_pickle_file_is_a_data_error(tmp_path, content):
    path = tmp_path / "labels.pkl"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        load_pickle(path)
    assert str(path) in str(info.value)


def test_missing_pickle_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_pickle(tmp_path / "absent.pkl")


# =============================================================================== registry


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        load_dataset("mosi-bclstn")
    message = str(info.value)
    assert "'mosi-bclstn'" in message
    assert "mosi-bclstm" in message and "synthetic" in message


def test_unknown_loader_option_is_named():
    with pytest.raises(ConfigError) as info:
        load_dataset("synthetic", num_video=10)
    message = str(info.value)
    assert "'num_video'" in message
    assert "num_videos" in message  # the valid options are listed


def test_option_of_wrong_type_is_a_config_error():
    with pytest.raises(ConfigError, match="'num_videos'"):
        load_dataset("synthetic", num_videos="10")
    d = load_dataset("synthetic", num_videos=5, feature_noise=1)  # an int for a float is fine
    assert len(d.video_index) == 5
