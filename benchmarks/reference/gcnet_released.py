"""imsa's GCNet beside the authors' released code, side by side on one fold: CPU per epoch.

Both train on the same ``mosi-bclstm`` fold exported with ``imsa data export --to gcnet``,
with the released command's settings (hidden 200, windows 2, lr 1e-3, L2 1e-5, batch 32,
the LSTM base model, the reconstruction loss), at the GCNet missing rates given, for the
same number of epochs, one thread each, one after the other. Recorded per rate: CPU
seconds per epoch of training, of validation and (released only: it scores the test split
every epoch) of the test pass, total CPU seconds of the process, peak resident memory,
and the test acc2_non0 / f1_non0 at the epoch each selects on validation (the released
code by validation F1, imsa by validation MAE). Written to
``benchmarks/results/gcnet_released.{json,md}``.

The authors' code is never copied into imsa: pass a checkout of github.com/zeroQiaoba/GCNet
(commit 8cce4a0) with ``--repo``; without it the script says so and exits 0. It runs
unchanged; what a CPU run of it on this export needs is applied in memory by this
script's ``released`` sub-command: a ``config`` module pointing at the export (the
released one names the authors' machine's paths), ``numpy.int`` restored (removed from
numpy in 1.24; the released masking draws with it), ``--no-cuda``, one torch thread, and a
wrapper around ``train_or_eval_model`` that reads the process's CPU clock around each
call. The released features are raw (no standardisation), as it reads them; imsa's
packaged config standardises them, which costs nothing per epoch.

    python benchmarks/reference/gcnet_released.py --repo PATH/TO/GCNet                   # rates 0.2 0.5, 100 epochs
    python benchmarks/reference/gcnet_released.py --repo PATH --epochs 60 --rates 0.5    # shorter
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
SHORT = 5  # epochs of imsa's second, short run (the marginal CPU per epoch is measured between the two)
RELEASED_ARGS = ["--lr=0.001", "--hidden=200", "--windowp=2", "--windowf=2", "--base-model=LSTM", "--loss-recon", "--batch-size=32", "--l2=0.00001"]


def released(args) -> None:
    """Run the released trainer in this process and write its timings as JSON."""
    import numpy as np
    import torch

    np.int = int  # the released masking's dtype, removed from numpy in 1.24
    torch.set_num_threads(1)
    work = Path(args.work)
    config = types.ModuleType("config")
    config.PATH_TO_LABEL = {"CMUMOSI": str(next((Path(args.export)).glob("*.pkl")))}
    config.PATH_TO_FEATURES = {"CMUMOSI": str(Path(args.export) / "features")}
    config.MODEL_DIR = str(work / "released-model")
    sys.modules["config"] = config
    source_dir = Path(args.repo) / "gcnet"
    sys.path.insert(0, str(source_dir))
    source = (source_dir / "train_gcnet.py").read_text()
    head, _, main_block = source.partition("if __name__ == '__main__':")
    module: dict = {"__name__": "train_gcnet", "__file__": str(source_dir / "train_gcnet.py")}
    exec(compile(head, str(source_dir / "train_gcnet.py"), "exec"), module)

    calls: list[dict] = []
    train_or_eval = module["train_or_eval_model"]

    def timed(*a, **kw):
        start = time.process_time()
        result = train_or_eval(*a, **kw)
        calls.append({"train": bool(kw.get("train")), "cpu_s": time.process_time() - start, "acc": float(result[0]), "f1": float(result[1])})
        return result

    module["train_or_eval_model"] = timed
    sys.argv = [
        "train_gcnet.py",
        "--dataset=CMUMOSI",
        "--audio-feature=audio",
        "--text-feature=text",
        "--video-feature=video",
        f"--epochs={args.epochs}",
        f"--mask-type=constant-{args.rate}",
        f"--seed={args.seed}",
        "--no-cuda",
        *RELEASED_ARGS,
    ]
    started = time.process_time()
    try:
        exec(compile(textwrap.dedent(main_block), str(source_dir / "train_gcnet.py"), "exec"), module)
    except AssertionError as error:  # "epoch number should large then 60": raised after training, when saving
        if "epoch" not in str(error):
            raise
    total = time.process_time() - started
    # every epoch makes three calls, in order: training, validation, test
    epochs = [calls[i : i + 3] for i in range(0, len(calls) - len(calls) % 3, 3)]
    best = max(range(len(epochs)), key=lambda e: epochs[e][1]["f1"])  # the released criterion: validation F1
    Path(args.out).write_text(
        json.dumps(
            {
                "epochs": len(epochs),
                "train_cpu_s_per_epoch": sum(e[0]["cpu_s"] for e in epochs) / len(epochs),
                "valid_cpu_s_per_epoch": sum(e[1]["cpu_s"] for e in epochs) / len(epochs),
                "test_cpu_s_per_epoch": sum(e[2]["cpu_s"] for e in epochs) / len(epochs),
                "total_cpu_s": total,
                "selected_epoch": best,
                "test_acc2_non0": epochs[best][2]["acc"],
                "test_f1_non0": epochs[best][2]["f1"],
            }
        )
    )


def run_child(command: list[str]) -> tuple[float, float]:
    """Run a child process with one thread; its CPU seconds and peak RSS (MiB), from wait4."""
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{process.stderr.read().decode()[-2000:]}")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def run_imsa(args, rate: float, work: Path) -> dict:
    """``imsa run`` of the same fold, rate, seed and epochs, one thread, in a child process; and
    once more with ``SHORT`` epochs, so that the CPU per epoch is the marginal one (start-up,
    loading and the final scoring cancel), read from the same clock as the released code's."""

    def run(epochs: int, out: Path) -> tuple[float, float]:
        command = [sys.executable, "-m", "imsa.cli", "run", "--method", "gcnet", "--dataset", "mosi-bclstm", "--folds", str(args.fold)]
        command += ["--seeds", str(args.seed), "--protocol", "random", "--rate", f"{rate:g}", "--set", f"epochs={epochs}", "--threads", "1"]
        command += ["--data-dir", str(args.data_dir), "--out", str(out), "--quiet", "--checkpoint-interval", "3600"]
        return run_child(command)

    out = work / f"imsa-{rate:g}"
    total, rss = run(args.epochs, out)
    short, _ = run(SHORT, work / f"imsa-short-{rate:g}")
    record = json.loads(next((out / "runs").glob("*.json")).read_text())
    test = record["metrics"]["test"][f"rate={rate:g}"]
    return {
        "epochs": record["phases"][-1]["epochs_run"],
        "epoch_cpu_s": (total - short) / (args.epochs - SHORT),
        "total_cpu_s": total,
        "peak_rss_mib": rss,
        "selected_epoch": record["phases"][-1]["best_epoch"],
        "test_acc2_non0": test["acc2_non0"],
        "test_f1_non0": test["f1_non0"],
    }


