"""What the benchmark scripts share: their command-line options, the data root, peak memory and a phase timer."""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    return Path(os.environ["IMSA_DATA"]) if os.environ.get("IMSA_DATA") else REPO.parent / "shared" / "datasets"


def benchmark_parser(doc: str, name: str, *, set_help: str = "config override (repeatable)") -> argparse.ArgumentParser:
    """The options every benchmark takes: data root, fold, seed, threads, overrides and the output file."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir", type=Path, default=default_data_dir(), help="data root (default: $IMSA_DATA, else ../shared/datasets beside the repository)"
    )
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / f"{name}.json")
    return parser


def machine() -> str:
    """The processor's model name and core count: absolute timings depend on both (the same
    LSTM kernels rank differently on AMD and Intel processors)."""
    import platform

    model = (
        next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), None)
        if Path("/proc/cpuinfo").exists()
        else None
    )
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def peak_rss_mib() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


class Timer:
    """Callback timing each phase, and the validation inside it (through :meth:`wrap`)."""

    def __init__(self):
        self.phases: dict[str, dict] = {}
        self.current: str | None = None
        self._started = 0.0

    def on_phase_start(self, phase, epochs, start_epoch):
        self.current = phase
        self.phases[phase] = {"epochs": epochs, "start_epoch": start_epoch, "validation_s": 0.0, "epoch_ends": 0}
        self._started = time.perf_counter()

    def on_epoch_end(self, phase, epoch, logs):
        self.phases[phase]["epoch_ends"] += 1

    def on_phase_end(self, phase, result):
        row = self.phases[phase]
        row["wall_s"] = time.perf_counter() - self._started
        row["result"] = result
        self.current = None

    def wrap(self, fn):
        """``fn`` with its run time added to the current phase's validation time."""

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if self.current is not None:
                    self.phases[self.current]["validation_s"] += time.perf_counter() - started

        return timed
