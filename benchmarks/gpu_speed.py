"""Speed, memory and metric agreement of imsa's methods on a device, fp32 against bf16.

For each case (late fusion, one 300-epoch MoMKE fold with the paper's MOSI settings, one
CMAD fold, CMAD with all-MiniLM-L6-v2 fine-tuned on ``mosi-transcripts``) and each
precision: wall time, seconds per epoch, training utterances per second, peak device
memory, and the test metrics; with ``--compare-cpu``, the same fp32 case on the CPU and
the largest difference of its test metrics from the device's. With ``--grid-workers``,
the 45-run ``grids/mosi_methods.yaml`` grid with that many local workers sharing GPU 0
(runs per hour). Written to ``benchmarks/results/gpu_speed.json``.

    python benchmarks/gpu_speed.py --device cuda --compare-cpu --grid-workers 6   # the GPU report
    python benchmarks/gpu_speed.py --device cpu --cases late_fusion --epochs-scale 0.02   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import REPO, default_data_dir, peak_rss_mib

CASES = {
    # name: (method, dataset, overrides)
    "late_fusion": ("late_fusion", "mosi-bclstm", {}),
    "momke": ("momke", "mosi-bclstm", {"per_condition": False}),
    "cmad": ("cmad", "mosi-bclstm", {"patience": None}),
    "cmad_minilm": ("cmad", "mosi-transcripts", {"text_encoder": "minilm", "teacher_epochs": 3, "epochs": 3, "patience": None}),
}
EPOCH_KEYS = ("epochs", "stage1_epochs", "teacher_epochs")


def run_case(name: str, device: str, precision: str, data_dir: Path, fold: int, seed: int, scale: float) -> dict:
    from imsa.config import build_config
    from imsa.data.registry import load_dataset
    from imsa.experiments.runner import Experiment
    from imsa.methods import method_class
    from imsa.protocols import Protocol
    from imsa.training import RunContext, seed_everything

    method_name, dataset_name, overrides = CASES[name]
    dataset = load_dataset(dataset_name, data_dir)
    cls = method_class(method_name)
    config = Experiment(method_name, dataset=dataset_name).resolved_config(dataset.family)
    values = {**overrides}
    for key in EPOCH_KEYS:
        if hasattr(config, key):
            values[key] = max(1, round(values.get(key, getattr(config, key)) * scale))
    config = build_config(cls.Config, {**config.__dict__, **values})
    splits = dataset.split(fold)
    context = RunContext(device=device, precision=precision)
    if context.torch_device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    seed_everything(seed)
    started = time.perf_counter()
    method = cls(config).fit(splits["train"], splits["valid"], seed=seed, context=context)
    if context.torch_device.type == "cuda":
        torch.cuda.synchronize()
    fit_s = time.perf_counter() - started
    test = splits["test"]
    metrics = method.evaluate(test, Protocol().settings(test))
    epochs = sum(p.epochs_run for p in method.phases_)
    utterances = sum(p.epochs_run for p in method.phases_) * len(splits["train"])
    return {
        "case": name,
        "method": method_name,
        "dataset": dataset_name,
        "device": context.device,
        "precision": precision,
        "epochs": epochs,
        "fit_s": fit_s,
        "s_per_epoch": fit_s / epochs,
        "train_utterances_per_s": utterances / fit_s,
        "peak_device_mib": torch.cuda.max_memory_allocated() / 2**20 if context.torch_device.type == "cuda" else None,
        "test_mean": {k: metrics["mean"][k] for k in ("acc2_has0", "mae")},
    }


def grid_throughput(workers: int, data_dir: Path) -> dict:
    out = REPO / "runs" / f"gpu-grid-{time.strftime('%Y%m%d-%H%M%S')}"
    command = [
        "imsa",
        "grid",
        "run",
        str(REPO / "grids" / "mosi_methods.yaml"),
        "--out",
        str(out),
        "--backend",
        "local",
        "--workers",
        str(workers),
        "--gpus",
        "0",
        "--device",
        "cuda",
        "--data-dir",
        str(data_dir),
        "--quiet",
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    runs = len(list(out.glob("**/runs/*.json")))
    return {"workers": workers, "runs": runs, "wall_s": wall, "runs_per_hour": runs * 3600 / wall, "exit": done.returncode, "stderr_tail": done.stderr[-2000:]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every phase's epochs (a smoke run: 0.02)")
    parser.add_argument("--compare-cpu", action="store_true", help="also run each fp32 case on the CPU and compare the test metrics")
    parser.add_argument("--grid-workers", type=int, default=0, help="also run the 45-run mosi_methods grid with this many workers on GPU 0")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu_speed.json")
    args = parser.parse_args(argv)

    from imsa.devices import describe_device, resolve_device

    device = str(resolve_device(args.device))
    rows = []
    for name in args.cases:
        for precision in args.precisions:
            row = run_case(name, device, precision, args.data_dir, args.fold, args.seed, args.epochs_scale)
            rows.append(row)
            print(
                f"{name:<12} {precision:<5} {row['epochs']:>4} epochs {row['fit_s']:8.1f} s  {row['s_per_epoch']:.3f} s/epoch  "
                f"{row['train_utterances_per_s']:9.0f} utt/s  test acc2_has0 {row['test_mean']['acc2_has0']:.4f} mae {row['test_mean']['mae']:.4f}",
                flush=True,
            )
        if args.compare_cpu and device != "cpu":
            cpu = run_case(name, "cpu", "fp32", args.data_dir, args.fold, args.seed, args.epochs_scale)
            gpu = next(r for r in rows if r["case"] == name and r["precision"] == "fp32")
            cpu["max_metric_difference_from_device"] = max(abs(cpu["test_mean"][k] - gpu["test_mean"][k]) for k in cpu["test_mean"])
            rows.append(cpu)
            print(
                f"{name:<12} cpu fp32 {cpu['fit_s']:8.1f} s; test metrics differ from {device} by at most {cpu['max_metric_difference_from_device']:.4f}",
                flush=True,
            )
    report = {
        "benchmark": "gpu_speed",
        "execution": describe_device(torch.device(device)),
        "python": platform.python_version(),
        "epochs_scale": args.epochs_scale,
        "rows": rows,
        "peak_rss_mib": peak_rss_mib(),
    }
    if args.grid_workers:
        report["grid"] = grid_throughput(args.grid_workers, args.data_dir)
        print(
            f"grid: {report['grid']['runs']} runs in {report['grid']['wall_s']:.0f} s with {args.grid_workers} workers on GPU 0 ({report['grid']['runs_per_hour']:.0f} runs/h)"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
