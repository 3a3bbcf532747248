"""The command line only parses and prints: ``imsa run`` and ``imsa.run`` take the same inputs
and make the same experiment."""

from __future__ import annotations

import json

import yaml

import imsa
from imsa.cli import main


def test_imsa_run_and_the_python_call_make_the_same_experiment(tmp_path, capsys):
    args = dict(protocol="random", rate=0.3, seeds=[1, 2], overrides={"epochs": 2, "dim": 16, "data.num_videos": 12})
    summary = imsa.run("late_fusion", "synthetic", out=tmp_path / "api", **args)
    assert summary["out"] == tmp_path / "api" and summary["runs_total"] == 2 and summary["finished_before"] == 0
    assert (
        main(
            [
                "run",
                "--protocol",
                "random",
                "--rate",
                "0.3",
                "--seeds",
                "1",
                "2",
                "--set",
                "epochs=2",
                "--set",
                "dim=16",
                "--set",
                "data.num_videos=12",
                "--out",
                str(tmp_path / "cli"),
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    config = {name: yaml.safe_load((tmp_path / name / "config.yaml").read_text()) for name in ("api", "cli")}
    assert config["api"] == config["cli"]
    records = {name: json.loads((tmp_path / name / "runs" / "seed2-fold0.json").read_text()) for name in ("api", "cli")}
    assert records["api"]["metrics"] == records["cli"]["metrics"] and records["api"]["experiment"] == records["cli"]["experiment"]


def test_the_python_call_runs_every_frame_rate_into_one_table(tmp_path):
    summary = imsa.run(
        "late_fusion",
        "synthetic",
        protocol="frames",
        rates=[0.0, 0.5],
        out=tmp_path / "frames",
        overrides={"epochs": 1, "data.num_videos": 12, "data.sequence_length": 6},
    )
    assert summary["experiments"] == 2 and summary["protocol_label"] == "frames at 0, 0.5"
    assert {"frames=0", "frames=0.5"} <= set(summary["test"])
    assert (tmp_path / "frames" / "frames=0.5" / "summary.json").is_file()
