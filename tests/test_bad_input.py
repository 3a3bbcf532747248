"""Bad input through the real command line: one line naming the file or option, no traceback,
nothing lost, nothing executed. One test per class of mistake, each parametrised over cases."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

TINY = ["--set", "epochs=2", "--set", "data.num_videos=12", "--set", "data.min_utterances=2", "--set", "data.max_utterances=4", "--quiet"]


def imsa(*args, cwd=None):
    """Run the installed command in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "imsa.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def assert_one_line(result, *needles):
    """Exit status 2, a single `imsa...: error:` line on stderr that contains every needle, no traceback."""
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in lines if ": error:" in line]
    assert len(errors) == 1, lines
    for needle in needles:
        assert str(needle) in errors[0], (needle, errors[0])


def mmsa_file(path, labels=None, *, classes=False, videos=("vA", "vB", "vC", "vD", "vE", "vF")):
    """A small MMSA pickle: two videos per split, three clips each."""
    rng = np.random.default_rng(0)
    content = {}
    for k, split in enumerate(("train", "valid", "test")):
        ids = [f"{v}$_${c}" for v in videos[2 * k : 2 * k + 2] for c in range(3)]
        n = len(ids)
        part = {
            "id": ids,
            "text": rng.standard_normal((n, 2, 4)).astype(np.float32),
            "audio": rng.standard_normal((n, 2, 3)).astype(np.float32),
            "vision": rng.standard_normal((n, 2, 3)).astype(np.float32),
            "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
            "classification_labels": np.zeros(n, np.float32),
        }
        content[split] = part
    if labels is not None:
        labels(content)
    path.write_bytes(pickle.dumps(content, protocol=4))
    return path


# -- paths: files given where folders are expected and the other way round -----------------------


@pytest.mark.parametrize(
    "make, args, needles",
    [
        (lambda t: t.mkdir(), ["run", "--config", "{p}"], ["{p}", "is a directory"]),
        (lambda t: t.write_text("x"), ["run", "--out", "{p}"], ["{p}", "is a file; --out needs a directory"]),
        (lambda t: t.write_text("x"), ["report", "{p}"], ["{p}", "not a directory"]),
        (lambda t: (t.parent / "loop").symlink_to(t) or t.symlink_to(t.parent / "loop"), ["run", "--config", "{p}"], ["{p}", "symbolic link loop"]),
        (lambda t: None, ["show", "{p}"], ["{p}", "not a finished imsa run directory"]),
        (lambda t: t.write_text("x"), ["grid", "run", "{p}"], ["{p}"]),
        (lambda t: t.write_text("x"), ["run", "--dataset", "mosi-bclstm", "--data-dir", "{p}"], ["{p}", "not a folder"]),
        (lambda t: t.write_text("x"), ["data", "export", "synthetic", "--out", "{p}"], ["{p}", "is a file"]),
        (lambda t: t.write_text("x"), ["features", "text", "--dataset", "synthetic", "--cache-dir", "{p}"], ["synthetic"]),
    ],
    ids=[
        "config-dir",
        "out-file",
        "report-file",
        "config-symlink-loop",
        "show-missing",
        "grid-not-yaml",
        "data-dir-file",
        "export-out-file",
        "features-of-no-text",
    ],
)
def test_paths_of_the_wrong_kind(tmp_path, make, args, needles):
    target = tmp_path / "target"
    make(target)
    result = imsa(*[a.replace("{p}", str(target)) for a in args])
    assert_one_line(result, *[n.replace("{p}", str(target)) for n in needles])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 2\n")
    path.chmod(0)
    assert_one_line(imsa("run", "--config", path), str(path), "permission denied")


# -- options and config values outside their domain -----------------------------------------------


