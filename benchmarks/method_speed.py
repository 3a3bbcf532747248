"""What one epoch of each method costs at CMU-MOSEI's shapes, and how it grows with the data.

For every registered method (or ``--methods``) and every ``--sizes`` (training utterances),
one fresh process builds synthetic data with MOSEI's aligned shapes (50 steps; text 768,
audio 74, vision 35; 20 utterances per video), fits the method with **one epoch of every
phase** (``epochs`` and each ``*_epochs`` key set to 1; otherwise the method's defaults,
the released MOSI settings for most), and scores the test split under the seven fixed
conditions. It records the CPU seconds and wall seconds of the fit, the seconds of each
phase's epoch (training and validation), the seconds of the scoring, the peak resident
memory of the process and the parameter count. From consecutive sizes it reports the marginal cost per 1,000 training
utterances and the cost extrapolated to MOSEI's 16,326 training utterances, and whether
the growth is linear (the ratio of the marginal costs between consecutive sizes). Written to
``benchmarks/results/method_speed.{json,md}``.

    python benchmarks/method_speed.py --threads 1                                      # every method, CPU
    python benchmarks/method_speed.py --methods late_fusion tfn --sizes 2000 16326
    python benchmarks/method_speed.py --device cuda --sizes 4000 16326 --out /tmp/gpu   # a GPU machine

``--set METHOD.KEY=VALUE`` changes one method's config (e.g. ``imder.sampling_steps=10``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, peak_rss_mib

MOSEI_TRAIN = 16_326  # CMU-MOSEI's standard training split
PER_VIDEO = 20


def mosei_split(size: int) -> dict:
    """The train/valid/test subsets of synthetic data of MOSEI's shapes with about ``size`` training utterances."""
    import imsa

    videos = max(5, math.ceil(size / (0.6 * PER_VIDEO)))
    data = imsa.load_dataset("synthetic", like="mosei", num_videos=videos, min_utterances=PER_VIDEO, max_utterances=PER_VIDEO, seed=0)
    return data.split(0)


def smaller_split(split: dict, size: int) -> dict:
    """The first videos of every split of ``split``, in the proportion of ``size`` to its training
    utterances: one generated dataset serves every size (generating MOSEI's shapes takes a minute)."""
    from imsa.data.dataset import Subset

    share = size / len(split["train"])
    return {name: Subset(part.dataset, part.videos[: max(1, round(share * len(part.videos)))]) for name, part in split.items()}


