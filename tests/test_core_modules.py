"""Direct tests of the modules the command line reaches only indirectly: the config builder,
the results store, model files and the experiment runner."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from imsa.config import build_config, config_source, parse_assignments, split_assignments
from imsa.errors import ConfigError, DataError
from imsa.experiments.runner import Experiment, experiment_fingerprint, plan_experiment
from imsa.experiments.store import RunLayout, Stats, format_cell, format_table, load_record, read_predictions, summarize, write_predictions
from imsa.methods.spec import TrainConfig
from imsa.model_files import model_paths, read_model, save_model
from imsa.protocols import Protocol

# -- config --------------------------------------------------------------------------------------


def test_assignments_are_typed_and_split_between_method_and_dataset():
    values = parse_assignments(["lr=3e-4", "patience=none", "data.num_videos=12", "train_missing=dropout:0.3", "grad_clip=1"])
    assert values == {"lr": 3e-4, "patience": None, "data.num_videos": 12, "train_missing": "dropout:0.3", "grad_clip": 1}
    assert split_assignments(values) == ({"lr": 3e-4, "patience": None, "train_missing": "dropout:0.3", "grad_clip": 1}, {"num_videos": 12})


def test_build_config_layers_coerce_and_refuse_with_a_suggestion():
    config = build_config(TrainConfig, {"epochs": 5}, {"lr": 0.01, "epochs": 7})
    assert (config.epochs, config.lr) == (7, 0.01)
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        build_config(TrainConfig, {"epoch": 5})
    with pytest.raises(ConfigError, match="lr"):
        build_config(TrainConfig, {"lr": -1.0})


def test_a_config_source_is_values_a_yaml_file_or_a_packaged_name(tmp_path):
    (tmp_path / "mine.yaml").write_text("dim: 16\n")
    assert config_source({"dim": 8}, "late_fusion") == ({"dim": 8}, None)
    assert config_source(str(tmp_path / "mine.yaml"), "late_fusion") == ({"dim": 16}, None)
    assert config_source("momke/mosi", "momke") == ({}, "momke/mosi")
    with pytest.raises(ConfigError):
        config_source("momke/nowhere", "momke")


# -- store ---------------------------------------------------------------------------------------


def test_stats_and_cells_use_the_sample_deviation_and_skip_non_finite_values():
    stats = Stats.of([1.0, 2.0, 3.0, math.nan])
    assert (stats.mean, stats.std, stats.n) == (2.0, 1.0, 3)
    assert format_cell(stats) == "2.000 ± 1.000"
    assert Stats.of([]).n == 0 and format_cell(None) == "–"


def test_predictions_round_trip_as_plain_arrays(tmp_path):
    path = tmp_path / "p.npz"
    predictions = {"test": {"l": np.array([0.5, -1.0]), "l,a": np.array([0.25, 0.0])}, "valid": {"l": np.array([1.0])}}
    write_predictions(path, predictions, {"test": ["u1", "u2"], "valid": ["u3"]}, {"test": np.array([1.0, -2.0]), "valid": np.array([0.0])})
    back = read_predictions(path)
    assert list(back["test"]["ids"]) == ["u1", "u2"] and np.array_equal(back["test"]["l,a"], [0.25, 0.0])
    with np.load(path, allow_pickle=False) as archive:  # nothing in it needs unpickling
        assert set(archive.files) >= {"test.ids", "test.labels", "test.l", "valid.l"}


def test_a_damaged_run_file_is_one_error_naming_it(tmp_path):
    path = tmp_path / "seed1-fold0.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="seed1-fold0.json: unreadable run file"):
        load_record(path)
    path.write_text(json.dumps({"seed": 1}))
    with pytest.raises(ConfigError, match="not an imsa run file"):
        load_record(path)


def test_summaries_and_tables_of_real_runs(tmp_path, synthetic):
    from imsa.experiments.runner import run_experiment

    experiment = Experiment(method="late_fusion", dataset="synthetic", seeds=(1, 2), config={"epochs": 1})
    summary = run_experiment(experiment, tmp_path / "run", dataset=synthetic)
    records = [load_record(p) for p in sorted((tmp_path / "run" / "runs").glob("*.json"))]
    again = summarize(records)
    assert again["runs"] == 2 and again["test"] == summary["test"]
    assert again["test"]["l"]["mae"]["n"] == 2
    table = format_table(summary, "test", ["mae"], markdown=True)
    assert table.splitlines()[0] == "| setting | mae |" and "l,a,v" in table
    layout = RunLayout(tmp_path / "run")
    assert layout.summary.is_file() and layout.summary_csv.read_text().startswith("split,setting,metric,mean,std,n")


# -- model files ---------------------------------------------------------------------------------


def test_model_files_round_trip_without_pickle_and_refuse_damage(tmp_path):
    state = {"method": "late_fusion", "config": {"dim": 4}, "spec": {"modalities": ["l"]}, "model": {"w": torch.arange(6.0).reshape(2, 3)}, "extra": [1, 2]}
    document = save_model(state, tmp_path / "m", dataset="synthetic", seed=1)
    weights, same = model_paths(tmp_path / "m.safetensors")
    assert same == document and weights.is_file()
    back, provenance = read_model(document)
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["extra"] == [1, 2] and provenance == {"dataset": "synthetic", "seed": 1}
    weights.write_bytes(b"\x00" * 16)
    with pytest.raises(DataError, match="damaged weights file"):
        read_model(document)
    document.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(DataError, match="not an imsa model document"):
        read_model(document)


# -- runner --------------------------------------------------------------------------------------


def test_planning_checks_folds_and_protocols_before_any_training(tmp_path, synthetic):
    with pytest.raises(ConfigError, match="fold 3 does not exist"):
        plan_experiment(Experiment(method="late_fusion", dataset="synthetic", folds=(3,)), tmp_path / "a", synthetic)
    with pytest.raises(ConfigError, match="gcnet does not run under the frames protocol"):
        plan_experiment(Experiment(method="gcnet", dataset="synthetic", protocol=Protocol("frames", rate=0.3)), tmp_path / "b", synthetic)
    specs = plan_experiment(Experiment(method="late_fusion", dataset="synthetic", seeds=(1, 2)), tmp_path / "c", synthetic)
    assert [s.key for s in specs] == ["seed1-fold0", "seed2-fold0"] and not any(s.done for s in specs)
    assert len({s.identity for s in specs}) == 1
    resolved = json.loads(json.dumps(__import__("yaml").safe_load((tmp_path / "c" / "config.yaml").read_text())))
    assert experiment_fingerprint(resolved) == specs[0].identity
