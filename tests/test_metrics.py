"""Metric values checked against arithmetic done by hand (shown in comments)."""

import math

import numpy as np
import pytest
import torch

from imsa.errors import ConfigError
from imsa.metrics import (
    CLASSIFICATION_METRICS,
    METRICS,
    MULTILABEL_METRICS,
    REGRESSION_METRICS,
    MetricInfo,
    classification_metrics,
    compute_metrics,
    multilabel_metrics,
    regression_metrics,
)

# ---------------------------------------------------------------- regression


def test_zero_labels_are_non_negative_in_has0_and_dropped_in_non0():
    label = [-2, -1, 0, 0, 1, 2]
    prediction = [-1.5, 0.5, -0.3, 0.2, 1.0, -0.1]
    result = regression_metrics(prediction, label)

    # mae: |0.5| + |1.5| + |-0.3| + |0.2| + |0| + |-2.1| = 4.6; 4.6 / 6
    assert result["mae"] == pytest.approx(4.6 / 6)

    # has0 (x >= 0): label [0 0 1 1 1 1], prediction [0 1 0 1 1 0]
    # right at samples 0, 3, 4 -> 3/6
    assert result["acc2_has0"] == pytest.approx(0.5)
    # class 0: TP 1, predicted 3, true 2 -> P 1/3, R 1/2, F1 = (2/6)/(5/6) = 2/5
    # class 1: TP 2, predicted 3, true 4 -> P 2/3, R 1/2, F1 = (4/6)/(7/6) = 4/7
    # weighted by support: (2 * 2/5 + 4 * 4/7) / 6 = (28/35 + 80/35) / 6 = 18/35
    assert result["f1_has0"] == pytest.approx(18 / 35)

    # non0: samples 2 and 3 (label 0) dropped; label [-2 -1 1 2] -> [0 0 1 1],
    # prediction [-1.5 0.5 1.0 -0.1] -> [0 1 1 0]; right at 0 and 2 -> 2/4
    assert result["acc2_non0"] == pytest.approx(0.5)
    # each class: TP 1, predicted 2, true 2 -> F1 1/2; weighted 1/2
    assert result["f1_non0"] == pytest.approx(0.5)


def test_prediction_zero_is_non_negative_in_has0_but_negative_in_non0():
    label = [1, -1, 2, 0]
    prediction = [0.0, 0.0, 0.5, 1.0]
    result = regression_metrics(prediction, label)
    # has0: label [1 0 1 1], prediction [1 1 1 1] -> wrong only at sample 1: 3/4
    assert result["acc2_has0"] == pytest.approx(3 / 4)
    # non0 (MMSA: x > 0): sample 3 dropped; label [1 0 1], prediction [0 0 1]
    # -> wrong only at sample 0: 2/3
    assert result["acc2_non0"] == pytest.approx(2 / 3)


def test_acc7_and_acc5_differ_because_of_clipping_at_two():
    label = [3, -3, 2, -2, 0.4]
    prediction = [2.2, -2.6, 3.0, -1.6, 0.6]
    result = regression_metrics(prediction, label)
    # acc7, clip to [-3, 3] then round:
    #   label [3 -3 2 -2 0], prediction [2 -3 3 -2 1] -> right at 1, 3: 2/5
    assert result["acc7"] == pytest.approx(2 / 5)
    # acc5, clip to [-2, 2] then round:
    #   label [2 -2 2 -2 0], prediction [2 -2 2 -2 1] -> wrong only at 4: 4/5
    assert result["acc5"] == pytest.approx(4 / 5)


def test_rounding_is_half_to_even():
    label = [2.5, -0.5, 0.5, 1.5, -2.5, -1.5]
    prediction = [2.0, 0.0, 0.0, 2.0, -2.0, -2.0]
    # half to even: label -> [2 -0 0 2 -2 -2], equal to prediction everywhere -> 6/6
    # (half away from zero would give [3 -1 1 2 -3 -2] -> 2/6)
    assert regression_metrics(prediction, label)["acc7"] == 1.0


def test_pearson_on_hand_computed_case():
    # means 2.5 and 2.5; deviations x [-1.5 -0.5 0.5 1.5], y [-1.5 0.5 -0.5 1.5]
    # sum dx*dy = 2.25 - 0.25 - 0.25 + 2.25 = 4; sum dx^2 = sum dy^2 = 5
    # r = 4 / sqrt(5 * 5) = 0.8
    assert regression_metrics([1, 2, 3, 4], [1, 3, 2, 4])["corr"] == pytest.approx(0.8)