def measure(method_name: str, size: int, device: str, threads: int, overrides: dict, split: dict | None = None) -> dict:
    """One method at one size, in this process (on CPU run in a fresh process per case, so that
    peak memory is the case's alone; on a GPU the peak is the device's, reset per case)."""
    import torch

    from imsa.methods import method_class
    from imsa.protocols import Protocol
    from imsa.training import RunContext

    torch.set_num_threads(threads)
    split = split or mosei_split(size)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    cls = method_class(method_name)
    fields = cls.Config.__dataclass_fields__
    one_epoch = {key: 1 for key in fields if key == "epochs" or key.endswith("_epochs")}
    method = cls({**one_epoch, "patience": None, **overrides})

    class PhaseTimer:
        def __init__(self):
            self.seconds: dict[str, float] = {}

        def on_epoch_end(self, phase, epoch, logs):
            self.seconds[phase] = self.seconds.get(phase, 0.0) + logs["seconds"]

    timer = PhaseTimer()
    synchronize = torch.cuda.synchronize if cuda else lambda: None
    cpu, wall = time.process_time(), time.perf_counter()
    method.fit(split["train"], split["valid"], seed=1, context=RunContext(callbacks=[timer], device=device, threads=threads))
    synchronize()
    fit_cpu, fit_wall = time.process_time() - cpu, time.perf_counter() - wall
    wall = time.perf_counter()
    method.evaluate(split["test"], Protocol("fixed").settings(split["test"]))
    synchronize()
    evaluate_wall = time.perf_counter() - wall
    return {
        "method": method_name,
        "train_utterances": len(split["train"]),
        "test_utterances": len(split["test"]),
        "epoch_keys": sorted(one_epoch),
        "overrides": overrides,
        "fit_cpu_s": round(fit_cpu, 3),
        "fit_wall_s": round(fit_wall, 3),
        "phase_seconds": {phase: round(s, 3) for phase, s in timer.seconds.items()},
        "evaluate_7_conditions_wall_s": round(evaluate_wall, 3),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        **({"peak_gpu_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)} if cuda else {}),
        "parameters": sum(p.numel() for p in method.model_.parameters()),
    }


class CaseTimeout(Exception):
    pass


def measure_on_gpu(methods: list[str], sizes: list[int], args, per_method: dict, record) -> None:
    """Every case in this process on one generated dataset (smaller sizes are its first videos),
    method by method so that each measured method has every size; a case stops after
    ``--timeout`` seconds and no case starts after ``--deadline``."""
    import signal

    import torch

    def expire(signum, frame):
        raise CaseTimeout

    signal.signal(signal.SIGALRM, expire)
    started = time.perf_counter()
    largest = mosei_split(max(sizes))
    print(f"generated {len(largest['train'])} training utterances in {time.perf_counter() - started:.0f} s", flush=True)
    splits = {size: largest if size == max(sizes) else smaller_split(largest, size) for size in sizes}
    warm_up = smaller_split(largest, min(200, min(sizes)))
    for name in methods:
        rows = []
        late = args.deadline and time.perf_counter() - started > args.deadline
        # one small fit first, so that no size pays for CUDA's start or the method's first kernels
        signal.alarm(0 if late else args.timeout)
        try:
            late or measure(name, 0, args.device, args.threads, per_method[name], warm_up)
        except (CaseTimeout, Exception):
            pass  # the measured cases below record the failure
        finally:
            signal.alarm(0)
        for size in sizes:
            if args.deadline and time.perf_counter() - started > args.deadline:
                rows.append({"method": name, "size": size, "error": f"not started: the {args.deadline} s deadline had passed"})
                continue
            signal.alarm(args.timeout)
            try:
                rows.append(measure(name, size, args.device, args.threads, per_method[name], splits[size]))
            except CaseTimeout:
                rows.append({"method": name, "size": size, "error": f"stopped after {args.timeout} s"})
            except Exception as error:  # one method's failure must not lose the others' rows
                rows.append({"method": name, "size": size, "error": f"{type(error).__name__}: {error}"[:300]})
            finally:
                signal.alarm(0)
                torch.cuda.empty_cache()
            print(json.dumps(rows[-1]), flush=True)
        record(name, rows)


def run_case(method_name: str, size: int, args, overrides: dict) -> dict:
    """``measure`` in a fresh interpreter, so that peak memory is this case's alone."""
    code = "import json, sys; sys.path.insert(0, %r); from method_speed import measure; print(json.dumps(measure(%r, %d, %r, %d, %r)))" % (
        str(Path(__file__).parent),
        method_name,
        size,
        args.device,
        args.threads,
        overrides,
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=args.timeout)
    if result.returncode != 0:
        return {"method": method_name, "size": size, "error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def scaling(rows: list[dict], seconds: str = "fit_cpu_s", memory: str = "peak_rss_mib") -> dict:
    """Marginal seconds (CPU seconds on a CPU, wall seconds on a GPU) per 1,000 training
    utterances between consecutive sizes (the fixed cost of building a model cancels), the
    ratio of the last to the first (1.0 = linear growth; with two sizes, the fixed cost's share:
    seconds per 1,000 at the larger size over those at the smaller), and MOSEI's epoch and peak
    memory extrapolated along the last of them."""
    ok = sorted((r for r in rows if "error" not in r), key=lambda r: r["train_utterances"])
    if len(ok) < 2:
        return {}
    slopes = [(b[seconds] - a[seconds]) / (b["train_utterances"] - a["train_utterances"]) for a, b in zip(ok, ok[1:])]
    per_memory = (ok[-1][memory] - ok[-2][memory]) / (ok[-1]["train_utterances"] - ok[-2]["train_utterances"])
    remaining = MOSEI_TRAIN - ok[-1]["train_utterances"]
    per_utterance = [r[seconds] / r["train_utterances"] for r in ok]
    return {
        "marginal_s_per_1000_train_utterances": [round(1000 * s, 2) for s in slopes],
        "growth_ratio": round(slopes[-1] / slopes[0], 2) if len(slopes) > 1 and slopes[0] > 0 else None,
        "s_per_1000_train_utterances": [round(1000 * s, 3) for s in per_utterance],
        "mosei_epoch_s_extrapolated": round(ok[-1][seconds] + slopes[-1] * remaining, 1),
        "peak_mib_extrapolated": round(ok[-1][memory] + per_memory * remaining, 1),
    }


def markdown(report: dict) -> str:
    gpu = report["device"].startswith("cuda")
    unit = "wall s" if gpu else "CPU s"
    memory = "peak GPU MiB" if gpu else "peak RSS MiB"
    lines = [
        "# One epoch of every phase at CMU-MOSEI's shapes",
        "",
        f"`python benchmarks/method_speed.py {' '.join(report['argv'])}` on {report['machine']}, device {report['device']}, "
        f"{report['threads']} thread(s). Synthetic aligned sequences with MOSEI's shapes (50 steps; 768 / 74 / 35), "
        "each method at its defaults with `epochs` and every `*_epochs` key set to 1. `fit` covers every phase's "
        "one epoch (training and validation); `MOSEI epoch` extrapolates to 16,326 training "
        f"utterances along the marginal {unit} between the two largest sizes; `growth` is the ratio of the last marginal cost to the "
        "first (1.0 = linear); `per 1,000` is the whole fit's cost per 1,000 training utterances at each size "
        "(equal values: the cost grows in proportion to the data). "
        + (
            "All cases ran in one process on one generated dataset (the smaller sizes are its first videos, in every split); "
            "peak memory is the GPU's, reset before each case."
            if gpu
            else "Each case ran in a fresh process; peak memory includes the synthetic dataset itself (all three splits in memory)."
        ),
        *["", *(f"Later rows: `python benchmarks/method_speed.py {' '.join(argv)}`." for argv in report.get("updates", []))],
        "",
        f"| method | train utterances | fit CPU s | fit wall s | phases (s) | evaluate 7 conditions (s) | {memory} | parameters |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        if "error" in row:
            lines.append(f"| {row['method']} | {row['size']} | error: {row['error']} | | | | | |")
            continue
        phases = ", ".join(f"{k} {v:.2f}" for k, v in row["phase_seconds"].items())
        lines.append(
            f"| {row['method']} | {row['train_utterances']} | {row['fit_cpu_s']:.2f} | {row['fit_wall_s']:.2f} | {phases} | "
            f"{row['evaluate_7_conditions_wall_s']:.2f} | {row['peak_gpu_mib' if gpu else 'peak_rss_mib']:.0f} | {row['parameters']:,} |"
        )
    lines += [
        "",
        f"| method | marginal {unit} per 1,000 training utterances | growth | {unit} per 1,000 (whole fit) | MOSEI epoch {unit} (extrapolated) | {memory} at MOSEI (extrapolated) |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in report["scaling"].items():
        if s:
            per_k = " → ".join(f"{v:.2f}" for v in s["marginal_s_per_1000_train_utterances"])
            whole = " → ".join(f"{v:.3f}" for v in s["s_per_1000_train_utterances"])
            lines.append(f"| {name} | {per_k} | {s['growth_ratio']} | {whole} | {s['mosei_epoch_s_extrapolated']:,} | {s['peak_mib_extrapolated']:,} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", help="default: every registered method")
    parser.add_argument(
        "--sizes", nargs="+", type=int, default=[200, 400, 800], help="training utterances (default 200 400 800; three sizes show whether the growth is linear)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per case before it is recorded as an error")
    parser.add_argument("--deadline", type=int, default=0, help="on a GPU: start no case after this many seconds (0: none)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="METHOD.KEY=VALUE")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "method_speed")
    parser.add_argument(
        "--update", action="store_true", help="replace only the measured methods' rows in an existing --out file (its other rows and commands stay)"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from imsa.config import parse_assignments
    from imsa.methods import list_methods

    methods = args.methods or list_methods()
    per_method: dict[str, dict] = {name: {} for name in methods}
    for item in args.overrides:
        key, _, _ = item.partition("=")
        name, _, _ = key.partition(".")
        if name not in per_method:
            parser.error(f"--set {item}: {name!r} is not one of the methods measured")
        per_method[name].update(parse_assignments([item.split(".", 1)[1]]))
    import torch

    report = {
        "benchmark": "method_speed",
        "argv": sys.argv[1:],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "device": args.device,
        "threads": args.threads,
        "rows": [],
        "scaling": {},
    }
    if args.update and args.out.with_suffix(".json").exists():
        previous = json.loads(args.out.with_suffix(".json").read_text())
        report["argv"], report["updates"] = previous["argv"], previous.get("updates", []) + [sys.argv[1:]]
        report["rows"] = [row for row in previous["rows"] if row["method"] not in methods]
        report["scaling"] = {name: s for name, s in previous["scaling"].items() if name not in methods}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def record(name: str, measured: list[dict]) -> None:
        report["rows"] += measured
        report["scaling"][name] = scaling(measured, *(("fit_wall_s", "peak_gpu_mib") if args.device.startswith("cuda") else ()))
        # written after every method, so a run cut short keeps what it measured
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(markdown(report))

    if args.device.startswith("cuda"):
        measure_on_gpu(methods, args.sizes, args, per_method, record)
    else:
        for name in methods:
            measured = []
            for size in args.sizes:
                row = run_case(name, size, args, per_method[name])
                print(json.dumps(row), flush=True)
                measured.append(row)
            record(name, measured)
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
