"""Memory of the local grid backend's workers on a dataset of CMU-MOSEI's size: shared or copied.

Builds a synthetic dataset of MOSEI's size (22,856 utterances; text 1024-d, audio 512-d,
vision 1024-d: about 230 MB of features), runs a small grid on it (late fusion, one
epoch per run) with the ``local`` backend and 1 and 4 workers, and samples the workers'
memory while they train: the sum of their proportional set sizes (PSS, which splits a
page shared by n processes n ways) and of their resident sizes (RSS, which counts it in
every process). With shared datasets, 4 workers' PSS stays near one copy of the data.
Written to ``benchmarks/results/worker_memory.json``. Linux only (reads /proc).

    python benchmarks/worker_memory.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import REPO


def memory_of_children(parent: int) -> tuple[float, float]:
    """(PSS, RSS) in MiB summed over the processes whose parent is ``parent``."""
    pss = rss = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != parent:
                continue
            for line in (entry / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) / 1024
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1]) / 1024
        except (OSError, ValueError, IndexError):
            continue
    return pss, rss


def measure(workers: int, runs: int) -> dict:
    from imsa.data.registry import load_dataset
    from imsa.experiments.backends import LocalBackend
    from imsa.experiments.runner import Experiment, plan_experiment
    from imsa.protocols import Protocol
    from imsa.training import RunContext

    dataset = load_dataset("synthetic", num_videos=3228, min_utterances=5, max_utterances=9, dim_l=1024, dim_a=512, dim_v=1024, seed=0)
    data_mib = sum(x.nbytes for x in dataset.features.values()) / 2**20
    experiment = Experiment("late_fusion", dataset="synthetic", protocol=Protocol(), seeds=tuple(range(1, runs + 1)), config={"epochs": 1})
    peak = {"pss": 0.0, "rss": 0.0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            pss, rss = memory_of_children(os.getpid())
            peak["pss"], peak["rss"] = max(peak["pss"], pss), max(peak["rss"], rss)
            time.sleep(0.2)

    with tempfile.TemporaryDirectory() as out:
        specs = plan_experiment(experiment, out, dataset)
        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        started = time.perf_counter()
        list(LocalBackend(workers, threads=1).run(specs, {"synthetic": dataset}, context=RunContext(device="cpu")))
        wall = time.perf_counter() - started
        stop.set()
        watcher.join()
    return {
        "workers": workers,
        "runs": runs,
        "utterances": len(dataset),
        "features_mib": data_mib,
        "wall_s": wall,
        "peak_workers_pss_mib": peak["pss"],
        "peak_workers_rss_mib": peak["rss"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "worker_memory.json")
    args = parser.parse_args(argv)
    rows = []
    for workers in args.workers:
        row = measure(workers, args.runs)
        rows.append(row)
        print(
            f"{workers} worker(s): peak PSS {row['peak_workers_pss_mib']:.0f} MiB, RSS {row['peak_workers_rss_mib']:.0f} MiB "
            f"(features {row['features_mib']:.0f} MiB, {row['utterances']} utterances), {row['wall_s']:.0f} s",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "worker_memory", "rows": rows}, indent=1))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
