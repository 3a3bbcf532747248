"""Start-up time of the ``imsa`` command: help, listings and argument errors.

Each command runs in a fresh process (the installed ``imsa`` entry point, as a user
types it) several times; the median wall time goes to
``benchmarks/results/cli_startup.json`` with the machine it ran on. None of these
commands imports torch (``tests/test_first_hour.py`` checks that), so they should
answer in well under 0.3 s.

    python benchmarks/cli_startup.py              # 15 repetitions per command
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import REPO

COMMANDS = [
    ["--help"],
    ["run", "--help"],
    ["methods"],
    ["data", "list"],
    ["run", "--modalities"],  # an argument error
    ["predict", "x", "--modalities", "l,x", "--out", "x.csv"],  # a bad value
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "cli_startup.json"))
    args = parser.parse_args()
    command = shutil.which("imsa") or sys.exit("the imsa command is not on PATH: pip install -e . first")
    results = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "XDG_CACHE_HOME": cache}
        for argv in COMMANDS:
            subprocess.run([command, *argv], capture_output=True, env=env)  # warm the file cache and byte code
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                subprocess.run([command, *argv], capture_output=True, env=env)
                times.append(time.perf_counter() - started)
            results.append({"command": "imsa " + " ".join(argv), "median_s": round(statistics.median(times), 4), "max_s": round(max(times), 4)})
            print(f"{results[-1]['command']:<55} median {results[-1]['median_s']:.3f} s  max {results[-1]['max_s']:.3f} s")
    record = {
        "machine": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "repeats": args.repeats,
        "commands": results,
    }
    with open(args.out, "w") as f:
        json.dump(record, f, indent=2)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
