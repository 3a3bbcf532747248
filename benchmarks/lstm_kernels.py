"""PackedLSTM's padded CPU path against nn.LSTM on packed sequences, at GCNet's width.

A 2-layer bidirectional LSTM (500 -> 500, dropout 0.2, training mode) over a batch of 32
sequences of 5-40 steps, one thread: forward and backward milliseconds of each, median of
``--repeats``, and the largest output difference between the two. Writes
``benchmarks/results/lstm_kernels.json``.

    python benchmarks/lstm_kernels.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from imsa.nn.recurrent import PackedLSTM

RESULTS = Path(__file__).parent / "results"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    module = PackedLSTM(500, 500, layers=2, bidirectional=True, dropout=0.2).train()
    batch, steps = 32, 40
    x = torch.randn(batch, steps, 500, requires_grad=True)
    lengths = torch.randint(5, steps + 1, (batch,))
    mask = torch.arange(steps)[None, :] < lengths[:, None]

    def packed():
        sequences = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(module.lstm(sequences)[0], batch_first=True, total_length=steps)[0]

    def padded():
        return module(x, mask)

    torch.manual_seed(1)
    reference = packed()
    torch.manual_seed(1)
    difference = float((reference - padded()).detach().abs().max())
    result = {"shape": {"batch": batch, "max_steps": steps, "input": 500, "hidden": 500, "layers": 2, "bidirectional": True}, "threads": 1}
    for name, run in (("packed", packed), ("padded", padded)):
        forward, backward = [], []
        for _ in range(args.repeats + 1):
            started = time.perf_counter()
            out = run()
            middle = time.perf_counter()
            out.square().sum().backward()
            forward.append(middle - started)
            backward.append(time.perf_counter() - middle)
        result[name] = {"forward_ms": round(1000 * statistics.median(forward[1:]), 1), "backward_ms": round(1000 * statistics.median(backward[1:]), 1)}
    total = {k: result[k]["forward_ms"] + result[k]["backward_ms"] for k in ("packed", "padded")}
    result["speedup"] = round(total["packed"] / total["padded"], 2)
    result["max_output_difference"] = difference
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lstm_kernels.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
