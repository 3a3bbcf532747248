"""benchmarks/reference/momke_released.py: skipped cleanly without the authors' code, and
its selection of the released code's epochs looks at validation data only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reference" / "momke_released.py"


def load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("momke_released", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_repository_nothing_runs_and_it_says_so(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out.json")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "no --repo given" in done.stdout
    assert not (tmp_path / "out.json").exists()
    missing = subprocess.run([sys.executable, str(SCRIPT), "--repo", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "MoMKE/train_MoMKE.py" in missing.stderr


def test_released_epochs_are_chosen_on_validation_among_stage2_epochs(tmp_path):
    script = load_script()
    labels = np.array([-2.0, -1.0, 1.0, 2.0, -1.5, 1.5])
    split = np.array(["valid"] * 4 + ["test"] * 2)
    # epoch 0: stage 1, perfect everywhere (never eligible); epoch 1: valid good, test bad;
    # epoch 2: valid bad, test perfect; epoch 3: valid best by MAE, valid F1 as epoch 1.
    predictions = np.array(
        [
            labels,
            [-1.9, -1.1, 1.1, 1.9, 1.0, -1.0],
            [2.0, 2.0, -2.0, -2.0, -1.5, 1.5],
            [-2.0, -1.0, 1.0, 2.05, 0.5, 0.5],
        ]
    )
    path = tmp_path / "released.npz"
    np.savez(path, utterances=np.arange(6).astype(str), split=split, labels=labels, stage=np.array([1, 2, 2, 2]), predictions=predictions)
    scores = script.released_scores(path)
    assert scores["by_valid_f1_non0"]["epoch"] == 1 and scores["by_valid_f1_non0"]["stage2_epoch"] == 0  # first of the tied best
    assert scores["by_valid_mae"]["epoch"] == 3
    assert scores["by_valid_f1_non0"]["mae"] == pytest.approx(2.5)  # test |1.0 + 1.5|, |-1.0 - 1.5|
    assert scores["by_valid_mae"]["acc2_has0"] == pytest.approx(0.5)
