"""imsa tune: validation only (the test split is never built), resumable studies, outputs, bad input."""

from __future__ import annotations

import optuna
import pytest
import yaml

from imsa.cli import main
from imsa.data import dataset as dataset_module
from imsa.errors import ConfigError
from imsa.experiments import tune
from imsa.protocols import Protocol

OPTIONS = dict(config={"epochs": 2}, dataset_options={"num_videos": 15}, seeds=(1,))


@pytest.fixture
def no_test_split(monkeypatch):
    """A dataset whose test videos cannot become a subset, and whose split() cannot be called."""
    real = dataset_module.Subset.__init__

    def guarded(self, dataset, videos):
        videos = list(videos)
        for fold in dataset.folds:
            if set(videos) & set(fold.test):
                raise AssertionError("the search touched test videos")
        real(self, dataset, videos)

    monkeypatch.setattr(dataset_module.Subset, "__init__", guarded)
    monkeypatch.setattr(dataset_module.Dataset, "split", lambda self, fold=0: (_ for _ in ()).throw(AssertionError("the search built the test split")))


def test_the_search_never_touches_test_data(tmp_path, no_test_split):
    result = tune.run_tune("late_fusion", "synthetic", tmp_path / "study", trials=3, protocol=Protocol("random", rate=0.3), **OPTIONS)
    assert result["trials"] == 3 and result["metric"] == "mae"
    with pytest.raises(AssertionError, match="test"):  # the guard is real: the final retrain scores test
        tune.run_tune("late_fusion", "synthetic", tmp_path / "study", trials=3, protocol=Protocol("random", rate=0.3), final_seeds=(1,), **OPTIONS)


def test_a_search_resumes_and_redoes_a_killed_trial(tmp_path):
    out = tmp_path / "study"
    tune.run_tune("late_fusion", "synthetic", out, trials=2, **OPTIONS)
    study = optuna.load_study(study_name=tune.STUDY, storage=f"sqlite:///{out / 'study.db'}")
    first = [t.params for t in study.get_trials()]
    killed = study.ask()  # a trial left running by a killed process
    killed_params = {"lr": killed.suggest_float("lr", 1e-4, 1e-2, log=True)}
    result = tune.run_tune("late_fusion", "synthetic", out, trials=4, **OPTIONS)
    study = optuna.load_study(study_name=tune.STUDY, storage=f"sqlite:///{out / 'study.db'}")
    trials = study.get_trials()
    assert result["trials"] == 4 and [t.params for t in trials[:2]] == first
    assert trials[2].state == optuna.trial.TrialState.FAIL
    assert any(t.params.get("lr") == killed_params["lr"] and t.state == optuna.trial.TrialState.COMPLETE for t in trials[3:])
    for name in ("best.yaml", "trials.csv", "history.png", "importances.json"):
        assert (out / name).is_file()
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["validation"] == pytest.approx(result["best_value"]) and best["config"]["epochs"] == 2
    with pytest.raises(ConfigError, match="holds another search"):
        tune.run_tune("late_fusion", "synthetic", out, trials=4, protocol=Protocol("random", rate=0.5), **OPTIONS)


def test_tune_command_retrains_the_best_config_into_a_run_directory(tmp_path, capsys):
    out = tmp_path / "study"
    assert (
        main(
            [
                "tune",
                "--method",
                "early_fusion",
                "--dataset",
                "synthetic",
                "--trials",
                "2",
                "--out",
                str(out),
                "--set",
                "epochs=2",
                "--set",
                "data.num_videos=15",
                "--final-seeds",
                "1",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    assert "best validation mae" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "final" / "runs").iterdir()) == ["seed1-fold0.json", "seed2-fold0.json"]
    assert main(["show", str(out / "final")]) == 0


def test_bad_search_spaces_are_refused(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("lr: {low: 1.0, high: 0.1}\n")
    with pytest.raises(ConfigError, match="expected {low: A, high: B"):
        tune.load_space("late_fusion", space)
    space.write_text("learning_rate: {low: 0.1, high: 1.0}\n")
    with pytest.raises(ConfigError, match="not a config key of late_fusion"):
        tune.load_space("late_fusion", space)
    from imsa.methods import list_methods

    for method in list_methods():  # every method ships a valid default space
        assert tune.load_space(method)


def test_a_grid_runs_a_tuned_config_and_the_report_states_every_budget(tmp_path):
    from imsa.experiments.grid import grid_from_dict, run_grid
    from imsa.experiments.report import write_report

    study = tmp_path / "study"
    result = tune.run_tune("late_fusion", "synthetic", study, trials=2, **OPTIONS)
    grid = grid_from_dict(
        {
            "methods": ["late_fusion", "early_fusion"],
            "datasets": ["synthetic"],
            "protocols": ["fixed"],
            "seeds": [1],
            "config": {"epochs": 2},
            "dataset_options": {"synthetic": {"num_videos": 15}},
            "tuned": {"late_fusion": str(study)},
        }
    )
    run_grid(grid, tmp_path / "store")
    record = yaml.safe_load((tmp_path / "store" / "synthetic" / "late_fusion" / "fixed" / "runs" / "seed1-fold0.json").read_text())
    assert record["search"]["trials"] == 2 and record["config"]["lr"] == pytest.approx(result["best_config"]["lr"])
    md = write_report(tmp_path / "store")["markdown"].read_text()
    assert "| late_fusion (tuned, 2 trials) |" in md and "| early_fusion (not tuned) |" in md
    with pytest.raises(ConfigError, match="searched late_fusion on synthetic"):
        grid_from_dict({"methods": ["early_fusion"], "datasets": ["synthetic"], "protocols": ["fixed"], "seeds": [1], "tuned": {"early_fusion": str(study)}})


def test_a_grid_searches_every_method_with_the_same_budget_before_its_runs(tmp_path):
    from imsa.experiments.grid import grid_from_dict, run_grid
    from imsa.experiments.report import write_report

    data = {
        "methods": ["late_fusion", "early_fusion"],
        "datasets": ["synthetic"],
        "protocols": ["fixed"],
        "seeds": [1],
        "folds": [0],
        "config": {"epochs": 2},
        "dataset_options": {"synthetic": {"num_videos": 15}},
        "tune": {"trials": 2},
    }
    grid = grid_from_dict(data)
    assert grid.tune_methods == ("late_fusion", "early_fusion") and grid_from_dict(grid.to_dict()).tune == {"trials": 2}
    run_grid(grid, tmp_path / "store")
    for method in grid.methods:
        best = yaml.safe_load((tmp_path / "store" / "tune" / "synthetic" / method / "best.yaml").read_text())
        record = yaml.safe_load((tmp_path / "store" / "synthetic" / method / "fixed" / "runs" / "seed1-fold0.json").read_text())
        assert record["search"]["trials"] == 2 and record["config"]["lr"] == pytest.approx(best["config"]["lr"])
    md = write_report(tmp_path / "store")["markdown"].read_text()
    assert "| late_fusion (tuned, 2 trials) |" in md and "| early_fusion (tuned, 2 trials) |" in md
    for bad, match in (({"trials": 0}, "trials: N"), ({"trials": 2, "methods": ["momke"]}, "not in this grid"), ({"trials": 2, "sampler": "tpe"}, "trials: N")):
        with pytest.raises(ConfigError, match=match):
            grid_from_dict({**data, "tune": bad})
