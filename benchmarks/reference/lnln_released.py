"""imsa's LNLN beside the authors' released network, on equal tensors: CPU per training epoch
and per evaluation pass.

The released trainer cannot run on the data here: it fine-tunes ``bert-base-uncased`` on
token ids, and BERT's weights cannot be downloaded. So both networks get the same tensors
from ``mosi-misa`` (word-aligned MOSI sequences, 44 steps; text as precomputed 384-wide
word vectors): the training fold's batches of 64 in one shuffled order, each with LNLN's
training noise (frames dropped at rate 0 with probability 1/2, else U(0, 1), per
utterance and modality) drawn once by imsa, and the validation split at frame rate 0.5
(the one rate the released trainer validates at). The released network is built from a
checkout of github.com/Haoyu-ha/LNLN (commit 80a052c; ``--repo``; its code is never
copied into imsa) with its MOSI config, the widths set to this data's (384 / 74 / 47, 44
steps), and in memory one change: its ``BertTextEncoder`` passes the precomputed vectors
through. A training step is the released ``train`` loop's body (both forward passes, the
loss, backward, AdamW) or imsa's (``LNLNNet.losses``, the same weights of the four
losses, backward, AdamW); an evaluation pass is one forward over the validation split.
Each side runs in its own process, one thread, ``--epochs`` epochs after one warm-up
epoch; peak memory from ``wait4``. imsa is measured with its default ``padding_mask=true``
and with ``padding_mask=false`` (the released behaviour: padded steps attended, so the
same work). Written to ``benchmarks/results/lnln_released.{json,md}``; needs ``einops``
(the released code imports it).

    python benchmarks/reference/lnln_released.py --repo PATH/TO/LNLN
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "benchmarks"))
from common import default_data_dir  # noqa: E402

LOSS_WEIGHTS = {"completeness": 0.9, "adversarial": 0.8, "reconstruction": 0.1, "task": 1.0}  # MOSI's alpha, beta, gamma, sigma


def batches(data_dir: Path, epochs: int):
    """The training batches (clean, noisy, completeness labels) of every epoch and the
    validation batch at frame rate 0.5, all drawn by imsa from fixed seeds."""
    import numpy as np

    from imsa.batch import iterate_batches
    from imsa.data.registry import load_dataset
    from imsa.frames import FrameDrop, FramesInside
    from imsa.methods.lnln import completeness_labels
    from imsa.methods.phase import TrainingMasks
    from imsa.missing import Complete

    dataset = load_dataset("mosi-misa", data_dir)
    split = dataset.split(0)
    masks = TrainingMasks(FramesInside(Complete(), FrameDrop("lnln")), dataset.modalities, 1, stream=7, dataset=dataset)
    training = []
    for epoch in range(epochs):
        rng = np.random.default_rng(epoch)
        epoch_batches = []
        for batch in iterate_batches(split["train"], 64, shuffle=True, rng=rng):
            noisy = masks.draw(batch, epoch).batch
            epoch_batches.append((batch, noisy, completeness_labels(noisy, dataset, "l")))
        training.append(epoch_batches)
    valid = TrainingMasks(FramesInside(Complete(), FrameDrop(0.5)), dataset.modalities, 2, stream=7, dataset=dataset)
    validation = valid.draw(next(iterate_batches(split["valid"], 1024)), 0).batch
    return dataset, training, validation


def released_tensors(batch):
    """The released forward's (vision, audio, language) inputs (dropped and padded steps are zeros)."""
    return batch.inputs["v"], batch.inputs["a"], batch.inputs["l"]