def test_constant_prediction_gives_corr_nan():
    result = regression_metrics([0.5, 0.5, 0.5, 0.5], [1, -1, 2, 0])
    assert np.isnan(result["corr"])  # undefined, never a fake 0.0
    # mae: (0.5 + 1.5 + 1.5 + 0.5) / 4 = 1
    assert result["mae"] == pytest.approx(1.0)


def test_all_zero_labels_give_nan_non0_metrics():
    result = regression_metrics([0.3, -0.2, 0.0], [0, 0, 0])
    assert math.isnan(result["acc2_non0"]) and math.isnan(result["f1_non0"])
    # has0: label all non-negative; prediction [1 0 1] -> 2/3
    assert result["acc2_has0"] == pytest.approx(2 / 3)


def test_regression_keys_order_and_torch_input():
    prediction = torch.tensor([[1.0], [2.0], [3.0], [4.0]], requires_grad=True)  # (N, 1) model output
    result = regression_metrics(prediction, torch.tensor([1.0, 3.0, 2.0, 4.0]))
    assert tuple(result) == REGRESSION_METRICS
    assert all(type(value) is float for value in result.values())
    assert result["corr"] == pytest.approx(0.8)


@pytest.mark.parametrize(
    "prediction, label",
    [
        ([0.1, 0.2, 0.3], [1, 2]),  # mismatched lengths
        ([], []),  # empty
        ([0.1, float("nan")], [1, 2]),  # non-finite prediction
        ([0.1, float("inf")], [1, 2]),
        (np.zeros((2, 2)), [1, 2]),  # not 1-D
        (["a", "b"], [1, 2]),  # not numeric
    ],
)
def test_regression_rejects_bad_input(prediction, label):
    with pytest.raises(ConfigError):
        regression_metrics(prediction, label)


def test_mismatched_lengths_message_names_both_lengths():
    with pytest.raises(ConfigError, match="Got 3 and 2"):
        regression_metrics([0.1, 0.2, 0.3], [1, 2])


# ------------------------------------------------------------ classification


def test_ua_differs_from_wa_on_imbalanced_labels():
    label = [0, 0, 0, 0, 0, 0, 1, 1]
    prediction = [0, 0, 0, 0, 0, 0, 0, 1]
    result = classification_metrics(prediction, label)
    assert tuple(result) == CLASSIFICATION_METRICS
    # wa: 7 of 8 right
    assert result["wa"] == pytest.approx(7 / 8)
    # ua: recall class 0 = 6/6, class 1 = 1/2 -> (1 + 1/2) / 2
    assert result["ua"] == pytest.approx(0.75)
    # wf1: class 0: P 6/7, R 1 -> F1 = (12/7)/(13/7) = 12/13
    #      class 1: P 1, R 1/2 -> F1 = 1/(3/2) = 2/3
    #      (6 * 12/13 + 2 * 2/3) / 8 = (216/39 + 52/39) / 8 = 268/312 = 67/78
    assert result["wf1"] == pytest.approx(67 / 78)


def test_weighted_f1_equals_sklearn_on_random_labels():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for trial in range(300):
        n, k = rng.integers(1, 40), rng.integers(1, 6)
        label, prediction = rng.integers(0, k, n), rng.integers(0, k + 1, n)  # may predict a class absent from labels
        expected = f1_score(label, prediction, average="weighted", zero_division=0)
        assert classification_metrics(prediction, label, num_classes=k + 1)["wf1"] == pytest.approx(expected, abs=1e-12)
        score = rng.normal(size=n)
        truth = np.where(rng.random(n) < 0.2, 0.0, rng.normal(size=n))
        result = regression_metrics(score, truth)
        assert result["f1_has0"] == pytest.approx(f1_score(truth >= 0, score >= 0, average="weighted", zero_division=0), abs=1e-12)


def test_logits_input_uses_argmax():
    logits = [[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.1, 0.2, 0.9], [5.0, 0.0, 0.0]]
    label = [0, 1, 2, 2]
    # argmax -> [0 1 2 0]; right at 0, 1, 2 -> wa 3/4
    # recall: class 0 1/1, class 1 1/1, class 2 1/2 -> ua (2.5)/3 = 5/6
    # F1: class 0 P 1/2 R 1 -> 2/3; class 1 -> 1; class 2 P 1 R 1/2 -> 2/3
    #     weighted (1 * 2/3 + 1 * 1 + 2 * 2/3) / 4 = 3/4
    expected = {"wa": 3 / 4, "ua": 5 / 6, "wf1": 3 / 4}
    assert classification_metrics(logits, label, num_classes=3) == pytest.approx(expected)
    assert classification_metrics(torch.tensor(logits), torch.tensor(label)) == pytest.approx(expected)
    assert classification_metrics([0, 1, 2, 0], label) == pytest.approx(expected)


