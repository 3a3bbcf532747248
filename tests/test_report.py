"""Reports: paper tables traceable to their run files, plots, metric choice, bad input."""

import csv
import json

import numpy as np
import pytest
import yaml

from imsa.cli import main
from imsa.experiments.grid import grid_from_dict, run_grid
from imsa.experiments.report import DEFAULT_METRICS, write_report

CONDITIONS = ["l", "a", "v", "l,a", "l,v", "a,v", "l,a,v"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A finished tiny grid: 2 methods x (fixed + 2 rates) x 2 seeds on synthetic data."""
    out = tmp_path_factory.mktemp("store")
    grid = grid_from_dict(
        {
            "methods": ["early_fusion", "late_fusion"],
            "datasets": ["synthetic"],
            "protocols": ["fixed", {"random": [0.0, 0.5]}],
            "seeds": [1, 2],
            "config": {"epochs": 2},
            "dataset_options": {"synthetic": {"num_videos": 20, "max_utterances": 6}},
        }
    )
    run_grid(grid, out)
    return out


def _cells(report_dir):
    with open(report_dir / "cells.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_report_writes_tables_in_paper_layout_and_plots(store, capsys):
    assert main(["report", str(store)]) == 0
    printed = capsys.readouterr().out
    report = store / "report"
    md = (report / "report.md").read_text()
    # conditions as columns plus their average, one row per method, in the grid's order
    assert "| method | l | a | v | l,a | l,v | a,v | l,a,v | avg (7) |" in md
    assert "| method | 0.0 | 0.5 | avg (2 rates) |" in md
    assert md.index("| early_fusion |") < md.index("| late_fusion |")
    for metric in DEFAULT_METRICS["regression"]:
        assert f"### {metric} (" in md
    assert "acc2_has0 (Acc-2 negative (<0) vs non-negative (>=0), all samples; higher is better)" in md
    assert "acc2_non0 (Acc-2 negative vs positive (x > 0), samples with label 0 removed" in md
    assert "| method | l | a | v |" in printed and "rate_curve.png" in printed
    tex = (report / "report.tex").read_text()
    assert r"\begin{tabular}{lcccccccc}" in tex and r"acc2\_has0" in tex and r"$\pm$" in tex and tex.count(r"\begin{table}") == md.count("### ")
    with open(report / "fixed.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {"early_fusion", "late_fusion"} and "l,a,v mean" in rows[0] and rows[0]["avg (7) n"] == "2"
    for name in ("rate_curve.png", "conditions.png"):
        data = (report / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_every_cell_is_the_mean_and_std_of_the_run_files_it_lists(store):
    write_report(store)
    cells = _cells(store / "report")
    assert {c["protocol"] for c in cells} == {"fixed", "random"}
    md = (store / "report" / "report.md").read_text()
    for cell in cells:
        runs = cell["runs"].split(";")
        records = [json.loads((store / r).read_text()) for r in runs]
        if cell["column"].startswith("avg") and cell["protocol"] == "random":
            # average over the rates of each (seed, fold), then over seeds x folds
            per_run = {}
            for r in records:
                setting = f"rate={r['protocol']['rate']:g}"
                per_run.setdefault((r["seed"], r["fold"]), []).append(r["metrics"][cell["split"]][setting][cell["metric"]])
            values = [np.mean(v) for v in per_run.values()]
        elif cell["protocol"] == "random":
            assert all(f"{r['protocol']['rate']:.1f}" == cell["column"] for r in records)
            values = [next(iter(r["metrics"][cell["split"]].values()))[cell["metric"]] for r in records]
        else:
            setting = "mean" if cell["column"] == "avg (7)" else cell["column"]
            values = [r["metrics"][cell["split"]][setting][cell["metric"]] for r in records]
        assert all(r["method"] == cell["method"] and r["dataset"] == cell["dataset"] for r in records)
        assert len(values) == int(cell["n"]) == 2
        assert float(cell["mean"]) == pytest.approx(np.mean(values), abs=1e-6)
        assert float(cell["std"]) == pytest.approx(np.std(values, ddof=1), abs=1e-6)
        if cell["metric"] == "mae" and cell["column"] == "l,a,v":
            assert f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" in md


def test_user_picks_metrics_and_split(store, tmp_path, capsys):
    assert main(["report", str(store), "--metrics", "mae", "acc2_non0", "--split", "valid", "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert md.count("### ") == 4 and "### mae (" in md and "### acc2_non0 (" in md and "valid split" in md and "acc2_has0" not in md
    assert {c["split"] for c in _cells(tmp_path / "r")} == {"valid"}
    assert main(["report", str(store), "--metrics", "acc2", "--out", str(tmp_path / "bad")]) == 2
    assert (
        "Unknown metric 'acc2'. Did you mean 'acc2_has0' or 'acc2_non0' or 'acc2_sims'? Valid metrics: mae, corr, acc7, acc5, acc2_has0"
        in capsys.readouterr().err
    )


def test_classification_defaults_and_a_single_run_directory(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--set", "epochs=2", "--set", "data.num_videos=20", "--set", "data.num_classes=3", "--quiet"]) == 0
    written = write_report(out)
    md = written["markdown"].read_text()
    assert [line.split(" (")[0] for line in md.splitlines() if line.startswith("### ")] == [f"### {m}" for m in DEFAULT_METRICS["classification"]]
    assert "conditions" in written and "rate_curve" not in written  # no random-rate runs, no curve


def test_report_of_a_directory_without_runs_is_an_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert f"{tmp_path}: no run files (runs/seedS-foldF.json) found" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_grid_file_keeps_the_row_order(store):
    assert yaml.safe_load((store / "grid.yaml").read_text())["methods"] == ["early_fusion", "late_fusion"]


def test_report_cells_show_mean_and_std_and_a_single_run_alone():
    """`imsa report` and `imsa show` share one statistic and one cell format (imsa.experiments.store)."""
    from imsa.experiments.report import Cell
    from imsa.experiments.store import Stats, format_cell

    assert format_cell(Cell(values=[0.5, 0.7], runs=["a", "b"]).stats, 3) == "0.600 ± 0.141"
    assert format_cell(Cell(values=[0.5], runs=["a"]).stats, 3) == "0.500"
    assert format_cell(None, 3) == "–"
    assert format_cell({"mean": 0.6, "std": 0.141421, "n": 2}, 2) == "0.60 ± 0.14"  # a summary.json cell
    assert Stats.of([1.0, float("nan"), 3.0]) == Stats(2.0, 2.0**0.5, 2)  # non-finite values are not counted


def test_rows_of_one_method_under_several_configs_are_labelled_by_what_differs(tmp_path):
    options = {"synthetic": {"num_videos": 20, "max_utterances": 6}}
    for name, dim in (("narrow", 8), ("wide", 32)):
        grid = grid_from_dict(
            {
                "methods": ["late_fusion"],
                "datasets": ["synthetic"],
                "protocols": ["fixed"],
                "seeds": [1],
                "config": {"epochs": 2, "dim": dim},
                "dataset_options": options,
            }
        )
        run_grid(grid, tmp_path / name)
    md = (write_report(tmp_path)["markdown"]).read_text()
    assert "| late_fusion [dim=8] |" in md and "| late_fusion [dim=32] |" in md
