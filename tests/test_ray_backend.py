"""The Ray backend, for real: a small grid on a local Ray instance that the backend starts."""

import json

import pytest

from imsa.cli import main
from imsa.experiments.grid import grid_from_dict, run_grid

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[test]' installs it)")

GRID = {
    "methods": ["late_fusion", "early_fusion"],
    "datasets": ["synthetic"],
    "protocols": ["fixed", {"random": [0.0, 0.5]}],
    "seeds": [1],
    "config": {"epochs": 2},
    "dataset_options": {"synthetic": {"num_videos": 20, "max_utterances": 6}},
}


def test_grid_on_a_local_ray_instance_matches_the_sequential_backend(tmp_path, capsys):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(json.dumps(GRID))  # JSON is YAML
    out = tmp_path / "ray"
    assert main(["grid", "run", str(grid_file), "--out", str(out), "--backend", "ray", "--workers", "2", "--quiet"]) == 0
    assert "backend ray" in capsys.readouterr().out
    assert not ray.is_initialized()  # the instance the backend started is stopped again
    files = sorted(p.relative_to(out) for p in out.rglob("runs/*.json"))
    assert len(files) == 2 * 3
    assert all((out / f.parent.parent / "models" / f.with_suffix(".safetensors").name).exists() for f in files)  # the driver wrote the models
    assert all((out / f.parent.parent / "predictions" / f.with_suffix(".npz").name).exists() for f in files)

    # The same runs, trained in this process, give the same numbers (up to float rounding of thread counts).
    sequential = run_grid(grid_from_dict(GRID), tmp_path / "sequential")
    for path in files:
        on_ray = json.loads((out / path).read_text())
        here = json.loads((tmp_path / "sequential" / path).read_text())
        assert on_ray["selected_epochs"] == here["selected_epochs"]
        for setting, metrics in here["metrics"]["test"].items():
            assert on_ray["metrics"]["test"][setting] == pytest.approx(metrics, abs=1e-4)
    assert json.loads((out / "synthetic/late_fusion/fixed/summary.json").read_text())["runs"] == 1
    assert sequential["synthetic/late_fusion/fixed"]["runs"] == 1

    # A finished store needs no cluster: the rerun skips every run without starting Ray.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("runs/*.json")}
    assert main(["grid", "run", str(grid_file), "--out", str(out), "--backend", "ray", "--quiet"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("runs/*.json")} == before


def test_a_search_runs_its_trials_as_ray_tasks(tmp_path):
    import optuna

    from imsa.experiments.tune import run_tune

    result = run_tune(
        "late_fusion", "synthetic", tmp_path / "study", trials=3, workers=2, backend="ray", config={"epochs": 2}, dataset_options={"num_videos": 15}
    )
    assert not ray.is_initialized()  # the instance the search started is stopped again
    study = optuna.load_study(study_name="imsa", storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}")
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    assert result["trials"] >= 3 and len(finished) >= 3 and (tmp_path / "study" / "best.yaml").is_file()