def test_ua_ignores_predicted_classes_absent_from_labels():
    # recall class 0 = 1/2, class 1 = 2/2; class 2 is only predicted -> no term
    # ua = (1/2 + 1) / 2 = 3/4 (a zero term for class 2 would give 1/2)
    assert classification_metrics([0, 2, 1, 1], [0, 0, 1, 1])["ua"] == pytest.approx(0.75)


@pytest.mark.parametrize(
    "prediction, label, num_classes",
    [
        ([0, 1, 1], [0, 1], None),  # mismatched lengths
        ([0, 1.5], [0, 1], None),  # not integer
        ([0, -1], [0, 1], None),  # negative
        ([0, 3], [0, 1], 3),  # out of range
        ([[0.1, 0.9], [0.3, 0.7]], [0, 1], 3),  # wrong number of columns
        ([0, 1], [0, 1], 0),  # bad num_classes
    ],
)
def test_classification_rejects_bad_input(prediction, label, num_classes):
    with pytest.raises(ConfigError):
        classification_metrics(prediction, label, num_classes=num_classes)


# ------------------------------------------------------------------- registry


def test_metric_registry():
    from imsa.metrics import SIMS_METRICS

    assert tuple(METRICS) == REGRESSION_METRICS + SIMS_METRICS + CLASSIFICATION_METRICS + MULTILABEL_METRICS
    assert all(isinstance(info, MetricInfo) and info.name == key for key, info in METRICS.items())
    assert [key for key, info in METRICS.items() if not info.higher_is_better] == ["mae", "mae_sims"]
    with pytest.raises(AttributeError):  # frozen
        METRICS["mae"].higher_is_better = True


def test_compute_metrics_dispatch():
    assert compute_metrics("regression", [1, 2, 3, 4], [1, 3, 2, 4])["corr"] == pytest.approx(0.8)
    # label [0 0], prediction [0 1]: wa 1/2; ua = recall of class 0 = 1/2;
    # wf1: class 0 P 1, R 1/2 -> F1 2/3 with support 2; class 1 has support 0 -> 2/3
    assert compute_metrics("classification", [0, 1], [0, 0]) == pytest.approx({"wa": 0.5, "ua": 0.5, "wf1": 2 / 3})
    with pytest.raises(ConfigError, match="classification, multilabel, regression"):
        compute_metrics("ranking", [0], [0])


# ------------------------------------------------------------------- multilabel (IEMOCAP as MulT packs it)


def test_multilabel_metrics_by_hand():
    from sklearn.metrics import f1_score

    # 4 utterances, 2 emotions; utterance 2 has both present, utterance 3 none.
    label = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    logits = np.zeros((4, 2, 2))
    decisions = np.array([[1, 0], [1, 1], [1, 0], [0, 0]])  # emotion 0: 3/4 right; emotion 1: 3/4 right
    logits[np.arange(4)[:, None], np.arange(2), decisions] = 1.0
    scores = multilabel_metrics(logits, label, class_names=("happy", "sad"))
    assert scores["binary_acc_happy"] == pytest.approx(0.75) and scores["binary_acc_sad"] == pytest.approx(0.75)
    # happy: labels 1,0,1,0 predicted 1,1,1,0: class 1 F1 = 2*2/(2*2+1) = 0.8, class 0 F1 = 2/3; weighted 0.5*0.8 + 0.5*2/3
    assert scores["binary_f1_happy"] == pytest.approx(0.5 * 0.8 + 0.5 * 2 / 3)
    # sad: labels 0,1,1,0 predicted 0,1,0,0: class 1 F1 = 2/3, class 0 F1 = 0.8
    assert scores["binary_f1_sad"] == pytest.approx(0.5 * 2 / 3 + 0.5 * 0.8)
    assert scores["emotion_binary_acc"] == pytest.approx(0.75)
    assert scores["emotion_binary_f1"] == pytest.approx(np.mean([scores["binary_f1_happy"], scores["binary_f1_sad"]]))
    assert compute_metrics("multilabel", decisions, label, class_names=("happy", "sad")) == scores
    for k, name in enumerate(("happy", "sad")):
        assert scores[f"binary_f1_{name}"] == pytest.approx(f1_score(label[:, k], decisions[:, k], average="weighted"))


@pytest.mark.parametrize(
    "prediction, label",
    [
        (np.zeros((3, 2, 3)), np.zeros((3, 2))),  # three logits per class
        (np.zeros((3, 2)), np.zeros((3, 3))),  # shapes differ
        (np.full((3, 2), 2), np.zeros((3, 2))),  # not 0/1
    ],
)
def test_multilabel_rejects_bad_input(prediction, label):
    with pytest.raises(ConfigError):
        multilabel_metrics(prediction, label)


