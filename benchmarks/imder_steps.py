"""IMDer's accuracy against its sampling steps: one IMDer model trained on real word-aligned
CMU-MOSI sequences (``mosi-misa``, one fold), then its test split scored under every
fixed condition with the sampler run at several step counts, with the seconds each took.
The score networks are trained by score matching, which does not depend on the step
count, so one model serves every count; the refiners saw samples of the training count.
Written to ``benchmarks/results/imder_steps.json`` and ``.md``.

    python benchmarks/imder_steps.py --threads 1
    python benchmarks/imder_steps.py --steps 1 10 100 --set epochs=20
"""

from __future__ import annotations

import json
import platform
import time

import numpy as np
import torch

from common import benchmark_parser

# grids/sequence_recovery.yaml's CPU settings for IMDer, with 10 recovery epochs instead of 8
TRAINING = {"padding_mask": True, "pretrain_epochs": 30, "epochs": 10, "sampling_steps": 10}


def main() -> None:
    parser = benchmark_parser(__doc__, "imder_steps")
    parser.add_argument("--dataset", default="mosi-misa")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 3, 10, 30, 100])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from imsa.config import parse_assignments
    from imsa.data.registry import load_dataset
    from imsa.methods import method_class
    from imsa.protocols import Protocol

    split = load_dataset(args.dataset, args.data_dir).split(args.fold)
    config = {**TRAINING, **parse_assignments(args.overrides)}
    started = time.perf_counter()
    method = method_class("imder")(**config).fit(split["train"], split["valid"], seed=args.seed)
    fit_seconds = time.perf_counter() - started
    test = split["test"]
    settings = Protocol("fixed").settings(test)
    rows = []
    for steps in args.steps:
        method.model_.steps = steps
        started = time.perf_counter()
        scores = method.evaluate(test, settings)
        seconds = time.perf_counter() - started
        missing = [name for name in scores if set(name.split(",")) != set(method.spec_.modalities)]
        rows.append(
            {
                "steps": steps,
                "seconds": seconds,
                "acc2_has0": {name: scores[name]["acc2_has0"] for name in scores},
                "mae": {name: scores[name]["mae"] for name in scores},
                "acc2_has0_missing_avg": float(np.mean([scores[name]["acc2_has0"] for name in missing])),
                "mae_missing_avg": float(np.mean([scores[name]["mae"] for name in missing])),
            }
        )
        print(f"{steps:>4} steps  acc2_has0 {rows[-1]['acc2_has0_missing_avg']:.3f}  MAE {rows[-1]['mae_missing_avg']:.3f}  {seconds:.1f} s", flush=True)

    result = {
        "machine": platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "dataset": args.dataset,
        "fold": args.fold,
        "seed": args.seed,
        "config": config,
        "fit_seconds": fit_seconds,
        "test_utterances": len(test.indices),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"# IMDer: test metrics against sampling steps ({args.dataset}, fold {args.fold}, seed {args.seed})",
        "",
        f"`python benchmarks/imder_steps.py --threads {torch.get_num_threads()}`; trained with {json.dumps(config)} in {fit_seconds:.0f} s.",
        f"Averages over the 6 fixed conditions with a missing modality, {len(test.indices)} test utterances; seconds to score all 7 conditions.",
        "",
        "| steps | acc2_has0 | MAE | seconds |",
        "|---|---|---|---|",
        *(f"| {r['steps']} | {r['acc2_has0_missing_avg']:.3f} | {r['mae_missing_avg']:.3f} | {r['seconds']:.1f} |" for r in rows),
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
