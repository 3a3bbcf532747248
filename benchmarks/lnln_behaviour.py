"""LNLN's behaviour on synthetic sequences, with and without its correction (the LNLN spec 9.10 b, d).

On several draws of the toolkit's synthetic aligned sequences (label carried mostly by the
text, weakly by audio and vision), trains the small LNLN of ``tests/test_lnln.py`` twice per
draw: as is, and as the paper's "w/o DMC & reconstructor" ablation (``beta = gamma = 0``,
``dominant_correction=false``, so ``w = 1``). Reports the validation MAE at frame rates
0, 0.3, 0.6 and 0.9 for both, and how often the full model wins at the highest rate. The spec
expects (b) the MAE to rise with the rate and (d) the ablation to be worse at high rates.

    python benchmarks/lnln_behaviour.py                  # 8 draws, about 2 minutes on one core
    python benchmarks/lnln_behaviour.py --draws 2 3      # chosen draws
"""

from __future__ import annotations

import json
import platform
import time

import numpy as np
import torch

from common import REPO, benchmark_parser
from imsa import __version__
from imsa.batch import tensor_cache
from imsa.data.registry import load_dataset
from imsa.methods.lnln import LNLN
from imsa.protocols import Protocol

RATES = (0.0, 0.3, 0.6, 0.9)
SMALL = {**LNLN.tiny_config, "dim": 32, "mlp_dim": 32, "epochs": 30, "lr": 3e-3, "batch_size": 32, "position_std": 0.02}
ABLATION = {"beta": 0.0, "gamma": 0.0, "dominant_correction": False}


def validation_curve(method: LNLN, data, split) -> tuple[list[float], list[float]]:
    """Validation MAE and mean ``w`` at each of ``RATES`` (the protocol's keyed frame masks)."""
    net, rows = method.model_.eval(), split["valid"].indices
    maes, ws = [], []
    for rate in RATES:
        setting = Protocol("frames", rate=rate).settings(split["valid"])[f"frames={rate:g}"]
        batch = tensor_cache(data).gather(rows).with_frames({m: torch.from_numpy(setting.frames[m][rows]) for m in data.modalities})
        with torch.no_grad():
            out = net.run(batch)
        maes.append(float(np.abs(out["prediction"].numpy() - data.labels[rows]).mean()))
        ws.append(float(out["w"].mean()))
    return maes, ws


def main() -> None:
    parser = benchmark_parser(__doc__, "lnln_behaviour")
    parser.add_argument("--draws", type=int, nargs="+", default=list(range(2, 10)), help="seeds of the synthetic data (default 2 ... 9)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads or 1)
    rows = []
    for draw in args.draws:
        data = load_dataset("synthetic", num_videos=40, sequence_length=12, aligned=True, seed=draw, weight_l=1.0, weight_a=0.3, weight_v=0.2)
        split = data.split(args.fold)
        for variant, extra in (("lnln", {}), ("w/o DMC & reconstructor", ABLATION)):
            started = time.perf_counter()
            method = LNLN(**SMALL, **extra).fit(split["train"], split["valid"], seed=args.seed)
            maes, ws = validation_curve(method, data, split)
            rows.append({"draw": draw, "variant": variant, "mae": maes, "mean_w": ws, "wall_s": round(time.perf_counter() - started, 1)})
            print(f"draw {draw} {variant}: MAE {' '.join(f'{x:.3f}' for x in maes)}", flush=True)
    full = {r["draw"]: r for r in rows if r["variant"] == "lnln"}
    ablated = {r["draw"]: r for r in rows if r["variant"] != "lnln"}
    wins = sum(full[d]["mae"][-1] < ablated[d]["mae"][-1] for d in full)
    rising = sum(all(a <= b for a, b in zip(full[d]["mae"], full[d]["mae"][1:])) for d in full)
    gap = [ablated[d]["mae"][-1] - full[d]["mae"][-1] for d in full]
    summary = {
        "draws": len(full),
        "full_mae_rises_with_rate": rising,
        "full_better_at_0.9": wins,
        "mae_gap_at_0.9_mean": float(np.mean(gap)),
        "mae_gap_at_0.9_std": float(np.std(gap, ddof=1)) if len(gap) > 1 else 0.0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "config": SMALL,
                "ablation": ABLATION,
                "rates": RATES,
                "rows": rows,
                "summary": summary,
                "seed": args.seed,
                "fold": args.fold,
                "threads": torch.get_num_threads(),
                "imsa": __version__,
                "torch": torch.__version__,
                "machine": platform.processor() or platform.machine(),
            },
            indent=1,
        )
    )
    lines = [
        "# LNLN behaviour on synthetic sequences (the LNLN spec 9.10 b, d)",
        "",
        "`python benchmarks/lnln_behaviour.py`: validation MAE by frame rate, small LNLN, 30 epochs.",
        "",
        "| draw | variant | " + " | ".join(f"r={r:g}" for r in RATES) + " |",
        "|---|---|" + "---|" * len(RATES),
    ]
    lines += [f"| {r['draw']} | {r['variant']} | " + " | ".join(f"{x:.3f}" for x in r["mae"]) + " |" for r in rows]
    lines += [
        "",
        f"The full model's MAE rises with the rate on {rising} of {len(full)} draws; it beats the ablation at r=0.9 on {wins} of {len(full)} "
        f"(ablation minus full: {summary['mae_gap_at_0.9_mean']:+.3f} ± {summary['mae_gap_at_0.9_std']:.3f}).",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(lines[-1])
    print(f"written: {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


if __name__ == "__main__":
    main()
