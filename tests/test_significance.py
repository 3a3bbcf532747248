"""Significance: the two paired tests, the vectorised metrics they resample, and the report's markers."""

import csv
import io

import numpy as np
import pytest

from imsa.cli import main
from imsa.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS, SIMS_METRICS, compute_metrics
from imsa.significance import paired_bootstrap_p, paired_permutation_p, resampled_metric


def test_permutation_p_by_hand():
    assert paired_permutation_p([0.1] * 5) == 2 / 32  # the two all-same-sign patterns of 32
    assert paired_permutation_p([0.0] * 4) == 1.0
    # d = (1, 2, 3): |mean| 2 is reached by +++ and ---; +-+... give 2/3, 0, 4/3: p = 2/8
    assert paired_permutation_p([1.0, 2.0, 3.0]) == 2 / 8
    # d = (1, -1): means 0 (+-, -+) and 1 (++, --): observed |0| -> every pattern counts
    assert paired_permutation_p([1.0, -1.0]) == 1.0
    assert np.isnan(paired_permutation_p([]))
    # beyond 16 pairs, Monte Carlo: a clear effect stays clear, no effect stays large
    assert paired_permutation_p(np.full(20, 0.1) + np.linspace(-0.01, 0.01, 20)) < 0.001
    assert paired_permutation_p(np.tile([0.1, -0.1], 10)) > 0.5


@pytest.mark.parametrize("seed", range(5))
def test_resampled_metrics_equal_the_metrics_on_the_resampled_data(seed):
    rng = np.random.default_rng(seed)
    n = 40
    counts = np.zeros((4, n))
    for b in range(4):
        np.add.at(counts[b], rng.integers(0, n, n), 1)
    label = np.round(rng.uniform(-3, 3, n) * 2) / 2  # some labels exactly 0
    prediction = rng.normal(label * 0.5, 1.2)
    classes = rng.integers(0, 4, n)
    scores = rng.normal(size=(n, 4))
    for b in range(4):
        drawn = np.repeat(np.arange(n), counts[b].astype(int))
        regression = compute_metrics("regression", prediction[drawn], label[drawn], sims=True)
        for metric in REGRESSION_METRICS + SIMS_METRICS:
            assert resampled_metric(metric, prediction, label, counts)[b] == pytest.approx(regression[metric], abs=1e-12), metric
        classification = compute_metrics("classification", scores[drawn], classes[drawn])
        for metric in CLASSIFICATION_METRICS:
            assert resampled_metric(metric, scores, classes, counts)[b] == pytest.approx(classification[metric], abs=1e-12), metric


def test_bootstrap_p_sees_a_real_difference_and_no_difference():
    rng = np.random.default_rng(0)
    label = rng.uniform(-3, 3, 200)
    good, bad = label + rng.normal(0, 0.5, 200), label + rng.normal(0, 2.0, 200)
    assert paired_bootstrap_p([(label, [(good, bad)])], "mae") < 0.01
    assert paired_bootstrap_p([(label, [(good, good)])], "mae") == 1.0
    # two runs and two conditions per run: every pair enters the mean difference
    assert paired_bootstrap_p([(label, [(good, bad), (good, good)]), (label, [(good, bad), (bad, bad)])], "acc2_has0") < 0.05
    assert np.isnan(paired_bootstrap_p([], "mae"))


def test_report_marks_a_clearly_worse_method_and_writes_p_values(tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "methods: [late_fusion, early_fusion]\n"
        "datasets: [synthetic]\n"
        "protocols: [fixed]\n"
        "seeds: [1, 2, 3, 4, 5, 6]\n"
        "config: {batch_size: 16}\n"
        "overrides: {late_fusion: {epochs: 30, lr: 0.003}, early_fusion: {epochs: 1, lr: 0.00001}}\n"  # a trained model and an untrained one
        "dataset_options: {synthetic: {num_videos: 30, max_utterances: 6}}\n"
    )
    store = tmp_path / "store"
    assert main(["grid", "run", str(grid), "--out", str(store), "--quiet"]) == 0
    assert main(["report", str(store), "--metrics", "mae", "--resamples", "300"]) == 0
    report = (store / "report" / "report.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in report.splitlines() if line.startswith("| ")}
    assert "*" in rows["early_fusion"] and "†" in rows["early_fusion"]  # six runs all worse: p = 2/64 < 0.05
    assert "*" not in rows["late_fusion"].replace("**", "")  # the reference row is not tested against itself
    assert "paired permutation test over matched seed × fold runs" in report
    cells = list(csv.DictReader(io.StringIO((store / "report" / "cells.csv").read_text())))
    early = [c for c in cells if c["method"] == "early_fusion"]
    assert all(float(c["p_runs"]) == pytest.approx(2 / 64) for c in early)
    assert all(c["reference"] == "1" and c["p_runs"] == "" for c in cells if c["method"] == "late_fusion")
    # a named baseline: late fusion is now tested against early fusion
    assert main(["report", str(store), "--metrics", "mae", "--baseline", "early_fusion", "--resamples", "100"]) == 0
    cells = list(csv.DictReader(io.StringIO((store / "report" / "cells.csv").read_text())))
    assert all(c["reference"] == "1" for c in cells if c["method"] == "early_fusion")
    assert main(["report", str(store), "--baseline", "momke"]) == 2
    assert "--baseline momke: no such method" in capsys.readouterr().err


@pytest.mark.parametrize("metric", ["emotion_binary_acc", "emotion_binary_f1"])
def test_resampled_multilabel_metrics_match_the_metric_on_each_resample(metric):
    from imsa.metrics import multilabel_metrics
    from imsa.significance import resampled_metric

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(30, 4))
    scores = rng.standard_normal((30, 4, 2))
    draws = rng.integers(0, 30, size=(5, 30))
    counts = np.stack([np.bincount(d, minlength=30) for d in draws])
    values = resampled_metric(metric, scores, labels, counts)
    for b, d in enumerate(draws):
        assert values[b] == pytest.approx(multilabel_metrics(scores[d], labels[d])[metric])
