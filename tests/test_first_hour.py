"""What a newcomer meets in their first hour: the README's commands work as written (tests/test_docs.py runs its quick start), defaults
never silently mean "nothing missing", mistakes get an answer that helps, and the
command line answers at once."""

from __future__ import annotations

import copy
import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import imsa
from conftest import PROJECT_ROOT, SHARED_DATA
from imsa.cli import BACKEND_NAMES, main
from imsa.errors import ConfigError
from imsa.protocols import Protocol


def mmsa_file(path: Path) -> Path:
    """A small MMSA pickle: two videos per split, four clips each, sequences of 2 steps."""
    rng = np.random.default_rng(0)
    content = {}
    videos = ("vA", "vB", "vC", "vD", "vE", "vF")
    for k, split in enumerate(("train", "valid", "test")):
        ids = [f"{v}$_${c}" for v in videos[2 * k : 2 * k + 2] for c in range(4)]
        n = len(ids)
        content[split] = {
            "id": ids,
            "text": rng.standard_normal((n, 2, 4)).astype(np.float32),
            "audio": rng.standard_normal((n, 2, 3)).astype(np.float32),
            "vision": rng.standard_normal((n, 2, 3)).astype(np.float32),
            "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
            "classification_labels": np.zeros(n, np.float32),
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(content, protocol=4))
    return path


# -- 1. predict finds the data a run was trained on -------------------------------------------------


def test_predict_on_a_run_trained_with_data_dir_needs_no_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("IMSA_DATA", raising=False)
    root = tmp_path / "data"
    mmsa_file(root / "mine" / "aligned_50.pkl")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    # the dataset path is relative to the data root, as `imsa run --dataset` allows
    assert main(["run", "--dataset", "mine/aligned_50.pkl", "--data-dir", str(root), "--out", str(run), "--quiet", "--set", "epochs=2"]) == 0
    document = json.loads((run / "models" / "seed1-fold0.json").read_text())
    assert document["data"]["data_dir"] == str(root.resolve())
    assert document["data"]["dataset_path"] == str((root / "mine" / "aligned_50.pkl").resolve())
    monkeypatch.chdir(elsewhere)  # neither the working directory nor the default data root holds the data
    capsys.readouterr()
    assert main(["predict", str(run), "--out", "preds.csv"]) == 0
    assert "predictions from 1 model(s)" in capsys.readouterr().out
    assert len((elsewhere / "preds.csv").read_text().splitlines()) == 1 + 8  # header + the 8 test utterances
    # --data-dir still overrides: a root without the file fails, naming it
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(run), "--dataset", "mine/aligned_50.pkl", "--data-dir", str(empty), "--out", "x.csv"]) == 2
    assert "mine/aligned_50.pkl" in capsys.readouterr().err


