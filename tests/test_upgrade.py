"""An upgrade never strands a user's runs: artefacts written by imsa 0.4.0 (``tests/fixtures/v0.4.0``)
resume under this release without training their finished runs again, and their models
still load and predict."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from imsa.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "v0.4.0"
RUN = ["run", "--quiet", "--seeds", "1", "2", "--set", "epochs=2", "--set", "dim=8", "--set", "data.num_videos=12"]
GRID = [
    "grid",
    "run",
    "--methods",
    "late_fusion",
    "early_fusion",
    "--datasets",
    "synthetic",
    "--protocols",
    "fixed",
    "random:0.3",
    "--seeds",
    "1",
    "--set",
    "epochs=2",
    "--set",
    "dim=8",
    "--set",
    "data.num_videos=12",
    "--quiet",
]


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture
def old(tmp_path):
    """A copy of the 0.4.0 artefacts (the fixtures themselves are never written)."""
    shutil.copytree(FIXTURES, tmp_path / "v0.4.0")
    return tmp_path / "v0.4.0"


def test_a_run_directory_of_0_4_0_resumes_without_training(old, capsys):
    runs = old / "run" / "runs"
    before = contents(runs)
    assert main([*RUN, "--out", str(old / "run")]) == 0
    assert "All 2 runs had finished earlier" in capsys.readouterr().out
    assert contents(runs) == before


def test_a_half_finished_run_directory_of_0_4_0_trains_only_what_is_missing(old, capsys):
    (old / "run" / "runs" / "seed2-fold0.json").unlink()
    kept = (old / "run" / "runs" / "seed1-fold0.json").read_bytes()
    assert main([*RUN, "--out", str(old / "run")]) == 0
    assert "1 of 2 runs had finished earlier" in capsys.readouterr().out
    assert (old / "run" / "runs" / "seed1-fold0.json").read_bytes() == kept
    assert (old / "run" / "runs" / "seed2-fold0.json").is_file()


def test_a_grid_store_of_0_4_0_resumes_and_reports(old, capsys):
    store = old / "store"
    before = {k: v for k, v in contents(store).items() if "/runs/" in k}
    assert main([*GRID, "--out", str(store)]) == 0
    assert "All 4 runs had finished earlier" in capsys.readouterr().out
    assert {k: v for k, v in contents(store).items() if "/runs/" in k} == before
    assert main(["report", str(store), "--metrics", "mae"]) == 0
    assert "early_fusion" in (store / "report" / "report.md").read_text()


def test_models_of_0_4_0_load_and_predict(old, tmp_path, capsys):
    assert main(["predict", str(old / "run"), "--out", str(tmp_path / "p.csv")]) == 0
    assert "predictions from 2 model(s)" in capsys.readouterr().out


def test_a_tuning_study_of_0_4_0_continues(old, capsys):
    import optuna

    tune = [
        "tune",
        "--method",
        "late_fusion",
        "--dataset",
        "synthetic",
        "--out",
        str(old / "study"),
        "--quiet",
        "--set",
        "epochs=2",
        "--set",
        "dim=8",
        "--set",
        "data.num_videos=12",
    ]
    storage = f"sqlite:///{old / 'study' / 'study.db'}"

    def trials():
        return len(optuna.load_study(study_name=None, storage=storage).trials)

    assert trials() == 2
    assert main([*tune, "--trials", "2"]) == 0
    assert trials() == 2  # finished: nothing trained again
    assert main([*tune, "--trials", "3"]) == 0
    assert trials() == 3


@pytest.mark.parametrize("depth", ["layers=1", "depth=1"])
def test_a_dicmor_run_of_0_4_0_resumes_under_the_renamed_keys(old, capsys, depth):
    options = ["dim=8", "heads=2", depth, "conv_kernel=3", "flow_steps=2", "flow_hidden=8", "rec_blocks=1", "rec_reduction=4", "pretrain_epochs=1"]
    options += ["epochs=1", "per_condition=false", "data.num_videos=12", "data.sequence_length=6", "data.aligned=true"]
    args = ["run", "--method", "dicmor", "--quiet", "--out", str(old / "dicmor")] + [a for o in options for a in ("--set", o)]
    assert main(args) == 0
    assert "The run had finished earlier" in capsys.readouterr().out
