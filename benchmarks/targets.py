"""The speed targets of imsa's slow methods, measured the way a user meets them: whole
``imsa run`` commands on the real data, one thread, in child processes, CPU seconds from
``wait4``. Each target runs twice, at its epoch count and at a short one, so that the CPU
per epoch is the marginal cost (start-up, loading and the final scoring cancel). The test
metrics of the long run are kept, so a change in speed that moved the results shows.
Written to ``benchmarks/results/targets.{json,md}``.

    python benchmarks/targets.py
    python benchmarks/targets.py --only lnln
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, default_data_dir, machine

# name: (imsa run arguments, epochs key, long and short epoch counts, CPU-s per epoch and per run at most, the condition whose test metrics are kept)
TARGETS = {
    "gcnet": (
        ["--method", "gcnet", "--dataset", "mosi-bclstm", "--protocol", "random", "--rate", "0.2", "--folds", "0", "--seeds", "1"],
        "epochs",
        (100, 10),
        (0.6, 70.0),
        "rate=0.2",
    ),
    "lnln": (
        ["--method", "lnln", "--dataset", "mosi-misa", "--protocol", "frames", "--folds", "0", "--seeds", "1"],
        "epochs",
        (40, 4),
        (None, 120.0),
        "frames=0.5",
    ),
    "imder": (
        [
            "--method",
            "imder",
            "--dataset",
            "mosi-misa",
            "--protocol",
            "fixed",
            "--folds",
            "0",
            "--seeds",
            "1",
            "--set",
            "sampling_steps=100",
            "--set",
            "pretrain_epochs=1",
        ],
        "epochs",
        (3, 1),
        (10.0, None),
        "l,a,v",
    ),
}


def run_child(command: list[str]) -> tuple[float, float]:
    """CPU seconds (user + system) and peak RSS in MiB of a one-thread child process."""
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{process.stderr.read().decode()[-2000:]}")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def measure(name: str, data_dir: Path, work: Path) -> dict:
    arguments, key, (long, short), (epoch_limit, run_limit), condition = TARGETS[name]

    def run(epochs: int) -> tuple[float, float, Path]:
        out = work / f"{name}-{epochs}"
        command = [sys.executable, "-m", "imsa.cli", "run", *arguments, "--set", f"{key}={epochs}", "--threads", "1"]
        command += ["--data-dir", str(data_dir), "--out", str(out), "--quiet", "--checkpoint-interval", "3600"]
        return (*run_child(command), out)

    total, rss, out = run(long)
    short_total, _, _ = run(short)
    record = json.loads(next((out / "runs").glob("*.json")).read_text())
    per_epoch = (total - short_total) / (long - short)
    return {
        "command": "imsa run " + " ".join(arguments) + f" --set {key}={long} --threads 1",
        "epochs": long,
        "cpu_s": round(total, 1),
        "cpu_s_per_epoch": round(per_epoch, 3),
        "peak_rss_mib": round(rss),
        "target_cpu_s_per_epoch": epoch_limit,
        "target_cpu_s": run_limit,
        "holds": (epoch_limit is None or per_epoch <= epoch_limit) and (run_limit is None or total <= run_limit),
        "test_condition": condition,
        "test": {k: round(v, 4) for k, v in record["metrics"]["test"][condition].items()},
    }


def markdown(report: dict) -> str:
    lines = [
        "# Speed targets",
        "",
        f"`python benchmarks/targets.py {' '.join(report['argv'])}` on {report['machine']}, one thread. CPU seconds of the whole "
        "command (user + system); per epoch: the marginal cost between a long and a short run of the same command.",
        "",
        "| method | command | CPU s | CPU s per epoch | peak RSS MiB | target | holds | test metrics |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in report["targets"].items():
        limits = [
            f"≤ {row['target_cpu_s_per_epoch']} s/epoch" if row["target_cpu_s_per_epoch"] else "",
            f"≤ {row['target_cpu_s']} s/run" if row["target_cpu_s"] else "",
        ]
        test = ", ".join(f"{k} {row['test'][k]:.3f}" for k in ("mae", "acc2_non0", "f1_non0") if k in row["test"])
        lines.append(
            f"| {name} | `{row['command']}` | {row['cpu_s']:.1f} | {row['cpu_s_per_epoch']:.3f} | {row['peak_rss_mib']} | "
            f"{', '.join(x for x in limits if x)} | {'yes' if row['holds'] else 'no'} | {row['test_condition']}: {test} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(TARGETS), help="measure these targets and keep the others' rows")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "targets")
    args = parser.parse_args()
    path = args.out.with_suffix(".json")
    previous = json.loads(path.read_text())["targets"] if args.only and path.exists() else {}
    report = {"benchmark": "targets", "argv": sys.argv[1:], "machine": machine(), "targets": previous}
    with tempfile.TemporaryDirectory() as work:
        for name in args.only or TARGETS:
            report["targets"][name] = measure(name, args.data_dir, Path(work))
            print(json.dumps({name: report["targets"][name]}), flush=True)
            path.write_text(json.dumps(report, indent=2) + "\n")
            args.out.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {path} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