def test_predict_on_a_registered_dataset_read_from_data_dir(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("IMSA_DATA", raising=False)
    run = tmp_path / "run"
    assert main(["run", "--dataset", "mosi-bclstm", "--data-dir", str(data_root), "--folds", "0", "--out", str(run), "--quiet", "--set", "epochs=1"]) == 0
    capsys.readouterr()
    assert main(["predict", str(run), "--out", str(tmp_path / "p.csv")]) == 0
    assert "utterances, acc2_has0" in capsys.readouterr().out


# -- 2. no protocol silently means "nothing missing" -----------------------------------------------


def test_random_and_frames_protocols_need_their_rate(capsys):
    with pytest.raises(ConfigError, match="needs its missing rate"):
        Protocol("random")
    with pytest.raises(ConfigError, match="needs its frame drop rate"):
        Protocol("frames")
    assert Protocol("random", rate=0.0).rate == 0.0  # given explicitly, rate 0 is a valid column of a table
    assert Protocol("fixed").to_dict() == {"kind": "fixed", "rate": 0.0, "mask_seed": 0}  # identities as before
    assert main(["run", "--protocol", "random", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--rate R" in err and "e.g. --rate 0.3" in err and err.count("\n") == 1
    assert main(["tune", "--method", "late_fusion", "--dataset", "synthetic", "--trials", "1", "--out", "x", "--protocol", "frames"]) == 2
    assert "needs its frame drop rate" in capsys.readouterr().err


# -- 3. predict warns about inputs far outside the training features -------------------------------


def test_predict_warns_about_features_far_outside_the_training_distribution(tmp_path, synthetic, caplog, capsys):
    model = imsa.create_method("late_fusion", epochs=2).fit(*[synthetic.split(0)[s] for s in ("train", "valid")], seed=1)
    path = model.save(tmp_path / "model")
    assert set(json.loads(path.read_text())["state"]["feature_stats"]) == {"l", "a", "v"}
    ids = np.array(synthetic.utterance_ids[:20])
    features = {m: synthetic.features[m][:20] for m in ("l", "a", "v")}
    np.savez(tmp_path / "same.npz", utterance_ids=ids, **features)
    np.savez(tmp_path / "scaled.npz", utterance_ids=ids, **{**features, "a": features["a"] * 50})
    with caplog.at_level(logging.WARNING, logger="imsa"):
        assert main(["predict", str(path), "--features", str(tmp_path / "same.npz"), "--out", str(tmp_path / "a.csv")]) == 0
    assert not [r for r in caplog.records if "far outside" in r.getMessage()]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="imsa"):
        assert main(["predict", str(path), "--features", str(tmp_path / "scaled.npz"), "--out", str(tmp_path / "b.csv")]) == 0
    warnings = [r.getMessage() for r in caplog.records if "far outside" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("20 of 20 utterances") and "a: 20" in warnings[0] and "l:" not in warnings[0]


def test_training_utterances_are_never_far_from_their_own_statistics(synthetic):
    from imsa.data.feature_stats import far_outside, feature_statistics

    rows = synthetic.split(0)["train"].indices
    stats = feature_statistics(synthetic, rows)
    assert not any(far.any() for far in far_outside(synthetic, stats).values())  # valid and test utterances too
    shifted = copy.copy(synthetic)
    shifted.features = {**synthetic.features, "v": synthetic.features["v"] + 100}
    assert far_outside(shifted, stats)["v"].all() and not far_outside(shifted, stats)["l"].any()


def test_large_training_sets_are_described_by_evenly_spaced_utterances(synthetic, monkeypatch):
    from imsa.data import feature_stats

    rows = synthetic.split(0)["train"].indices
    full = feature_stats.feature_statistics(synthetic, rows)
    monkeypatch.setattr(feature_stats, "MAX_ROWS", 10)
    spaced = rows[np.linspace(0, len(rows) - 1, 10).round().astype(np.int64)]
    assert feature_stats.feature_statistics(synthetic, rows) == feature_stats.feature_statistics(synthetic, spaced) != full


# -- 4. resuming and significance say what they did and what they can say --------------------------


def test_a_second_run_says_how_many_runs_it_skipped(tmp_path, capsys):
    args = ["run", "--out", str(tmp_path / "run"), "--quiet", "--seeds", "1", "2", "--set", "epochs=1"]
    assert main(args) == 0
    assert "finished earlier" not in capsys.readouterr().out
    assert main(args) == 0
    assert "All 2 runs had finished earlier" in capsys.readouterr().out
    os.remove(tmp_path / "run" / "runs" / "seed2-fold0.json")
    assert main(args) == 0
    assert "1 of 2 runs had finished earlier" in capsys.readouterr().out


def test_the_report_states_the_smallest_p_its_runs_allow(tmp_path, capsys):
    from imsa.significance import paired_permutation_p, smallest_permutation_p

    assert smallest_permutation_p(5) == paired_permutation_p([1.0, 2.0, 1.5, 0.5, 1.0]) == 2 / 32
    store = tmp_path / "store"
    grid = ["grid", "run", "--methods", "late_fusion", "early_fusion", "--datasets", "synthetic", "--protocols", "fixed"]
    grid += ["--seeds", "1", "2", "--set", "epochs=1", "--out", str(store), "--quiet"]
    assert main(grid) == 0
    assert main(grid) == 0
    assert "All 4 runs had finished earlier" in capsys.readouterr().out
    assert main(["report", str(store), "--metrics", "mae"]) == 0
    report = (store / "report" / "report.md").read_text()
    assert "With 2 matched runs, the smallest p the permutation test (*) can reach is 0.5, not below 0.05: no * can appear" in report
    assert "At least 6 matched runs" in report


# -- 5. errors that point to the fix ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value, needles",
    [
        ("l,x", ["'x' in 'l,x' is not a modality", "l (language), a (audio), v (visual)", "e.g. l,a"]),
        ("la", ["'la'", "commas between letters"]),
        ("l,l", ["repeats a modality"]),
    ],
)
def test_a_bad_modality_list_names_the_letter_and_the_format(capsys, value, needles):
    with pytest.raises(SystemExit) as exit:
        main(["predict", "somewhere", "--modalities", value, "--out", "x.csv"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(n in err for n in needles), err


def test_predict_on_a_grid_store_names_its_run_directories(tmp_path, capsys):
    store = tmp_path / "store"
    assert (
        main(
            [
                "grid",
                "run",
                "--methods",
                "late_fusion",
                "--datasets",
                "synthetic",
                "--protocols",
                "fixed",
                "random:0.3",
                "--seeds",
                "1",
                "--set",
                "epochs=1",
                "--out",
                str(store),
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["predict", str(store), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "a folder of run directories" in err and "synthetic/late_fusion/fixed" in err and "synthetic/late_fusion/rate=0.3" in err


@pytest.mark.parametrize(
    "args, suggestion",
    [
        (["run", "--method", "momk"], "Did you mean 'momke'?"),
        (["run", "--dataset", "mosi-bclstn"], "Did you mean 'mosi-bclstm'?"),
        (["run", "--set", "dimm=3"], "Did you mean 'dim'?"),
        (["run", "--set", "data.num_video=3"], "Did you mean 'num_videos'?"),
        (["show", "nowhere", "--metrics", "acc2_has"], None),
    ],
)
def test_unknown_names_suggest_the_closest_valid_one(tmp_path, capsys, args, suggestion):
    if suggestion is None:  # a metric name: checked once a run directory exists
        assert main(["run", "--out", str(tmp_path / "r"), "--quiet", "--set", "epochs=1"]) == 0
        args, suggestion = ["show", str(tmp_path / "r"), "--metrics", "acc2_has"], "Did you mean 'acc2_has0'?"
    capsys.readouterr()
    assert main([*args, "--quiet"] if args[0] == "run" else args) == 2
    assert suggestion in capsys.readouterr().err


# -- 7. the command line answers without importing torch --------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["grid", "run", "--help"], ["methods"], ["data", "list"], ["run", "--rate"]])
def test_help_listings_and_argument_errors_do_not_import_torch(argv, tmp_path):
    code = (
        "import sys\nfrom imsa.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    )
    assert result.returncode == 0, result.stderr


def test_the_method_listing_read_from_source_is_the_registry(monkeypatch):
    from imsa import catalogue

    registry = catalogue.imported_method_entries()

    def refuse():
        raise AssertionError("a method's name or default could not be read from its source")

    monkeypatch.setattr(catalogue, "imported_method_entries", refuse)
    assert catalogue._read_entries() == registry
    catalogue.method_entries.cache_clear()
    assert catalogue.method_entries() == registry  # read, then kept in the user cache
    catalogue.method_entries.cache_clear()
    assert catalogue.method_entries() == registry  # from the cache
    assert (catalogue.default_cache_dir() / "method-catalogue.json").is_file()


def test_the_backend_choices_are_the_backends():
    from imsa.experiments.backends import BACKENDS

    assert set(BACKEND_NAMES) == set(BACKENDS)


# -- 8. the package says what it holds --------------------------------------------------------------


def test_the_public_api_is_visible_and_documented():
    assert dir(imsa) == sorted(imsa.__all__)
    for name in imsa.__all__:
        assert getattr(imsa, name) is not None
        if name != "__version__":
            assert f":func:`{name}`" in imsa.__doc__ or f":class:`{name}`" in imsa.__doc__, name
    with pytest.raises(AttributeError):
        imsa.no_such_name


# -- 6. the tests say what the absence of real data skipped --------------------------------------------


def test_missing_real_data_is_summarised_in_one_line_and_imsa_data_is_honoured(tmp_path):
    env = {**os.environ, "IMSA_DATA": str(tmp_path)}  # an empty data root: every real-data test skips
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "0",
            "-p",
            "no:cacheprovider",
            "tests/test_download.py",
            "tests/test_mosi_misa.py",
            "-k",
            "download_verify or sizes or verify_reports",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert "passed" not in result.stdout.splitlines()[-1], result.stdout[-2000:]  # test_download reads $IMSA_DATA, not ../shared
    summary = [line for line in result.stdout.splitlines() if "skipped for lack of real data" in line]
    assert len(summary) == 1 and "IMSA_DATA" in summary[0] and str(SHARED_DATA) in summary[0]
