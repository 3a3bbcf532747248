"""Grids: the YAML form, errors that name the place, the results store, skip and resume, local workers."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from imsa.cli import main
from imsa.errors import ConfigError
from imsa.experiments.backends import LocalBackend, threads_per_worker
from imsa.experiments.grid import read_grid, run_grid
from imsa.experiments.runner import Experiment, run_experiment
from imsa.methods import list_methods
from imsa.protocols import Protocol

TINY_DATA = {"num_videos": 20, "max_utterances": 6}


def write_grid(path: Path, **changes) -> Path:
    grid = {
        "methods": ["late_fusion", "early_fusion"],
        "datasets": ["synthetic"],
        "protocols": ["fixed", {"random": [0.0, 0.5]}],
        "seeds": [1, 2],
        "config": {"epochs": 2},
        "dataset_options": {"synthetic": TINY_DATA},
    }
    grid.update(changes)
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def run_files(out: Path) -> dict[str, int]:
    """Run file (relative path) -> modification time, for every finished run in a store."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("runs/*.json")}


def test_the_issue_example_grid_resolves(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(
        "methods: [late_fusion, momke]\n"
        "datasets: [mosi-bclstm]\n"
        "protocols:\n  - fixed\n  - {random: [0.0, 0.3, 0.5, 0.7]}\n"
        "seeds: [1, 2, 3]\n"
        "overrides: {momke: {epochs: 200}}\n"
    )
    grid = read_grid(path)
    assert grid.protocols == (Protocol("fixed"),) + tuple(Protocol("random", rate=r) for r in (0.0, 0.3, 0.5, 0.7))
    experiments = dict(grid.experiments())
    assert len(experiments) == 2 * 5
    assert experiments["mosi-bclstm/momke/rate=0.3"].config == {"epochs": 200}
    assert experiments["mosi-bclstm/late_fusion/fixed"].config == {}
    assert experiments["mosi-bclstm/momke/fixed"].resolved_config().epochs == 200
    only = read_grid(path, replace={"methods": ["late_fusion"]})  # --methods: the other methods' overrides are set aside
    assert only.methods == ("late_fusion",) and only.overrides == {}
    path.write_text(path.read_text().replace("epochs: 200", "stage1_epochs: 0"))
    with pytest.raises(ConfigError, match=r"grid.yaml: overrides.momke: The 'stage1_epochs' parameter of MoMKEConfig"):
        read_grid(path)


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"methods": ["late_fusion", "momk"]},
            f"grid.yaml: methods[1]: Unknown method 'momk'. Did you mean 'momke'? Valid methods: {', '.join(list_methods())}.",
        ),
        ({"datasets": ["nope"]}, "grid.yaml: datasets[0]: Unknown dataset 'nope'. Valid datasets:"),
        ({"seed": [1]}, "grid.yaml: unknown key 'seed'. Did you mean 'seeds'? Valid keys: methods, datasets, protocols, seeds"),
        ({"overrides": {"late_fusion": {"epoch": 3}}}, "grid.yaml: overrides.late_fusion: Unknown config key 'epoch'"),
        ({"overrides": {"momke": {"epochs": 3}}}, "grid.yaml: overrides.momke: method 'momke' is not in this grid's methods"),
        ({"config": {"lr": "fast"}}, "grid.yaml: config: The 'lr' parameter"),
        (
            {"protocols": ["fixed", {"random": [0.3, 0.9]}]},
            "grid.yaml: protocols[1].random[1]: The 'rate' parameter of the random protocol must be in [0, 0.7]",
        ),
        ({"protocols": ["fixd"]}, "grid.yaml: protocols[0]: expected 'fixed', 'random', 'frames', 'mr' or {random: [rates]}"),
        ({"seeds": [1, "two"]}, "grid.yaml: seeds[1]: expected an integer"),
        ({"dataset_options": {"synthetic": {"videos": 3}}}, "grid.yaml: dataset_options.synthetic.videos: unknown option"),
        ({"folds": [0, 3]}, "grid.yaml: folds[1]: dataset synthetic has 1 fold(s); fold 3 does not exist"),
    ],
)
def test_bad_grid_fails_before_training_and_names_the_place(tmp_path, capsys, changes, message):
    grid = write_grid(tmp_path / "grid.yaml", **changes)
    out = tmp_path / "store"
    assert main(["grid", "run", str(grid), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message.replace("grid.yaml", str(grid)) in err
    assert len(err.strip().splitlines()) == 1
    assert not list(out.rglob("runs/*.json")) and not list(out.rglob("checkpoints/*"))  # nothing trained


def test_grid_from_the_command_line_alone(tmp_path, capsys):
    out = tmp_path / "store"
    args = ["grid", "run", "--methods", "late_fusion", "--datasets", "synthetic", "--protocols", "random:0.0,0.5", "--seeds", "1"]
    assert main([*args, "--out", str(out), "--set", "epochs=2", "--set", "data.num_videos=20", "--quiet"]) == 0
    assert sorted(run_files(out)) == ["synthetic/late_fusion/rate=0.5/runs/seed1-fold0.json", "synthetic/late_fusion/rate=0/runs/seed1-fold0.json"]
    assert yaml.safe_load((out / "grid.yaml").read_text())["protocols"] == [{"random": [0.0, 0.5]}]
    assert main([*args[:2], "--methods", "late_fusion", "--protocols", "random:0.1,x", "--out", str(out)]) == 2
    assert "--protocols: expected fixed, random, random:R1,R2,..., frames or frames:R1,R2,..., got 'random:0.1,x'" in capsys.readouterr().err


def test_grid_store_records_every_run_and_a_rerun_skips_them(tmp_path, capsys):
    grid = write_grid(tmp_path / "grid.yaml")
    out = tmp_path / "store"
    assert main(["grid", "run", str(grid), "--out", str(out), "--quiet"]) == 0
    assert "Grid of 6 experiments, 12 runs" in capsys.readouterr().out
    files = run_files(out)
    assert len(files) == 2 * 3 * 2
    record = json.loads((out / "synthetic/early_fusion/rate=0.5/runs/seed2-fold0.json").read_text())
    assert record["method"] == "early_fusion" and record["dataset"] == "synthetic" and record["seed"] == 2 and record["fold"] == 0
    assert record["protocol"] == {"kind": "random", "rate": 0.5, "mask_seed": 0}
    assert record["config"]["epochs"] == 2 and record["dataset_options"] == TINY_DATA and record["task"] == "regression"
    assert len(record["data_checksum"]) == 64 and record["selected_epochs"]["train"] in (0, 1)
    assert list(record["metrics"]["test"]) == ["rate=0.5"] and record["wall_time_s"] > 0 and "torch" in record["versions"]
    summary = json.loads((out / "synthetic/early_fusion/fixed/summary.json").read_text())
    assert summary["runs"] == 2 and summary["test"]["l,a,v"]["acc2_has0"]["n"] == 2
    assert main(["show", str(out / "synthetic/early_fusion/fixed")]) == 0  # every experiment directory is an `imsa run` directory

    assert main(["grid", "run", str(grid), "--out", str(out), "--quiet"]) == 0
    assert run_files(out) == files  # nothing retrained, nothing rewritten


def test_grid_runs_score_like_imsa_run(tmp_path, synthetic):
    grid = read_grid(write_grid(tmp_path / "grid.yaml", methods=["late_fusion"], protocols=["fixed"], seeds=[3]))
    summaries = run_grid(grid, tmp_path / "store")
    alone = run_experiment(Experiment("late_fusion", seeds=(3,), config={"epochs": 2}, dataset_options=TINY_DATA), tmp_path / "alone")
    assert summaries["synthetic/late_fusion/fixed"]["test"] == alone["test"]


def test_unreadable_run_file_fails_before_training_and_names_the_file(tmp_path, capsys):
    grid = write_grid(tmp_path / "grid.yaml", methods=["late_fusion"], protocols=["fixed"], seeds=[1, 2])
    out = tmp_path / "store"
    assert main(["grid", "run", str(grid), "--out", str(out), "--quiet"]) == 0
    broken = out / "synthetic/late_fusion/fixed/runs/seed2-fold0.json"
    broken.write_text('{"metrics": {"valid": ')
    (out / "synthetic/late_fusion/fixed/runs/seed1-fold0.json").unlink()
    assert main(["grid", "run", str(grid), "--out", str(out), "--quiet"]) == 2
    assert f"{broken}: unreadable run file" in capsys.readouterr().err
    assert not (out / "synthetic/late_fusion/fixed/runs/seed1-fold0.json").exists()  # refused before training
    assert main(["report", str(out)]) == 2
    assert f"{broken}: unreadable run file" in capsys.readouterr().err


def test_store_of_a_different_grid_is_refused(tmp_path, capsys):
    out = tmp_path / "store"
    assert (
        main(["grid", "run", str(write_grid(tmp_path / "a.yaml", methods=["late_fusion"], protocols=["fixed"], seeds=[1])), "--out", str(out), "--quiet"]) == 0
    )
    changed = write_grid(tmp_path / "b.yaml", methods=["late_fusion"], protocols=["fixed"], seeds=[1], config={"epochs": 3})
    assert main(["grid", "run", str(changed), "--out", str(out), "--quiet"]) == 2
    assert "already holds a different experiment (differs in: config.epochs (2 before, 3 now))" in capsys.readouterr().err


def test_threads_are_divided_among_local_workers(tmp_path):
    assert threads_per_worker(2, cores=2) == 1 and threads_per_worker(1, cores=2) == 2 and threads_per_worker(4, cores=2) == 1
    assert threads_per_worker(3, cores=16) == 5
    grid = read_grid(write_grid(tmp_path / "grid.yaml", methods=["late_fusion"], protocols=["fixed"], seeds=[1, 2]))
    run_grid(grid, tmp_path / "store", backend=LocalBackend(workers=2))
    records = [json.loads(p.read_text()) for p in (tmp_path / "store").rglob("runs/*.json")]
    assert len(records) == 2 and {r["torch_threads"] for r in records} == {threads_per_worker(2)}


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find the worker processes")
def test_killed_grid_resumes_without_redoing_finished_runs(tmp_path):
    grid = write_grid(tmp_path / "grid.yaml", methods=["late_fusion"], protocols=["fixed"], seeds=[1, 2, 3, 4], config={"epochs": 8, "patience": None})
    out = tmp_path / "store"
    args = ["grid", "run", str(grid), "--out", str(out), "--quiet"]
    process = subprocess.Popen(
        [sys.executable, "-m", "imsa", *args, "--backend", "local", "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 60
    while not run_files(out) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    workers = _children(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = run_files(out)
    assert 1 <= len(finished) < 4, "the grid should be killed halfway"
    deadline = time.time() + 10
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert workers and not any(_alive(w) for w in workers), "workers outlived the killed grid"
    for path in out.rglob("runs/*.json"):
        json.loads(path.read_text())  # every file that looks finished is complete
    assert main(args) == 0  # resume (here in-process, sequentially)
    after = run_files(out)
    assert len(after) == 4
    assert {k: after[k] for k in finished} == finished  # the runs done before the kill were skipped


def test_local_workers_map_the_datasets_features_instead_of_copying_them(tmp_path):
    from imsa.data.registry import load_dataset
    from imsa.experiments.backends import open_shared, share_datasets

    dataset = load_dataset("synthetic", num_videos=10, seed=0)
    shared = share_datasets({"synthetic": dataset}, tmp_path)["synthetic"]
    assert all(isinstance(path, str) for path in shared.features.values())  # what travels to a worker: paths, not arrays
    assert dataset.features["l"] is not None and not isinstance(dataset.features["l"], str)  # the caller's dataset is untouched
    opened = open_shared(shared)
    for m, x in dataset.features.items():
        assert isinstance(opened.features[m], np.memmap) and np.array_equal(opened.features[m], x)
    assert opened.split(0)["train"].labels.tolist() == dataset.split(0)["train"].labels.tolist()


def test_local_workers_report_a_run_as_started_when_a_worker_takes_it(tmp_path):
    from imsa.training import RunContext

    events = []

    class Events:
        def on_run_start(self, key, index, total):
            events.append(("start", key.rsplit("/", 1)[-1]))

        def on_run_end(self, key, record):
            events.append(("end", key.rsplit("/", 1)[-1]))

    grid = read_grid(write_grid(tmp_path / "grid.yaml", methods=["late_fusion"], protocols=["fixed"], seeds=[1, 2, 3], config={"epochs": 1}))
    run_grid(grid, tmp_path / "store", backend=LocalBackend(workers=1), context=RunContext(callbacks=[Events()]))
    keys = [f"seed{s}-fold0" for s in (1, 2, 3)]
    assert events == [e for k in keys for e in (("start", k), ("end", k))]  # one worker: never two runs "running"


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parents[1].joinpath("grids").glob("*.yaml")), ids=lambda p: p.name)
def test_the_shipped_grids_resolve(path):
    grid = read_grid(path)
    assert grid.methods and grid.experiments()


def test_complete_data_phases_train_once_for_every_protocol_of_a_grid(tmp_path):
    """MMIN's pretraining (complete data) is trained by the first protocol's run and restored by
    the others; every result equals a run that trained it itself."""
    from imsa.methods import method_class
    from imsa.training import RunContext

    epochs = []

    class Epochs:
        def on_epoch_end(self, phase, epoch, logs):
            epochs.append(phase)

    tiny = {**method_class("mmin").tiny_config, "epochs": 2, "pretrain_epochs": 3}
    grid = read_grid(write_grid(tmp_path / "grid.yaml", methods=["mmin"], protocols=["fixed", {"random": [0.3]}], seeds=[1], config=tiny))
    run_grid(grid, tmp_path / "store", context=RunContext(callbacks=[Epochs()]))
    assert epochs.count("pretrain") == 3 and epochs.count("mmin") == 2 * 2  # pretrained once, then each protocol's own phase
    assert not (tmp_path / "store" / ".shared-phases").exists()  # removed once every run is written
    run_experiment(
        Experiment("mmin", "synthetic", protocol=Protocol("random", rate=0.3), seeds=(1,), config=tiny, dataset_options=TINY_DATA), tmp_path / "alone"
    )
    shared = json.loads((tmp_path / "store" / "synthetic" / "mmin" / "rate=0.3" / "runs" / "seed1-fold0.json").read_text())
    alone = json.loads((tmp_path / "alone" / "runs" / "seed1-fold0.json").read_text())
    assert shared["metrics"] == alone["metrics"] and shared["selected_epochs"] == alone["selected_epochs"]


def test_an_experiment_whose_config_holds_tuples_resumes(tmp_path):
    """A resolved config with tuple values (IMDer's unet_channels) is written as YAML lists;
    claiming the directory again is the same experiment, another tuple is not."""
    from imsa.experiments.runner import _claim_directory

    resolved = {"method": "imder", "config": {"unet_channels": (32, 64, 128, 256), "epochs": 8}}
    _claim_directory(tmp_path / "run", resolved)
    _claim_directory(tmp_path / "run", resolved)
    with pytest.raises(ConfigError, match="differs in: config"):
        _claim_directory(tmp_path / "run", {**resolved, "config": {**resolved["config"], "unet_channels": (32, 64, 128, 128)}})
