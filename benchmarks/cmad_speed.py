"""Speed and memory of CMAD: teacher and student on one mosi-bclstm fold, and the fine-tuned text encoder.

Part 1 trains CMAD with its packaged ``configs/cmad/mosi-bclstm.yaml`` on one fold and
reports wall time per phase (teacher, student), time per epoch, training utterances per
second, peak memory and the test Acc-2 under the 7 conditions. Part 2 (``--text``)
trains one teacher epoch and one student epoch with the all-MiniLM-L6-v2 encoder
fine-tuned on the real transcripts of ``mosi-transcripts`` (text + audio).

    python benchmarks/cmad_speed.py            # part 1 (about a minute on 2 cores)
    python benchmarks/cmad_speed.py --text     # parts 1 and 2
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import imsa.methods.base as method_base
from common import Timer, benchmark_parser, peak_rss_mib
from imsa import __version__
from imsa.config import build_config, packaged_config, parse_assignments
from imsa.data.registry import dataset_family, load_dataset
from imsa.methods.cmad import CMAD
from imsa.protocols import Protocol
from imsa.training import RunContext, seed_everything


def run(dataset_name: str, data_dir: Path, fold: int, seed: int, overrides: dict) -> dict:
    """Fit CMAD on one fold and time it; returns the report for that dataset."""
    config = build_config(CMAD.Config, packaged_config("cmad", dataset_name, family=dataset_family(dataset_name)).values, overrides)
    dataset = load_dataset(dataset_name, data_dir)
    splits = dataset.split(fold)
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    timer = Timer()
    evaluate = method_base.evaluate
    method_base.evaluate = timer.wrap(evaluate)  # validation goes through this name
    seed_everything(seed)
    method = CMAD(config)
    started = time.perf_counter()
    try:
        method.fit(train, valid, seed=seed, context=RunContext([timer]))
    finally:
        method_base.evaluate = evaluate  # a second run wraps the original, not this timer's wrapper
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    metrics = method.evaluate(test, Protocol().settings(test))
    test_s = time.perf_counter() - started
    phases = {}
    for name, row in timer.phases.items():
        epochs = len(row["result"].history)
        train_s = row["wall_s"] - row["validation_s"]
        phases[name] = {
            "epochs": epochs,
            "best_epoch": row["result"].best_epoch,
            "wall_s": row["wall_s"],
            "wall_per_epoch_s": row["wall_s"] / epochs,
            "validation_s_per_epoch": row["validation_s"] / epochs,
            "train_utterances_per_s": len(train) * epochs / train_s,
        }
    return {
        "dataset": dataset_name,
        "fold": fold,
        "seed": seed,
        "sizes": {"train": len(train), "valid": len(valid), "test": len(test)},
        "config": dataclasses.asdict(config),
        "parameters": {"student": sum(p.numel() for p in method.model_.parameters())},
        "wall_s": {"fit": fit_s, "test_evaluation": test_s},
        "phases": phases,
        "test_acc2_has0": {name: row["acc2_has0"] for name, row in metrics.items()},
    }


def show(report: dict) -> None:
    print(
        f"CMAD on {report['dataset']} fold {report['fold']}, seed {report['seed']}: fit {report['wall_s']['fit']:.1f} s, "
        f"test evaluation {report['wall_s']['test_evaluation']:.2f} s, {report['parameters']['student']:,} parameters"
    )
    print(f"{'phase':<10}{'epochs':>7}{'best':>6}{'wall s':>9}{'s/epoch':>9}{'valid s/ep':>11}{'train utt/s':>12}")
    for name, p in report["phases"].items():
        print(
            f"{name:<10}{p['epochs']:>7}{p['best_epoch']:>6}{p['wall_s']:>9.1f}{p['wall_per_epoch_s']:>9.2f}{p['validation_s_per_epoch']:>11.2f}{p['train_utterances_per_s']:>12.0f}"
        )
    names = list(report["test_acc2_has0"])
    print("test acc2_has0 " + "  ".join(f"{n}={report['test_acc2_has0'][n]:.3f}" for n in names))


def main(argv=None) -> int:
    parser = benchmark_parser(__doc__, "cmad_speed", set_help="config override for part 1 (repeatable)")
    parser.add_argument("--text", action="store_true", help="also one epoch per phase of the fine-tuned text encoder on mosi-transcripts")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    report = {
        "benchmark": "cmad_speed",
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "versions": {"imsa": __version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "features": run("mosi-bclstm", args.data_dir, args.fold, args.seed, parse_assignments(args.overrides)),
    }
    show(report["features"])
    if args.text:
        report["text_encoder"] = run("mosi-transcripts", args.data_dir, 0, args.seed, {"text_encoder": "minilm", "teacher_epochs": 1, "epochs": 1})
        show(report["text_encoder"])
    report["peak_rss_mib"] = peak_rss_mib()
    print(f"peak RSS {report['peak_rss_mib']:.0f} MiB, {report['threads']} threads, torch {torch.__version__}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
