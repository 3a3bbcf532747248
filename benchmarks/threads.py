"""Torch threads per run: wall and CPU time with 1 and 2 threads, on an idle and a loaded machine.

These models are small; torch's default of one thread per core turns against them as
soon as anything else runs. For each method this trains one short run (its packaged
config with fewer epochs, fold 0 of mosi-bclstm; late fusion also on the built-in
synthetic default of ``imsa run``) in a fresh process with ``--threads 1`` and
``--threads 2``, first on the idle machine, then with one busy process per core
competing, and writes wall and CPU seconds to ``benchmarks/results/threads.json``.
imsa's per-method default (``Method.default_threads``) is chosen from these numbers.

    python benchmarks/threads.py                   # every method (about 10 minutes on 2 cores)
    python benchmarks/threads.py --methods late_fusion
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

from common import REPO, default_data_dir

CASES = {  # name -> imsa run arguments (short runs, so the whole table takes minutes)
    "late_fusion (synthetic default)": ["--method", "late_fusion"],
    "late_fusion": ["--method", "late_fusion", "--dataset", "mosi-bclstm", "--folds", "0"],
    "early_fusion": ["--method", "early_fusion", "--dataset", "mosi-bclstm", "--folds", "0"],
    "momke": [
        "--method",
        "momke",
        "--dataset",
        "mosi-bclstm",
        "--folds",
        "0",
        "--set",
        "epochs=20",
        "--set",
        "stage1_epochs=20",
        "--set",
        "per_condition=false",
    ],
    "cmad": ["--method", "cmad", "--dataset", "mosi-bclstm", "--folds", "0", "--set", "teacher_epochs=8", "--set", "epochs=8"],
}


def busy() -> None:
    while True:
        pass


def timed_run(args: list[str], threads: int, data_dir) -> dict:
    """Wall and CPU seconds of one `imsa run` in a fresh process."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "imsa.cli", "run", *args, "--threads", str(threads), "--data-dir", str(data_dir), "--out", f"{out}/run", "--quiet"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": round(wall, 2), "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2)}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--data-dir", default=str(default_data_dir()))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "threads.json"))
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rows = {}
    for load in ("idle", "loaded"):
        hogs = [multiprocessing.Process(target=busy, daemon=True) for _ in range(cores if load == "loaded" else 0)]
        for hog in hogs:
            hog.start()
        try:
            for name in args.methods:
                for threads in (1, 2):
                    result = timed_run(CASES[name], threads, args.data_dir)
                    rows.setdefault(name, {})[f"{load}, {threads} thread(s)"] = result
                    print(f"{name:<32} {load:<7} threads={threads}  wall {result['wall_s']:7.2f} s  cpu {result['cpu_s']:7.2f} s", flush=True)
        finally:
            for hog in hogs:
                hog.terminate()
    report = {"cores": cores, "python": platform.python_version(), "busy_processes_when_loaded": cores, "runs": rows, "cases": CASES}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