# -- CH-SIMS: the field's metric set for sentiment in [-1, 1] ------------------------------------------


def _field_sims(prediction, label):
    """MMSA's CH-SIMS evaluation, re-expressed step by step: clip to [-1, 1], class i for
    edges[i] < x <= edges[i + 1], accuracy of equal classes, weighted F1 of the two classes,
    MAE and numpy's Pearson correlation on the clipped values."""
    from sklearn.metrics import f1_score

    p, t = np.clip(prediction, -1.0, 1.0), np.clip(label, -1.0, 1.0)

    def classes(x, edges):
        out = x.copy()
        for i in range(len(edges) - 1):
            out[np.logical_and(x > edges[i], x <= edges[i + 1])] = i
        return out

    a2 = [-1.01, 0.0, 1.01]
    a3 = [-1.01, -0.1, 0.1, 1.01]
    a5 = [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01]
    return {
        "acc2_sims": np.mean(classes(p, a2) == classes(t, a2)),
        "acc3_sims": np.mean(classes(p, a3) == classes(t, a3)),
        "acc5_sims": np.mean(classes(p, a5) == classes(t, a5)),
        "f1_sims": f1_score(classes(t, a2), classes(p, a2), average="weighted"),
        "mae_sims": np.mean(np.abs(p - t)),
        "corr_sims": np.corrcoef(p, t)[0][1],
    }


@pytest.mark.parametrize("seed", range(5))
def test_sims_metrics_equal_the_fields_definition_on_random_inputs(seed):
    from imsa.metrics import sims_metrics

    rng = np.random.default_rng(seed)
    label = rng.choice([-1.0, -0.8, -0.6, -0.4, -0.2, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0], size=200)
    prediction = np.concatenate([rng.uniform(-1.4, 1.4, 190), [0.0, -0.1, 0.1, -0.7, 0.7, 1.0, -1.0, 1.3, -1.2, 0.0999]])
    ours, theirs = sims_metrics(prediction, label), _field_sims(prediction, label)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-12), key


def test_sims_datasets_get_the_fields_set_and_reports_show_it(synthetic, tmp_path):
    import copy

    from imsa.evaluation import metrics_of
    from imsa.experiments.report import build_tables
    from imsa.experiments.runner import Experiment, run_experiment
    from imsa.experiments.store import load_record
    from imsa.metrics import SIMS_METRICS

    sims = copy.copy(synthetic)
    sims.labels = np.clip(synthetic.labels / 3.0, -1.0, 1.0).astype(np.float32)
    sims.family = "sims"
    test = sims.split(0)["test"]
    scores = metrics_of({"l": test.labels + 0.05}, test)
    assert set(SIMS_METRICS) <= set(scores["l"]) and scores["l"]["mae_sims"] == pytest.approx(0.05, abs=1e-6)
    assert not set(SIMS_METRICS) & set(metrics_of({"l": synthetic.split(0)["test"].labels}, synthetic.split(0)["test"])["l"])
    run_experiment(Experiment(method="late_fusion", dataset="synthetic", config={"epochs": 1}), tmp_path / "run", dataset=sims)
    runs = [(str(p), load_record(p)) for p in (tmp_path / "run" / "runs").glob("*.json")]
    assert {t.metric for t in build_tables(runs)} >= set(SIMS_METRICS)


def test_undefined_metrics_are_nan_in_the_metrics_and_the_significance_tests():
    from imsa.metrics import sims_metrics
    from imsa.significance import paired_bootstrap_p

    x = np.linspace(-3, 3, 1001)
    assert -1.0 <= regression_metrics(x, 3 * x + 1e-9)["corr"] <= 1.0  # clipped where rounding would step past 1
    assert np.isnan(sims_metrics(np.full(5, 2.0), [0.1, -0.2, 0.5, 0.9, -1.0])["corr_sims"])  # constant once clipped
    zeros = regression_metrics([1.0, -1.0, 0.5], [0.0, 0.0, 0.0])
    assert np.isnan(zeros["corr"]) and np.isnan(zeros["acc2_non0"]) and np.isnan(zeros["f1_non0"])
    labels = np.linspace(-2, 2, 20)
    constant = np.full(20, 0.3)
    assert np.isnan(paired_bootstrap_p([(labels, [(constant, constant + 0.1)])], "corr", resamples=50))
    for metric in ("acc2_non0", "f1_non0", "corr"):
        assert np.isnan(paired_bootstrap_p([(np.zeros(20), [(labels, -labels)])], metric, resamples=50)), metric