@pytest.mark.parametrize(
    "args, needles",
    [
        (["run", "--seeds", "-1"], ["--seeds", "at least 0"]),
        (["run", "--mask-seed", "-3"], ["--mask-seed", "at least 0"]),
        (["run", "--seeds", "1", "1"], ["seeds 1 given more than once"]),
        (["run", "--set", "lr=nan"], ["'lr'", "finite"]),
        (["run", "--set", "dim=0"], ["'dim'", "at least 1"]),
        (["run", "--set", "dropout=1.5"], ["'dropout'", "[0, 1)"]),
        (["run", "--set", "weight_decay=-1"], ["'weight_decay'", "at least 0"]),
        (["run", "--checkpoint-interval", "nan"], ["--checkpoint-interval"]),
        (["report", ".", "--digits", "-1"], ["--digits", "at least 0"]),
        (["report", ".", "--alpha", "2"], ["--alpha", "(0, 1)"]),
        (["features", "text", "--dataset", "mosi-transcripts", "--batch-size", "0"], ["--batch-size", "at least 1"]),
        (["run", "--protocol", "random", "--rate", "nan"], ["'rate'"]),
        (["run", "--config", "momke/nope", "--method", "momke"], ["momke/nope", "Packaged configs of momke"]),
    ],
)
def test_options_outside_their_domain(tmp_path, args, needles):
    result = imsa(*args, "--out" if args[0] == "run" else "", tmp_path / "out") if args[0] == "run" else imsa(*args)
    assert_one_line(result, *needles)
    assert not (tmp_path / "out" / "runs").exists()  # refused before any work


# -- data that would give meaningless numbers ------------------------------------------------------


def _nan_label(content):
    content["train"]["regression_labels"][1] = np.nan


def _huge_label(content):
    content["test"]["regression_labels"][0] = 1e30


def _shared_video(content):
    content["valid"]["id"] = [i.replace("vC", "vA") for i in content["valid"]["id"]]


@pytest.mark.parametrize(
    "change, needles",
    [
        (_nan_label, ["NaN or infinite", "vA$_$1", "aligned_50.pkl"]),
        (_huge_label, ["outside [-3, 3]", "vE$_$0", "data.label_range"]),
        (_shared_video, ["vA in train and valid: leakage", "data.shared_videos=allow"]),
    ],
    ids=["nan-label", "label-1e30", "video-in-two-splits"],
)
def test_data_that_would_mean_nothing_is_refused_naming_the_file(tmp_path, change, needles):
    path = mmsa_file(tmp_path / "aligned_50.pkl", change)
    result = imsa("run", "--dataset", path, "--out", tmp_path / "out", *TINY[:2], "--quiet")
    assert_one_line(result, *needles)


def test_a_declared_label_range_is_accepted(tmp_path):
    path = mmsa_file(tmp_path / "aligned_50.pkl", _huge_label)
    result = imsa("run", "--dataset", path, "--out", tmp_path / "out", "--set", "epochs=1", "--set", "data.label_range=[-1e31,1e31]", "--quiet")
    assert result.returncode == 0, result.stderr


def test_a_single_class_and_an_empty_split_are_refused(tmp_path):
    single = mmsa_file(tmp_path / "aligned_50.pkl")
    result = imsa("run", "--dataset", single, "--set", "data.task=classification", "--out", tmp_path / "a", "--set", "epochs=1", "--quiet")
    assert_one_line(result, "single class")

    def empty_test(content):
        content["test"] = {k: v[:0] for k, v in content["test"].items()}

    (tmp_path / "e").mkdir()
    empty = mmsa_file(tmp_path / "e" / "aligned_50.pkl", empty_test)
    result = imsa("run", "--dataset", empty, "--out", tmp_path / "b", "--set", "epochs=1", "--quiet")
    assert_one_line(result, "aligned_50.pkl", "test", "no samples")


def test_a_tiny_test_split_is_warned_about(tmp_path):
    result = imsa("run", "--out", tmp_path / "out", *TINY)
    assert result.returncode == 0
    assert "unreliable on so few" in result.stderr and "corr" in result.stderr


