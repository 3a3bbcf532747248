"""Noisy modalities: Gaussian noise at an SNR, random frame replacement, channel erasure; keyed, composable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import imsa
from imsa.errors import ConfigError
from imsa.noise import Noise
from imsa.protocols import Protocol


def sequences(n=6, t=20, d=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, t, d)).astype(np.float32)
    lengths = rng.integers(5, t + 1, size=n)
    for i, length in enumerate(lengths):
        x[i, length:] = 0
    return x, lengths


def test_reference_values_are_pinned():
    x, lengths = sequences()
    out = Noise("gauss", 0.3, seed=0).corrupt(x[:1], lengths[:1], ["u1"], "a", x, lengths)
    assert np.round(out[0, 0, :3] - x[0, 0, :3], 5).tolist() == pytest.approx([0.36545, -0.37154, -0.12868], abs=1e-5)


def test_gaussian_noise_has_the_stated_snr_and_leaves_padding_alone():
    x, lengths = sequences(n=1, t=400, d=64)
    lengths[:] = 300
    x[0, 300:] = 0
    out = Noise("gauss", 0.5).corrupt(x, lengths, ["u"], "a", x, lengths)
    noise = out[0, :300] - x[0, :300]
    assert np.std(noise) / np.sqrt(np.mean(x[0, :300] ** 2)) == pytest.approx(0.5, rel=0.03)  # SNR -20 log10(0.5) = 6 dB
    assert not out[0, 300:].any()


def test_erasure_zeroes_the_same_channels_at_every_real_step():
    x, lengths = sequences()
    out = Noise("erase", 0.25).corrupt(x, lengths, [f"u{i}" for i in range(6)], "v", x, lengths)
    for i, length in enumerate(lengths):
        zeroed = ~out[i, :length].any(axis=0)
        assert zeroed.sum() == 8 and np.array_equal(out[i, :length, ~zeroed], x[i, :length, ~zeroed])


def test_replacement_swaps_steps_for_other_utterances_steps():
    x, lengths = sequences(n=40, t=30)
    out = Noise("replace", 0.4).corrupt(x, lengths, [f"u{i}" for i in range(40)], "a", x, lengths)
    real = np.arange(30)[None, :] < lengths[:, None]
    changed = (out != x).any(axis=-1) & real
    assert changed.sum() / real.sum() == pytest.approx(0.4, abs=0.05)
    donors = {tuple(np.round(x[j, s], 6)) for j in range(40) for s in range(lengths[j])}
    assert all(tuple(np.round(out[i, s], 6)) in donors for i, s in zip(*np.nonzero(changed)))
    assert not out[~real].any()
    vectors = x[:, 0]
    swapped = Noise("replace", 0.5).corrupt(vectors, None, [f"u{i}" for i in range(40)], "l", vectors, None)
    assert 0.3 < (swapped != vectors).any(axis=1).mean() < 0.7  # a vector modality: the whole vector


def test_draws_are_keyed_by_utterance_not_by_batch():
    x, lengths = sequences()
    noise = Noise("gauss", 0.4, seed=3)
    together = noise.corrupt(x[:3], lengths[:3], ["a", "b", "c"], "l", x, lengths)
    alone = noise.corrupt(x[2:3], lengths[2:3], ["c"], "l", x, lengths)
    assert np.array_equal(together[2], alone[0])
    assert not np.array_equal(alone, Noise("gauss", 0.4, seed=4).corrupt(x[2:3], lengths[2:3], ["c"], "l", x, lengths))
    assert np.array_equal(Noise("erase", 0.0).corrupt(x, lengths, list("abcdef"), "l", x, lengths), x)


@pytest.fixture(scope="module")
def fitted():
    data = imsa.load_dataset("synthetic", sequence_length=8)
    split = data.split(0)
    return imsa.create_method("late_fusion", epochs=2).fit(split["train"], split["valid"], seed=1), split["test"]


def test_noise_zero_is_the_complete_condition_and_only_present_modalities_are_corrupted(fitted):
    from imsa.evaluation import predict_settings

    method, test = fitted
    clean = method.predict_settings(test, Protocol("fixed").settings(test))
    quiet = method.predict_settings(test, Protocol("noise", rate=0.0).settings(test))
    assert np.array_equal(quiet["noise=gauss:0"], clean["l,a,v"])
    noisy = method.predict_settings(test, Protocol("fixed", noise="gauss:0.9").settings(test))
    assert all(not np.array_equal(noisy[c], clean[c]) for c in clean)

    seen = []

    def spy(batch):  # what the model would read: a missing modality is zeros, noise or not
        for k, m in enumerate(batch.modalities):
            seen.append(float(batch.inputs[m][~batch.present[:, k]].abs().sum()))
        return torch.zeros(batch.labels.shape)

    predict_settings(spy, test, Protocol("fixed", noise="gauss:0.9").settings(test))
    assert seen and max(seen) == 0.0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Protocol("noise"), "needs its noise rate"),
        (lambda: Protocol("noise", rate=1.0), "in \\[0, 1\\)"),
        (lambda: Protocol("noise", rate=0.3, noise="blur"), "Unknown noise 'blur'"),
        (lambda: Protocol("noise", rate=0.3, noise="gauss:0.5"), "two rates"),
        (lambda: Protocol("fixed", noise="gauss"), "KIND:RATE"),
        (lambda: Protocol("noise", rate=0.3, frames=0.2), "not the noise protocol"),
    ],
)
def test_bad_noise_settings_say_what_is_allowed(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_names_identities_and_a_grid_report_with_a_curve_per_corruption(tmp_path):
    from imsa.experiments.grid import grid_from_dict, run_grid
    from imsa.experiments.report import write_report

    assert Protocol("noise", noise="erase:0.5").name == "noise=erase:0.5" and Protocol("mr", rate=0.2, noise="gauss:0.1").name == "mr=0.2,noise=gauss:0.1"
    assert "noise" not in Protocol("random", rate=0.3).to_dict()  # identities of runs without noise unchanged
    grid = grid_from_dict(
        {
            "methods": ["late_fusion"],
            "datasets": ["synthetic"],
            "seeds": [1],
            "folds": [0],
            "config": {"epochs": 2},
            "protocols": [{"noise": {"gauss": [0.0, 0.6], "erase": [0.6]}}, {"fixed": None, "noise": "replace:0.5"}],
        }
    )
    run_grid(grid, tmp_path / "store")
    # the rates of one noise share one model (training never sees the noise): one experiment each
    assert sorted(d.name for d in (tmp_path / "store" / "synthetic" / "late_fusion").iterdir()) == [
        "fixed,noise=replace:0.5",
        "noise=erase:0.6",
        "noise=gauss:0,0.6",
    ]
    record = json.loads((tmp_path / "store" / "synthetic" / "late_fusion" / "noise=gauss:0,0.6" / "runs" / "seed1-fold0.json").read_text())
    assert set(record["metrics"]["test"]) == {"noise=gauss:0", "noise=gauss:0.6", "mean"}
    written = write_report(tmp_path / "store", tmp_path / "report")
    assert "noise_curve" in written and "noise_csv" in written
    text = (tmp_path / "report" / "report.md").read_text()
    assert "late_fusion (gauss)" in text and "late_fusion (erase)" in text and "late_fusion (noise=replace:0.5)" in text


def test_imsa_run_scores_one_model_at_every_noise_rate_and_trains_per_mr(tmp_path):
    noise = imsa.run("late_fusion", "synthetic", protocol="noise", folds=[0], out=tmp_path / "noise", overrides={"epochs": 1})
    assert noise["experiments"] == 1 and noise["protocol_label"].startswith("noise at 0, 0.1")
    assert list(noise["test"]) == [f"noise=gauss:{r:g}" for r in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)] + ["mean"]
    mr = imsa.run("late_fusion", "synthetic", protocol="mr", rates=[0.0, 0.3], folds=[0], out=tmp_path / "mr", overrides={"epochs": 1})
    assert mr["experiments"] == 2 and sorted(p.name for p in (tmp_path / "mr").iterdir()) == ["mr=0", "mr=0.3"]
    assert Protocol("noise", rates=(0.0, 0.5), noise="erase").name == "noise=erase:0,0.5"
    for bad, message in (
        (lambda: Protocol("noise", rates=(0.2,), noise="gauss:0.3"), "kind alone"),
        (lambda: Protocol("noise", rates=(0.2, 1.0)), "in \\[0, 1\\)"),
        (lambda: Protocol("mr", rate=0.1, rates=(0.1, 0.2)), "frames and noise"),
    ):
        with pytest.raises(ConfigError, match=message):
            bad()
