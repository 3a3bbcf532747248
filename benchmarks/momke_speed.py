"""Speed and memory of one MoMKE training run on mosi-bclstm, with its test scores.

Trains MoMKE on one fold of ``mosi-bclstm`` with the paper's MOSI settings (the packaged
``configs/momke/mosi.yaml``: 300 epochs, 150 in stage 1 and 150 in stage 2, 32 videos per batch)
and reports wall time (total and per phase), time per epoch, training throughput, peak
memory and the test metrics under the 7 fixed conditions. By default stage 2 trains one
model for all conditions (``per_condition=false``: one complete 300-epoch run);
``--per-condition`` trains the paper's 7 stage-2 models instead.

Timing notes: the loop's per-epoch ``seconds`` (TrainResult history) covers the training
pass *and* the validation that follows it; validation is timed separately here by
wrapping the scorers, and training time is the difference.

    python benchmarks/momke_speed.py                         # the full paper setting (minutes)
    python benchmarks/momke_speed.py --set epochs=3 --set stage1_epochs=3   # a smoke run
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time

import numpy as np
import torch

import imsa.methods.momke as momke_module
import imsa.methods.phase as method_base
from common import Timer, benchmark_parser, peak_rss_mib
from imsa import __version__
from imsa.config import build_config, packaged_config, parse_assignments
from imsa.data.registry import dataset_family, load_dataset
from imsa.methods.momke import MoMKE
from imsa.missing import fixed_conditions
from imsa.protocols import Protocol
from imsa.training import RunContext, seed_everything

DATASET = "mosi-bclstm"


def phase_report(row: dict, train_utterances: int) -> dict:
    result = row["result"]
    seconds = [h["seconds"] for h in result.history]
    epochs = len(seconds)
    epoch_s = float(np.sum(seconds))
    train_s = max(epoch_s - row["validation_s"], 1e-12)
    return {
        "epochs": epochs,
        "best_epoch": result.best_epoch,
        "best_valid_score": result.best_score,
        "wall_s": row["wall_s"],
        "epoch_s_mean": epoch_s / epochs,  # history seconds: training pass + validation
        "validation_s_mean": row["validation_s"] / epochs,
        "train_s_mean": train_s / epochs,
        "wall_per_epoch_s": row["wall_s"] / epochs,  # + checkpointing, selection copies, callbacks
        "train_utterances_per_s": train_utterances * epochs / train_s,
        "_train_s": train_s,
    }


def main(argv=None) -> int:
    parser = benchmark_parser(__doc__, "momke_speed")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for matrix products")
    parser.add_argument("--per-condition", action="store_true", help="the paper's 7 stage-2 models, one per test condition")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {"per_condition": args.per_condition, **({"bf16": True} if args.bf16 else {}), **parse_assignments(args.overrides)}
    config = build_config(MoMKE.Config, packaged_config("momke", DATASET, family=dataset_family(DATASET)).values, overrides)

    dataset = load_dataset(DATASET, args.data_dir)
    splits = dataset.split(args.fold)
    train, valid, test = splits["train"], splits["valid"], splits["test"]

    timer = Timer()
    # Validation runs through these two names: stage 1's per-modality scores, stage 2's default scorer.
    momke_module.predict_settings = timer.wrap(momke_module.predict_settings)
    method_base.evaluate = timer.wrap(method_base.evaluate)

    seed_everything(args.seed)
    method = MoMKE(config)
    started = time.perf_counter()
    method.fit(train, valid, seed=args.seed, context=RunContext([timer]))
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    metrics = method.evaluate(test, Protocol().settings(test))
    test_s = time.perf_counter() - started

    phases = {name: phase_report(row, len(train)) for name, row in timer.phases.items()}
    epochs = sum(p["epochs"] for p in phases.values())
    train_s = sum(p.pop("_train_s") for p in phases.values())
    validation_s = sum(row["validation_s"] for row in timer.phases.values())
    conditions = [c.name for c in fixed_conditions(dataset.modalities)] + ["mean"]
    device = next(method.model_.parameters()).device
    report = {
        "benchmark": "momke_speed",
        "dataset": DATASET,
        "fold": args.fold,
        "seed": args.seed,
        "sizes": {"train_utterances": len(train), "train_videos": len(train.videos), "valid_utterances": len(valid), "test_utterances": len(test)},
        "config": dataclasses.asdict(config),
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "versions": {"imsa": __version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "parameters_per_model": sum(p.numel() for p in MoMKE(config).build(method.spec_).parameters()),
        "wall_s": {"total": fit_s + test_s, "fit": fit_s, "test_evaluation": test_s, "per_phase": {name: p["wall_s"] for name, p in phases.items()}},
        "epochs": epochs,
        "epoch_s_mean": sum(p["epoch_s_mean"] * p["epochs"] for p in phases.values()) / epochs,
        "train_s_mean": train_s / epochs,
        "validation_s_mean": validation_s / epochs,
        "wall_per_epoch_s": fit_s / epochs,
        "train_utterances_per_s": len(train) * epochs / train_s,
        "peak_rss_mib": peak_rss_mib(),
        "cuda_max_memory_allocated_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "phases": phases,
        "test": {name: {"acc2_has0": metrics[name]["acc2_has0"], "mae": metrics[name]["mae"]} for name in conditions},
    }

    print(f"MoMKE on {DATASET} fold {args.fold}, seed {args.seed}: {epochs} epochs, per_condition={config.per_condition}, bf16={config.bf16}")
    print(f"device {report['device']}, {report['threads']} threads, torch {torch.__version__}, {report['parameters_per_model']:,} parameters per model")
    print(f"wall {report['wall_s']['total']:.1f} s (fit {fit_s:.1f} s, test {test_s:.2f} s); peak RSS {report['peak_rss_mib']:.0f} MiB")
    print(
        f"per epoch: {report['epoch_s_mean']:.3f} s (train {report['train_s_mean']:.3f} s + validation {report['validation_s_mean']:.3f} s), "
        f"wall/epoch {report['wall_per_epoch_s']:.3f} s; {report['train_utterances_per_s']:.0f} training utterances/s"
    )
    print(f"{'phase':<16}{'epochs':>7}{'wall s':>9}{'epoch s':>9}{'train s':>9}{'valid s':>9}{'utt/s':>8}{'best':>6}")
    for name, p in phases.items():
        print(
            f"{name:<16}{p['epochs']:>7}{p['wall_s']:>9.2f}{p['epoch_s_mean']:>9.3f}{p['train_s_mean']:>9.3f}"
            f"{p['validation_s_mean']:>9.3f}{p['train_utterances_per_s']:>8.0f}{p['best_epoch']:>6}"
        )
    print(f"{'test':<8}" + "".join(f"{name:>9}" for name in conditions))
    for metric in ("acc2_has0", "mae"):
        print(f"{metric:<8}" + "".join(f"{report['test'][name][metric]:>9.4f}" for name in conditions))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
