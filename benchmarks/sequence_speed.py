"""Cost of the sequence methods at CMU-MOSI's aligned shapes (50 steps; text 768, audio 5,
vision 20), on synthetic data of those shapes: seconds per training epoch of each phase
and milliseconds per predicted utterance under a condition that misses two modalities,
for MulT, DiCMoR and IMDer at several sampling steps. Written to
``benchmarks/results/sequence_speed.json``.

    python benchmarks/sequence_speed.py --threads 1
    python benchmarks/sequence_speed.py --device cuda --steps 100 10 1
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from common import REPO


class EpochTimer:
    def __init__(self):
        self.seconds: dict[str, list[float]] = {}

    def on_epoch_end(self, phase, epoch, logs):
        self.seconds.setdefault(phase, []).append(logs["seconds"])


def measure(name: str, options: dict, split, device: str) -> dict:
    from imsa.batch import iterate_batches
    from imsa.methods import method_class
    from imsa.training import RunContext

    timer = EpochTimer()
    cls = method_class(name)
    short = {key: 1 for key in ("epochs", "pretrain_epochs") if key in cls.Config.__dataclass_fields__}
    method = cls({**short, "patience": None, **options})
    started = time.perf_counter()
    method.fit(split["train"], split["valid"], seed=0, context=RunContext(callbacks=[timer], device=device))
    fit_seconds = time.perf_counter() - started
    test = split["test"]
    only_text = torch.tensor([True, False, False])
    started = time.perf_counter()
    for batch in iterate_batches(test, 64, device=device):
        method.predict(batch, only_text.expand(len(batch), 3))
    predict_ms = 1000 * (time.perf_counter() - started) / len(test)
    return {
        "method": name,
        "options": options,
        "epoch_seconds": {k: float(np.mean(v)) for k, v in timer.seconds.items()},
        "fit_seconds": fit_seconds,
        "predict_ms_per_utterance_two_missing": predict_ms,
        "parameters": sum(p.numel() for p in method.model_.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--videos", type=int, default=12, help="synthetic videos (about 11 utterances each)")
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 10], help="IMDer sampling steps to measure")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sequence_speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from imsa.data.registry import load_dataset

    data = load_dataset("synthetic", num_videos=args.videos, like="mosi", seed=0)
    split = data.split(0)
    cases = [("mult", {}), ("dicmor", {"per_condition": False})] + [("imder", {"sampling_steps": s}) for s in args.steps]
    results = []
    for name, options in cases:
        results.append(measure(name, options, split, args.device))
        print(json.dumps(results[-1]))
    report = {
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": args.threads,
        "device": args.device,
        "data": f"synthetic like=mosi, {args.videos} videos: train {len(split['train'])}, test {len(split['test'])} utterances",
        "cases": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