# -- run directories and stores ---------------------------------------------------------------------


def test_damaged_files_of_a_run_directory(tmp_path):
    out = tmp_path / "out"
    assert imsa("run", "--out", out, *TINY).returncode == 0
    (out / "summary.json").write_text("{")
    assert_one_line(imsa("show", out), "summary.json", "unreadable summary")
    assert_one_line(imsa("show", out.parent / "nowhere"), "not a finished imsa run directory")
    (out / "config.yaml").write_text("a: [")
    assert_one_line(imsa("run", "--out", out, *TINY), "config.yaml", "damaged")


def test_unknown_metric_for_show(tmp_path):
    out = tmp_path / "out"
    assert imsa("run", "--out", out, *TINY).returncode == 0
    assert_one_line(imsa("show", out, "--metrics", "acc9"), "No metric 'acc9'", "Available:")


def test_a_run_file_of_another_experiment_is_refused(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert imsa("run", "--out", first, *TINY).returncode == 0
    assert imsa("run", "--out", second, "--seeds", "1", "2", *TINY, "--set", "lr=0.01").returncode == 0
    foreign = first / "runs" / "seed1-fold0.json"
    (second / "runs" / "seed1-fold0.json").write_text(foreign.read_text())  # copied from the other experiment
    result = imsa("run", "--out", second, "--seeds", "1", "2", *TINY, "--set", "lr=0.01")
    assert_one_line(result, "second/runs/seed1-fold0.json", "belongs to another experiment")
    # a run file of the right experiment under the wrong name is refused too
    (second / "runs" / "seed1-fold0.json").write_text((second / "runs" / "seed2-fold0.json").read_text())
    assert_one_line(imsa("run", "--out", second, "--seeds", "1", "2", *TINY, "--set", "lr=0.01"), "seed1-fold0.json", "another experiment or run")


def test_report_gives_runs_of_different_configs_separate_rows(tmp_path):
    store = tmp_path / "store"
    assert imsa("run", "--out", store / "a", *TINY).returncode == 0
    assert imsa("run", "--out", store / "b", *TINY, "--set", "lr=0.01").returncode == 0
    assert imsa("report", store, "--metrics", "mae").returncode == 0
    cells = (store / "report" / "cells.csv").read_text().splitlines()
    rows = {line.split(",")[3] for line in cells[1:]}
    assert len(rows) == 2 and all(r.startswith("late_fusion [") for r in rows)  # never averaged into one cell


def test_a_second_process_on_the_same_run_directory_is_refused_and_the_first_finishes(tmp_path):
    out = tmp_path / "out"
    args = [
        sys.executable,
        "-m",
        "imsa.cli",
        "run",
        "--out",
        str(out),
        "--set",
        "epochs=300",
        "--set",
        "patience=none",
        "--set",
        "data.num_videos=40",
        "--quiet",
    ]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "config.yaml").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        second = imsa(*args[3:])
        assert_one_line(second, str(out), "in use by another imsa process")
    finally:
        first.wait(timeout=300)
    assert first.returncode == 0, first.stderr.read()
    assert json.loads((out / "runs" / "seed1-fold0.json").read_text())["config"]["epochs"] == 300
    assert imsa(*args[3:]).returncode == 0  # the lock goes with the process


def test_a_registered_dataset_whose_file_changed_after_download_is_refused(data_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data_root / "cmu-mosi", root / "cmu-mosi", copy_function=shutil.copyfile)
    for here, _, _ in os.walk(root):
        os.chmod(here, 0o755)
    audio = root / "cmu-mosi" / "bc-lstm" / "audio" / "audio_test0.csv"
    audio.write_text(audio.read_text().replace(",", ";", 1))
    result = imsa("run", "--dataset", "mosi-bclstm", "--data-dir", root, "--out", tmp_path / "out", "--quiet")
    assert_one_line(result, str(audio), "modified since it was downloaded", "imsa data download mosi-bclstm --force")
