"""Model files, `imsa predict` and per-utterance predictions: a trained model is usable and safe."""

import csv
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

import imsa
from imsa.cli import main
from imsa.errors import ConfigError, DataError
from imsa.experiments.store import read_predictions
from imsa.methods import create_method
from imsa.metrics import compute_metrics
from imsa.model_files import model_paths, read_model

TINY = {
    "late_fusion": ["--set", "epochs=4"],
    "momke": ["--set", "epochs=2", "--set", "stage1_epochs=2", "--set", "dim=16", "--set", "depth=1"],
}
DATA = ["--set", "data.num_videos=24", "--set", "data.max_utterances=6"]


def train(tmp_path, method, *extra):
    out = tmp_path / method
    assert main(["run", "--method", method, "--out", str(out), "--quiet", *TINY[method], *DATA, *extra]) == 0
    return out


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Payload:
    """Unpickling this writes a file: the proof that a pickle ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def evil_pickle(path, marker):
    path.write_bytes(pickle.dumps({"model": Payload(marker), "method": "late_fusion"}))


@pytest.mark.parametrize("method", ["late_fusion", "momke"])
@pytest.mark.parametrize("modalities", ["l", "l,a,v"])
def test_predict_csv_holds_the_test_utterances_and_reproduces_the_runs_numbers(tmp_path, capsys, method, modalities):
    out = train(tmp_path, method)
    csv_path = tmp_path / "preds.csv"
    assert main(["predict", str(out), "--modalities", modalities, "--out", str(csv_path)]) == 0
    rows = read_csv(csv_path)
    record = json.loads((out / "runs" / "seed1-fold0.json").read_text())
    stored = read_predictions(out / "predictions" / "seed1-fold0.npz")["test"]
    assert [r["utterance_id"] for r in rows] == list(stored["ids"])  # exactly the test utterances, in order
    assert len(rows) == record["sizes"]["test"]
    assert {r["modalities"] for r in rows} == {modalities}
    prediction = np.asarray([float(r["prediction"]) for r in rows], dtype=np.float32)
    label = np.asarray([float(r["label"]) for r in rows], dtype=np.float32)
    recomputed = compute_metrics("regression", prediction, label)
    for metric, value in record["metrics"]["test"][modalities].items():
        assert recomputed[metric] == pytest.approx(value, abs=1e-6), metric


def test_stored_predictions_give_the_recorded_metrics(tmp_path):
    out = train(tmp_path, "late_fusion", "--set", "data.num_classes=3")
    record = json.loads((out / "runs" / "seed1-fold0.json").read_text())
    stored = read_predictions(out / "predictions" / "seed1-fold0.npz")
    for split in ("valid", "test"):
        for setting, metrics in record["metrics"][split].items():
            if setting == "mean":
                continue
            recomputed = compute_metrics("classification", stored[split][setting], stored[split]["labels"])
            assert recomputed == pytest.approx(metrics), (split, setting)


def test_load_method_gives_a_model_file_or_every_model_of_a_run_directory(tmp_path):
    out = train(tmp_path, "late_fusion", "--seeds", "1", "2")
    runs = imsa.load_method(out)
    assert [(seed, fold) for seed, fold, _ in runs.models] == [(1, 0), (2, 0)]
    single = imsa.load_method(out / "models" / "seed2-fold0.json")
    assert single.provenance_["seed"] == 2 and single.provenance_["dataset"] == "synthetic"
    from imsa.data.registry import load_dataset

    data = load_dataset("synthetic", num_videos=24, max_utterances=6)
    test = data.split(0)["test"]
    a, b = runs.models[1][2].predict_dataset(test, ("l",)), single.predict_dataset(test, ("l",))
    assert np.array_equal(a.values, b.values) and a.utterance_ids == b.utterance_ids
    assert not (out / "models" / "seed1-fold0.pt").exists()  # no pickles are written


def test_ensemble_averages_the_models_of_a_run_directory(tmp_path):
    out = train(tmp_path, "late_fusion", "--seeds", "1", "2")
    each, mean = tmp_path / "each.csv", tmp_path / "mean.csv"
    assert main(["predict", str(out), "--out", str(each)]) == 0
    assert main(["predict", str(out), "--ensemble", "mean", "--out", str(mean)]) == 0
    rows, averaged = read_csv(each), read_csv(mean)
    assert len(rows) == 2 * len(averaged)
    by_id = {}
    for r in rows:
        by_id.setdefault(r["utterance_id"], []).append(float(r["prediction"]))
    for r in averaged:
        assert float(r["prediction"]) == pytest.approx(np.mean(by_id[r["utterance_id"]]), abs=1e-6)
        assert r["models"] == "2"


def test_predict_new_utterances_from_an_npz_with_missing_modalities(tmp_path, capsys):
    out = train(tmp_path, "late_fusion", "--set", "data.num_classes=3")
    model = out / "models" / "seed1-fold0.json"
    spec = read_model(model)[0]["spec"]
    rng = np.random.default_rng(0)
    l = rng.standard_normal((4, spec["dims"]["l"])).astype(np.float32)
    a = rng.standard_normal((4, spec["dims"]["a"])).astype(np.float32)
    a[1] = np.nan  # utterance u1 has no audio
    features = tmp_path / "new.npz"
    np.savez(features, utterance_ids=np.array(["u0", "u1", "u2", "u3"]), video_ids=np.array(["v", "v", "w", "w"]), l=l, a=a)  # no video at all
    csv_path = tmp_path / "new.csv"
    assert main(["predict", str(model), "--features", str(features), "--out", str(csv_path)]) == 0
    rows = read_csv(csv_path)
    assert [r["utterance_id"] for r in rows] == ["u0", "u1", "u2", "u3"]
    assert [r["modalities"] for r in rows] == ["l,a", "l", "l,a", "l,a"]
    assert all(r["label"] == "" for r in rows)
    for r in rows:
        probabilities = [float(r[k]) for k in r if k.startswith("prob_")]
        assert len(probabilities) == 3 and sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        assert r["prediction"] == ["class0", "class1", "class2"][int(np.argmax(probabilities))]
    # the NaN row is the explicit absence: the same as not giving audio for u1 at all
    method = imsa.load_method(model)
    from imsa.predictions import read_features

    dataset, present = read_features(features, method.spec_)
    assert present.tolist() == [[True, True, False], [True, False, False], [True, True, False], [True, True, False]]


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"utterance_ids": ["u0"], "l": "wrong-dim"}, "has shape (1, 3); this model needs (1, "),
        ({"utterance_ids": ["u0"], "x": "ok"}, "unknown array(s) x"),
        ({"l": "ok"}, "no 'utterance_ids' array"),
        ({"utterance_ids": ["u0"], "l": "nan"}, "have no modality at all"),
    ],
)
def test_bad_features_file_is_one_clear_line(tmp_path, capsys, arrays, message):
    out = train(tmp_path, "late_fusion")
    model = out / "models" / "seed1-fold0.json"
    dim = read_model(model)[0]["spec"]["dims"]["l"]
    values = {"ok": np.zeros((1, dim), np.float32), "wrong-dim": np.zeros((1, 3), np.float32), "nan": np.full((1, dim), np.nan, np.float32)}
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: (np.array(v) if isinstance(v, list) else values.get(v, v)) for k, v in arrays.items()})
    assert main(["predict", str(model), "--features", str(path), "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and len(err.strip().splitlines()) == 1


def test_modalities_the_model_lacks_are_refused(synthetic_la):
    split = synthetic_la.split(0)
    model = create_method("late_fusion", epochs=1).fit(split["train"], split["valid"], seed=1)
    with pytest.raises(ConfigError, match="'v' is not among the modalities of this late_fusion model; give a comma-separated subset of l,a"):
        model.predict_dataset(split["test"], modalities=("l", "v"))


def test_a_dataset_of_another_shape_is_refused(tmp_path, capsys):
    out = train(tmp_path, "late_fusion")
    assert main(["predict", str(out), "--dataset", "synthetic", "--set", "data.num_classes=3", "--out", str(tmp_path / "x.csv")]) == 2
    assert "this late_fusion model was trained on task regression" in capsys.readouterr().err


def test_malicious_pickles_as_model_or_checkpoint_are_refused_and_never_run(tmp_path, capsys):
    out = train(tmp_path, "late_fusion")
    marker = tmp_path / "pwned"
    # as a model file of the previous format
    weights, document = model_paths(out / "models" / "seed1-fold0")
    weights.unlink()
    document.unlink()
    evil_pickle(out / "models" / "seed1-fold0.pt", marker)
    with pytest.raises(DataError, match="refused: not a plain tensor file"):
        imsa.load_method(out / "models" / "seed1-fold0.pt")
    assert main(["predict", str(out), "--out", str(tmp_path / "x.csv")]) == 2
    assert "seed1-fold0.pt: refused" in capsys.readouterr().err
    assert main(["report", str(out)]) == 0  # reports read run records, never models
    # as a resume checkpoint
    (out / "runs" / "seed1-fold0.json").unlink()
    checkpoint = out / "checkpoints" / "seed1-fold0" / "train.pt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    evil_pickle(checkpoint, marker)
    assert main(["run", "--out", str(out), "--quiet", *TINY["late_fusion"], *DATA]) == 2
    err = capsys.readouterr().err
    assert "train.pt: refused: not a plain tensor checkpoint" in err and "Delete it" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists(), "a pickle ran code"


def test_legacy_model_files_of_plain_tensors_still_load(tmp_path, caplog):
    out = train(tmp_path, "late_fusion")
    method = imsa.load_method(out / "models" / "seed1-fold0.json")
    torch.save(method.state_dict(), out / "legacy.pt")
    legacy = imsa.load_method(out / "legacy.pt")
    assert "a model file of imsa 0.1" in caplog.text
    state, other = method.state_dict()["model"], legacy.state_dict()["model"]
    assert all(torch.equal(state[k], other[k]) for k in state)


def test_damaged_model_files_are_one_clear_line(tmp_path):
    out = train(tmp_path, "late_fusion")
    weights, document = model_paths(out / "models" / "seed1-fold0")
    weights.write_bytes(b"not safetensors")
    with pytest.raises(DataError, match="damaged weights file"):
        imsa.load_method(document)
    document.write_text("{")
    with pytest.raises(DataError, match="unreadable model document"):
        imsa.load_method(document)
    result = subprocess.run([sys.executable, "-m", "imsa.cli", "predict", str(document), "--out", str(tmp_path / "x.csv")], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "unreadable model document" in result.stderr