def markdown(report: dict) -> str:
    lines = [
        "# GCNet: the released code beside imsa, CPU per epoch",
        "",
        f"`python benchmarks/reference/gcnet_released.py {' '.join(report['argv'])}`: `mosi-bclstm` fold {report['fold']}, seed "
        f"{report['seed']}, {report['epochs']} epochs, one thread each on {report['machine']}, the released command's settings (hidden 200, windows 2). "
        "The released trainer also scores the test split every epoch; `released train+valid` leaves that pass out, so it "
        "compares with imsa's epoch (training and validation).",
        "",
        "| rate | released train+valid CPU s/epoch | released test pass s/epoch | imsa CPU s/epoch | ratio imsa/released | released total CPU s | imsa total CPU s | released peak RSS MiB | imsa peak RSS MiB | released test acc2_non0 / f1_non0 | imsa test acc2_non0 / f1_non0 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rate, row in report["rates"].items():
        r, i = row["released"], row["imsa"]
        per_epoch = r["train_cpu_s_per_epoch"] + r["valid_cpu_s_per_epoch"]
        lines.append(
            f"| {rate} | {per_epoch:.3f} | {r['test_cpu_s_per_epoch']:.3f} | {i['epoch_cpu_s']:.3f} | {i['epoch_cpu_s'] / per_epoch:.2f} | "
            f"{r['total_cpu_s']:.1f} | {i['total_cpu_s']:.1f} | {r['peak_rss_mib']:.0f} | {i['peak_rss_mib']:.0f} | "
            f"{r['test_acc2_non0']:.3f} / {r['test_f1_non0']:.3f} | {i['test_acc2_non0']:.3f} / {i['test_f1_non0']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    inner = sub.add_parser("released", help="(internal) run the released trainer in this process")
    for name in ("--repo", "--export", "--work", "--out"):
        inner.add_argument(name, required=True)
    inner.add_argument("--rate", type=float, required=True)
    inner.add_argument("--epochs", type=int, required=True)
    inner.add_argument("--seed", type=int, required=True)
    parser.add_argument("--repo", type=Path, help="a checkout of github.com/zeroQiaoba/GCNet")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=100, help=f"more than {SHORT}")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.2, 0.5])
    parser.add_argument("--out", type=Path, default=RESULTS / "gcnet_released")
    args = parser.parse_args()
    if args.command == "released":
        released(args)
        return
    if args.repo is None or not (args.repo / "gcnet" / "train_gcnet.py").is_file():
        print("Pass a checkout of github.com/zeroQiaoba/GCNet with --repo (its gcnet/train_gcnet.py); nothing was run.")
        return
    work = Path(tempfile.mkdtemp(prefix="gcnet-released-"))
    export = work / "export"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "imsa.cli",
            "data",
            "export",
            "mosi-bclstm",
            "--to",
            "gcnet",
            "--fold",
            str(args.fold),
            "--out",
            str(export),
            "--data-dir",
            str(args.data_dir),
        ],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(REPO / "benchmarks"))
    from common import machine

    report = {"argv": sys.argv[1:], "machine": machine(), "fold": args.fold, "seed": args.seed, "epochs": args.epochs, "rates": {}}
    for rate in args.rates:
        out = work / f"released-{rate:g}.json"
        command = [sys.executable, __file__, "released", "--repo", str(args.repo), "--export", str(export), "--work", str(work)]
        command += ["--out", str(out), "--rate", str(rate), "--epochs", str(args.epochs), "--seed", str(args.seed)]
        total, rss = run_child(command)
        released_row = {**json.loads(out.read_text()), "process_cpu_s": total, "peak_rss_mib": rss}
        imsa_row = run_imsa(args, rate, work)
        report["rates"][f"{rate:g}"] = {"released": released_row, "imsa": imsa_row}
        print(json.dumps({"rate": rate, **report["rates"][f"{rate:g}"]}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
