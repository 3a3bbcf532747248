"""The `imsa` command and the experiment runner: files written, resume, and clear errors."""

import json
import subprocess
import sys
import time

import pytest
import yaml

from imsa.cli import main
from imsa.experiments.runner import Experiment, run_experiment
from imsa.training import RunContext

TINY = ["--set", "epochs=3", "--set", "data.num_videos=20", "--set", "data.max_utterances=6", "--quiet"]


def run_cli(*args):
    """Run the installed command in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "imsa.cli", *args], capture_output=True, text=True)


def test_run_writes_config_runs_models_and_summary(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--seeds", "1", "2", *TINY]) == 0
    printed = capsys.readouterr().out
    for condition in ["l", "a", "v", "l,a", "l,v", "a,v", "l,a,v", "mean"]:
        assert f"\n{condition} " in printed
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["method"] == "late_fusion" and config["dataset"] == "synthetic" and config["config"]["epochs"] == 3
    summary = json.loads((out / "summary.json").read_text())
    cell = summary["test"]["l,a,v"]["acc2_has0"]
    assert set(cell) == {"mean", "std", "n"} and cell["n"] == 2
    assert set(summary["valid"]) == {"l", "a", "v", "l,a", "l,v", "a,v", "l,a,v", "mean"}
    assert set(summary["test"]["l"]) == {"mae", "corr", "acc7", "acc5", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0"}
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["seed1-fold0.json", "seed2-fold0.json"]
    record = json.loads((out / "runs" / "seed1-fold0.json").read_text())
    assert record["seed"] == 1 and record["fold"] == 0 and record["selected_epochs"]["train"] in range(3)
    assert record["metrics"]["test"]["l,a,v"]["acc2_has0"] in [
        json.loads((out / "runs" / n).read_text())["metrics"]["test"]["l,a,v"]["acc2_has0"] for n in runs
    ]
    assert (out / "models" / "seed1-fold0.safetensors").exists() and (out / "models" / "seed1-fold0.json").exists()
    assert (out / "predictions" / "seed1-fold0.npz").exists()
    assert not any((out / "checkpoints").iterdir())  # resume checkpoints go once a run is recorded
    assert (out / "summary.csv").read_text().startswith("split,setting,metric,mean,std,n\n")


def test_second_run_on_same_directory_keeps_results_and_skips_finished_runs(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), *TINY]) == 0
    record = out / "runs" / "seed1-fold0.json"
    before = record.read_text(), record.stat().st_mtime_ns
    assert main(["run", "--out", str(out), *TINY]) == 0
    assert (record.read_text(), record.stat().st_mtime_ns) == before


def test_directory_of_another_experiment_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), *TINY]) == 0
    assert main(["run", "--out", str(out), *TINY, "--set", "lr=0.01"]) == 2
    err = capsys.readouterr().err
    assert "already holds a different experiment" in err and "config" in err


def test_interrupted_experiment_resumes_to_the_same_numbers(tmp_path):
    experiment = Experiment(method="late_fusion", config={"epochs": 6, "patience": None}, dataset_options={"num_videos": 20})

    class Interrupt:
        def on_epoch_end(self, phase, epoch, logs):
            if epoch == 3:
                raise KeyboardInterrupt

    straight = run_experiment(experiment, tmp_path / "straight", context=RunContext(checkpoint_interval=0))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(experiment, tmp_path / "resumed", context=RunContext([Interrupt()], checkpoint_interval=0))
    assert not (tmp_path / "resumed" / "runs" / "seed1-fold0.json").exists()  # nothing half-finished looks finished
    resumed = run_experiment(experiment, tmp_path / "resumed", context=RunContext(checkpoint_interval=0))
    assert resumed["test"] == straight["test"]


def test_killed_run_resumes_from_its_mid_training_checkpoint_to_the_same_numbers(tmp_path):
    """`imsa run` killed (SIGKILL) after a mid-training checkpoint; the rerun resumes from it."""
    import torch

    epochs = 120  # the kill lands right after the first checkpoint, a few epochs in
    args = ["run", "--set", f"epochs={epochs}", "--set", "patience=none", "--set", "data.num_videos=30", "--checkpoint-interval", "0", "--quiet"]
    killed = tmp_path / "killed"
    checkpoint = killed / "checkpoints" / "seed1-fold0" / "train.pt"
    process = subprocess.Popen([sys.executable, "-m", "imsa.cli", *args, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        process.kill()
        process.wait()
    assert checkpoint.exists(), "no checkpoint was written before the kill"
    saved = torch.load(checkpoint, weights_only=True)["state"]
    assert not saved["finished"] and 0 < saved["next_epoch"] < epochs  # killed mid-training
    assert not (killed / "runs" / "seed1-fold0.json").exists()

    resumed = run_cli("-v", *args, "--out", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from epoch {saved['next_epoch']}" in resumed.stderr
    straight = run_cli(*args, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    record = lambda out: json.loads((out / "runs" / "seed1-fold0.json").read_text())  # noqa: E731
    assert record(killed)["metrics"] == record(tmp_path / "straight")["metrics"]
    epochs_of = lambda out: [{k: v for k, v in h.items() if k != "seconds"} for h in record(out)["phases"][0]["history"]]  # noqa: E731
    assert epochs_of(killed) == epochs_of(tmp_path / "straight")


def test_random_protocol_reports_the_rate(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--protocol", "random", "--rate", "0.3", *TINY]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["test"]) == ["rate=0.3"]
    assert summary["test"]["rate=0.3"]["mae"]["n"] == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--method", "nope"], "Unknown method 'nope'. Valid methods:"),
        (["run", "--dataset", "nope"], "Unknown dataset 'nope'. Valid datasets:"),
        (["run", "--set", "nope=1"], "Unknown config key 'nope'"),
        (["run", "--set", "epochs=many"], "'epochs' parameter"),
        (["run", "--set", "data.nope=1"], "Unknown option 'nope' for dataset synthetic"),
        (["run", "--rate", "0.3"], "--rate applies to --protocol random, frames, mr or noise"),
        (["run", "--protocol", "random", "--rate", "0.9"], "'rate' parameter"),
        (["run", "--dataset", "mosi-bclstm", "--data-dir", "{empty}"], "imsa data download mosi-bclstm"),
        (["data", "verify", "mosi-bclstm", "--data-dir", "{empty}"], "missing"),
    ],
)
def test_bad_input_gives_one_clear_line_and_nonzero_exit(tmp_path, capsys, args, message):
    args = [a.replace("{empty}", str(tmp_path)) for a in args]
    assert main(args) != 0
    captured = capsys.readouterr()
    assert message in captured.err + captured.out
    assert not list(tmp_path.glob("runs/*"))  # nothing was started


def test_command_line_errors_have_no_traceback(tmp_path):
    result = run_cli("run", "--method", "nope", "--out", str(tmp_path / "r"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["imsa: error: Unknown method 'nope'. Valid methods: " + result.stderr.split("Valid methods: ")[1].strip()]
    assert "Traceback" not in result.stderr


def test_data_list_and_verify_on_real_files(data_root):
    listed = run_cli("data", "list", "--data-dir", str(data_root))
    assert listed.returncode == 0 and "mosi-bclstm" in listed.stdout and "ready" in listed.stdout
    verified = run_cli("data", "verify", "mosi-bclstm", "--data-dir", str(data_root))
    assert verified.returncode == 0 and verified.stdout.count(" ok ") == 10


def test_set_values_are_read_as_numbers_booleans_none_and_strings():
    from imsa.config import parse_assignments

    assert parse_assignments(["lr=1e-3", "epochs=5", "patience=none", "bf16=true", "train_missing=dropout:0.3", "select_metric=acc2_has0"]) == {
        "lr": 0.001,
        "epochs": 5,
        "patience": None,
        "bf16": True,
        "train_missing": "dropout:0.3",
        "select_metric": "acc2_has0",
    }


def test_show_table_gives_mean_and_std_over_runs_and_a_single_run_alone():
    from imsa.experiments.store import format_table

    summary = {"test": {"l": {"mae": {"mean": 1.0, "std": 0.25, "n": 2}, "corr": {"mean": 0.5, "std": 0.0, "n": 1}}}}
    table = format_table(summary, markdown=True)
    assert "| l | 1.000 ± 0.250 | 0.500 |" in table


def test_threads_option_sets_and_records_torch_threads_per_run(tmp_path):
    import torch

    before = torch.get_num_threads()
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--threads", "1", *TINY]) == 0
    assert json.loads((out / "runs" / "seed1-fold0.json").read_text())["torch_threads"] == 1
    assert torch.get_num_threads() == before  # restored after the run
    with pytest.raises(SystemExit) as refused:
        main(["run", "--threads", "0"])
    assert refused.value.code == 2
