"""The least CPU an epoch can take on this machine, from the arithmetic it must do: for the two
targets of ``targets.py`` that do not hold (GCNet at most 0.6 CPU-s per ``mosi-bclstm`` epoch,
IMDer's 100-step sampling under 10 s per ``mosi-misa`` epoch), the floating-point operations
of the epoch's largest kernels, counted on the real shapes, divided by the rate of one thread
on a large single-precision matrix product (the fastest this core multiplies).

* GCNet: its three bidirectional two-layer LSTMs (counted from the built model: per step and
  direction ``2 * 4H * (input + H)`` per layer), over every utterance of the training videos
  (forward, and a backward pass of twice the forward's work) and of the validation videos
  (forward). The rest of the network is left out, so the floor is low.
* IMDer: one score-network evaluation per sampled row and step, counted with torch's flop
  counter on the model's defaults and the data's length; rows sampled per epoch are each
  training utterance's missing modalities under the uniform training sampler (9/7 per
  utterance on average) and the validation split's missing modalities under the seven
  fixed conditions; no backward pass through the sampler, nothing else of the model.

Written to ``benchmarks/results/arithmetic_floor.{json,md}``.

    python benchmarks/arithmetic_floor.py
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from common import REPO, default_data_dir, machine


def sgemm_gflops(size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of one thread on a ``size``-square float32 matrix product, the best of ``repeats``."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        a @ b
        best = min(best, time.process_time() - start)
    return 2 * size**3 / best / 1e9


def lstm_flops_per_step(lstm) -> int:
    """Multiply-adds of one step of every layer and direction of an ``nn.LSTM``, times two."""
    directions = 2 if lstm.bidirectional else 1
    total, width = 0, lstm.input_size
    for _ in range(lstm.num_layers):
        total += directions * 2 * 4 * lstm.hidden_size * (width + lstm.hidden_size)
        width = directions * lstm.hidden_size
    return total


def gcnet_floor(data_dir: Path) -> dict:
    import torch
    import yaml

    import imsa
    from imsa.methods import method_class
    from imsa.methods.spec import DataSpec

    config = yaml.safe_load((REPO / "src" / "imsa" / "configs" / "gcnet" / "mosi-bclstm.yaml").read_text())
    data = imsa.load_dataset("mosi-bclstm", data_dir)
    split = data.split(0)
    model = method_class("gcnet")(config).build(DataSpec.of(data))
    lstms = [module for module in model.modules() if isinstance(module, torch.nn.LSTM)]
    per_step = sum(lstm_flops_per_step(lstm) for lstm in lstms)
    train_steps, valid_steps = len(split["train"]), len(split["valid"])
    flops = per_step * (3 * train_steps + valid_steps)
    return {
        "lstms": [{"input": lstm.input_size, "hidden": lstm.hidden_size, "layers": lstm.num_layers, "bidirectional": lstm.bidirectional} for lstm in lstms],
        "flops_per_utterance_step": per_step,
        "training_utterances": train_steps,
        "validation_utterances": valid_steps,
        "epoch_gflop": flops / 1e9,
        "target_cpu_s": 0.6,
        "measured_cpu_s": _measured("gcnet"),
    }


def imder_floor(data_dir: Path) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import imsa
    from imsa.methods.imder import IMDerConfig
    from imsa.nn.diffusion import VESDE, ScoreUNet, pad_to_multiple

    config = IMDerConfig()
    data = imsa.load_dataset("mosi-misa", data_dir)
    split = data.split(0)
    # MulT's unpadded temporal convolutions shorten the sequence by kernel - 1; the U-Net pads to a multiple of 8
    length = pad_to_multiple(torch.zeros(1, 1, data.features["l"].shape[1] - config.conv_kernel + 1)).shape[-1]
    network = ScoreUNet(
        config.dim, VESDE(config.sigma), config.unet_channels, config.unet_embed_dim, config.heads, config.unet_layers, config.unet_groups
    ).eval()
    x = torch.randn(1, config.dim, length)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(x, torch.full((1,), 0.5), x)
    per_row_step = counter.get_total_flops()
    conditions = [c for k in (1, 2, 3) for c in itertools.combinations(range(3), k)]
    missing_per_utterance = sum(3 - len(c) for c in conditions) / len(conditions)
    train_rows = missing_per_utterance * len(split["train"])
    valid_rows = sum(3 - len(c) for c in conditions) * len(split["valid"])
    steps = config.sampling_steps
    flops = per_row_step * steps * (train_rows + valid_rows)
    return {
        "score_network_length": length,
        "flops_per_row_step": per_row_step,
        "sampling_steps": steps,
        "training_rows": round(train_rows, 1),
        "validation_rows": valid_rows,
        "epoch_gflop": flops / 1e9,
        "target_cpu_s": 10.0,
        "measured_cpu_s": _measured("imder"),
    }


def _measured(name: str) -> float | None:
    path = REPO / "benchmarks" / "results" / "targets.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())["targets"].get(name, {}).get("cpu_s_per_epoch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "arithmetic_floor")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    rate = sgemm_gflops()
    report = {"benchmark": "arithmetic_floor", "machine": machine(), "sgemm_gflops_one_thread": round(rate, 1), "methods": {}}
    for name, floor in (("gcnet", gcnet_floor), ("imder", imder_floor)):
        entry = floor(args.data_dir)
        entry["floor_cpu_s"] = round(entry["epoch_gflop"] / rate, 3)
        report["methods"][name] = entry
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# The arithmetic floor of the targets that do not hold",
        "",
        f"`python benchmarks/arithmetic_floor.py` on {report['machine']}: one thread multiplies large float32 matrices at "
        f"{rate:.0f} GFLOP/s. An epoch's floor is the floating-point work of its largest kernels alone (the rest of the "
        "network left out) at that rate; no implementation of the same computation can go below it here.",
        "",
        "| method | counted work | GFLOP per epoch | floor CPU s per epoch | target | measured (targets.md) |",
        "|---|---|---|---|---|---|",
    ]
    g, i = report["methods"]["gcnet"], report["methods"]["imder"]
    lines.append(
        f"| gcnet | 3 bidirectional 2-layer LSTMs, {g['flops_per_utterance_step'] / 1e6:.1f} MFLOP per utterance step; "
        f"{g['training_utterances']} training utterances (forward + backward = 3x), {g['validation_utterances']} validation | "
        f"{g['epoch_gflop']:.1f} | {g['floor_cpu_s']:.2f} | ≤ {g['target_cpu_s']} | {g['measured_cpu_s'] or 'n/a'} |"
    )
    lines.append(
        f"| imder | score network, {i['flops_per_row_step'] / 1e6:.1f} MFLOP per row and step, {i['sampling_steps']} steps; "
        f"{i['training_rows']} training rows, {i['validation_rows']} validation rows | "
        f"{i['epoch_gflop']:.1f} | {i['floor_cpu_s']:.1f} | ≤ {i['target_cpu_s']} | {i['measured_cpu_s'] or 'n/a'} |"
    )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
