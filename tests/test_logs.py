"""Experiment logging: --log csv always; TensorBoard and MLflow where their extras are installed."""

from __future__ import annotations

import csv

import pytest

from imsa.cli import main
from imsa.errors import ConfigError
from imsa.logs import check_loggers
from imsa.training import RunContext

ARGS = ["run", "--method", "late_fusion", "--dataset", "synthetic", "--seeds", "1", "--set", "epochs=4", "--set", "data.num_videos=20", "--quiet"]


def test_csv_log_mirrors_every_epoch_and_the_final_metrics(tmp_path):
    assert main(ARGS + ["--out", str(tmp_path), "--log", "csv"]) == 0
    with open(tmp_path / "logs" / "seed1-fold0" / "epochs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3] and {r["phase"] for r in rows} == {"train"}
    assert all(float(r["lr"]) == 1e-3 for r in rows) and float(rows[-1]["loss"]) < float(rows[0]["loss"])
    with open(tmp_path / "logs" / "seed1-fold0" / "final.csv", newline="") as f:
        final = {(r["split"], r["setting"], r["metric"]): float(r["value"]) for r in csv.DictReader(f)}
    import json

    record = json.loads((tmp_path / "runs" / "seed1-fold0.json").read_text())
    assert final[("test", "mean", "mae")] == pytest.approx(record["metrics"]["test"]["mean"]["mae"])


def test_loggers_are_checked_before_training(monkeypatch):
    with pytest.raises(ConfigError, match="Unknown logger 'wandb'"):
        RunContext(log=("wandb",))
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r'pip install "imsa\[tensorboard\]"'):
        check_loggers(("csv", "tensorboard"))


def test_tensorboard_log_holds_the_curves(tmp_path):
    pytest.importorskip("tensorboard", reason='the tensorboard extra is not installed (pip install "imsa[tensorboard]")')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(ARGS + ["--out", str(tmp_path), "--log", "tensorboard"]) == 0
    events = EventAccumulator(str(tmp_path / "logs" / "seed1-fold0" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [0, 1, 2, 3]
    assert "test/mae" in events.Tags()["scalars"]


def test_mlflow_log_holds_one_run_with_its_config(tmp_path):
    pytest.importorskip("mlflow", reason='the mlflow extra is not installed (pip install "imsa[mlflow]")')
    pytest.importorskip("sqlalchemy", reason='the mlflow extra is not installed (pip install "imsa[mlflow]")')
    import mlflow

    assert main(ARGS + ["--out", str(tmp_path), "--log", "mlflow"]) == 0
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) == 1 and runs[0].info.run_name == "seed1-fold0" and runs[0].data.params["epochs"] == "4"
    history = mlflow.MlflowClient().get_metric_history(runs[0].info.run_id, "train_loss")
    assert [m.step for m in history] == [0, 1, 2, 3] and "test_mae" in runs[0].data.metrics
