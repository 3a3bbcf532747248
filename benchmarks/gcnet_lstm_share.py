"""How much of GCNet's ``mosi-bclstm`` epoch its LSTMs take with PyTorch's fastest CPU kernel,
and what splitting the batch into length groups would save.

GCNet's epoch on fold 0 is one training batch: the split's 19 conversations (12 to 39
utterances). Each of its LSTMs (the 2-layer bidirectional base LSTM over the utterance
features, and the 500 -> 500 one of each graph branch), built as the packaged config builds
them, runs forward and backward on a batch of those lengths through ``PackedLSTM`` (padded,
fused kernels; one thread, median of ``--repeats``): as one padded batch, and as two groups
of similar length (the shorter half padded to its own longest), whose outputs equal the
whole batch's up to float rounding. The two branch LSTMs alone set a lower bound on the
epoch that no change elsewhere in the network can remove. Written to
``benchmarks/results/gcnet_lstm_share.json``.

    python benchmarks/gcnet_lstm_share.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from common import REPO, default_data_dir, machine

RESULTS = REPO / "benchmarks" / "results"


def fold_batch(data_dir) -> tuple[torch.Tensor, int]:
    """The utterance counts of fold 0's training conversations, and the width of an
    utterance's concatenated features."""
    from imsa.batch import iterate_batches
    from imsa.data.registry import load_dataset

    dataset = load_dataset("mosi-bclstm", data_dir)
    train = dataset.split(0)["train"]
    real = next(iterate_batches(train, len(train.videos), level="video")).utterance_mask
    return real.sum(1).sort().values, sum(dataset.dims.values())


def timed(run, repeats: int) -> float:
    """Median CPU milliseconds of ``run()``'s forward and backward pass, the first call left out."""
    times = []
    for _ in range(repeats + 1):
        start = time.process_time()
        run().square().sum().backward()
        times.append(time.process_time() - start)
    return round(1000 * statistics.median(times[1:]), 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    from imsa.methods.registry import create_method
    from imsa.nn.recurrent import PackedLSTM

    torch.set_num_threads(1)
    torch.manual_seed(0)
    lengths, features = fold_batch(args.data_dir)
    hidden = create_method("gcnet").config.hidden
    branch_width = 2 * hidden + hidden // 2
    steps, half = int(lengths.max()), len(lengths) // 2
    mask = torch.arange(steps)[None] < lengths[:, None]
    short, long = torch.arange(half), torch.arange(half, len(lengths))
    short_steps = int(lengths[half - 1])
    result = {"machine": machine(), "threads": 1, "conversations": len(lengths), "lengths": lengths.tolist(), "lstms": {}}
    for name, width, out, count in (("base", features, hidden, 1), ("branch", branch_width, branch_width, 2)):
        lstm = PackedLSTM(width, out, layers=2, bidirectional=True).train()
        x = torch.randn(len(lengths), steps, width, requires_grad=True)

        def whole():
            return lstm(x, mask)

        def grouped():
            out = x.new_zeros(len(lengths), steps, 2 * lstm.lstm.hidden_size)
            out[short, :short_steps] = lstm(x[short, :short_steps], mask[short, :short_steps])
            out[long] = lstm(x[long], mask[long])
            return out

        difference = float((whole() - grouped()).detach().abs().max())
        result["lstms"][name] = {
            "input": width,
            "hidden": out,
            "per_epoch": count,
            "whole_batch_ms": timed(whole, args.repeats),
            "two_groups_ms": timed(grouped, args.repeats),
            "max_output_difference": difference,
        }
    lstms = result["lstms"].values()
    result["branch_lstms_per_epoch_s"] = round(2 * result["lstms"]["branch"]["whole_batch_ms"] / 1000, 3)
    result["all_lstms_per_epoch_s"] = {key: round(sum(r["per_epoch"] * r[f"{key}_ms"] for r in lstms) / 1000, 3) for key in ("whole_batch", "two_groups")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gcnet_lstm_share.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