def run_side(args) -> None:
    """Train ``args.epochs`` + 1 epochs and evaluate as often on one side; print CPU seconds."""
    import torch

    torch.set_num_threads(1)
    dataset, training, validation = batches(args.data_dir, args.epochs + 1)
    torch.manual_seed(1)
    if args.side == "released":
        import yaml

        sys.path.insert(0, str(args.repo))
        bert = types.ModuleType("models.bert")

        class PassThrough(torch.nn.Module):  # the precomputed word vectors stand in for BERT's states
            def __init__(self, *unused, **unused_keywords):
                super().__init__()

            def forward(self, text):
                return text

        bert.BertTextEncoder = PassThrough
        sys.modules["models.bert"] = bert
        from core.losses import MultimodalLoss
        from models.lnln import build_model

        config = yaml.safe_load((Path(args.repo) / "configs" / "train_mosi.yaml").read_text())
        steps = dataset.features["l"].shape[1]
        config["model"]["feature_extractor"]["input_dims"] = [dataset.dims["l"], dataset.dims["v"], dataset.dims["a"]]
        config["model"]["feature_extractor"]["input_length"] = [steps, steps, steps]
        model, loss_fn = build_model(config), MultimodalLoss(config)

        def step(clean, noisy, completeness):
            out = model(released_tensors(clean), released_tensors(noisy))
            n = len(clean)
            label = {
                "sentiment_labels": clean.labels[:, None],
                "completeness_labels": completeness[:, None],
                "effectiveness_labels": torch.cat([torch.ones(n * 8), torch.zeros(n * 8)]).long(),
            }
            return loss_fn(out, label)["loss"]

        def evaluate():
            return model((None, None, None), released_tensors(validation))["sentiment_preds"]
    else:
        from imsa.methods.lnln import LNLN
        from imsa.methods.spec import DataSpec

        method = LNLN(padding_mask=args.side == "imsa")
        model = method.build(DataSpec.of(dataset))

        def step(clean, noisy, completeness):
            losses = model.losses(noisy, clean, completeness)
            return sum(LOSS_WEIGHTS[k] * v for k, v in losses.items())

        def evaluate():
            return model(validation).prediction

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    train_s, eval_s = [], []
    for epoch_batches in training:
        model.train()
        start = time.process_time()
        for clean, noisy, completeness in epoch_batches:
            step(clean, noisy, completeness).backward()
            optimizer.step()
            optimizer.zero_grad()
        train_s.append(time.process_time() - start)
        model.eval()
        start = time.process_time()
        with torch.no_grad():
            evaluate()
        eval_s.append(time.process_time() - start)
    print(
        json.dumps(
            {
                "train_cpu_s_per_epoch": sum(train_s[1:]) / args.epochs,
                "eval_cpu_s": sum(eval_s[1:]) / args.epochs,
                "parameters": sum(p.numel() for p in model.parameters()),
            }
        )
    )


def measure(args, side: str) -> dict:
    """One side in a child process: its timings and its peak resident memory (MiB)."""
    command = [sys.executable, __file__, "--side", side, "--repo", str(args.repo), "--data-dir", str(args.data_dir), "--epochs", str(args.epochs)]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        out.seek(0), err.seek(0)
        if status != 0:
            raise SystemExit(f"{side} failed:\n{err.read().decode()[-2000:]}")
        return {**json.loads(out.read().decode().strip().splitlines()[-1]), "peak_rss_mib": round(usage.ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, help="a checkout of github.com/Haoyu-ha/LNLN")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per side, after one warm-up epoch")
    parser.add_argument("--side", choices=("released", "imsa", "imsa-unmasked"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return run_side(args)
    if args.repo is None or not (args.repo / "models" / "lnln.py").is_file():
        print("pass --repo PATH: a checkout of github.com/Haoyu-ha/LNLN (models/lnln.py); nothing measured")
        return
    sides = {side: measure(args, side) for side in ("released", "imsa", "imsa-unmasked")}
    released = sides["released"]
    report = {
        "benchmark": "lnln_released",
        "argv": sys.argv[1:],
        "fold": 0,
        "seed": 1,
        "epochs": args.epochs,
        "sides": sides,
        "rates": {
            label: {
                "label": f"equal tensors, mosi-misa fold 0, {args.epochs} epochs, imsa padding_mask={mask}",
                "released": {
                    "train_cpu_s_per_epoch": released["train_cpu_s_per_epoch"],
                    "valid_cpu_s_per_epoch": released["eval_cpu_s"],
                    "test_cpu_s_per_epoch": released["eval_cpu_s"],
                    "process_cpu_s": None,  # steps on equal tensors, not a whole run
                },
                "imsa": {"epoch_cpu_s": sides[side]["train_cpu_s_per_epoch"] + sides[side]["eval_cpu_s"], "total_cpu_s": None},
            }
            for label, side, mask in (("masked", "imsa", "true"), ("unmasked", "imsa-unmasked", "false"))
        },
    }
    (RESULTS / "lnln_released.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# LNLN: the released network beside imsa's, on equal tensors",
        "",
        f"`python benchmarks/reference/lnln_released.py {' '.join(report['argv'])}`: `mosi-misa` fold 0, batches of 64 with LNLN's "
        f"training noise, {args.epochs} epochs after a warm-up epoch, one thread each; evaluation: one forward over the validation "
        "split at frame rate 0.5. The released trainer needs BERT's weights, which cannot be downloaded here, so no test metrics "
        "are compared: both networks start from their own initialisation and see the same tensors.",
        "",
        "| side | CPU s per training epoch | CPU s per evaluation pass | ratio to released (training) | peak RSS MiB | parameters |",
        "|---|---|---|---|---|---|",
    ]
    for side, row in sides.items():
        lines.append(
            f"| {side} | {row['train_cpu_s_per_epoch']:.3f} | {row['eval_cpu_s']:.3f} | "
            f"{row['train_cpu_s_per_epoch'] / released['train_cpu_s_per_epoch']:.2f} | {row['peak_rss_mib']} | {row['parameters']:,} |"
        )
    (RESULTS / "lnln_released.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
