"""imsa's TFN and LMF beside the networks they follow (MMSA's ``TFN`` and ``LMF``), on equal
tensors: CPU per training epoch and per evaluation pass (the harness: ``equal_tensors.py``).

Both sides take MMSA's MOSI settings (imsa's defaults): TFN with hidden sizes 128 / 32 /
128, a 32-wide text output, a 64-wide post-fusion layer and dropouts 0.3 / 0.3 / 0.5,
batches of 32, Adam at 1e-3; LMF with hidden sizes 128 / 16 / 128, rank 3, dropouts 0.3,
batches of 64, Adam at 1e-3 with an L2 penalty of 5e-3. Both train the L1 loss on
complete data. The released modules come from a checkout of github.com/thuiar/MMSA
(``--repo``; its ``src`` folder is imported, never copied into imsa). MMSA's loader
averages audio and video over time once, when it loads the data, so the released side
gets those averages precomputed; imsa averages over the real steps in every batch, which
its epoch pays for. Each side runs in processes of its own (``--repeats`` times, alternating,
the fastest kept), then both run in one process, epoch by epoch (a second setting: separate
processes differ by several percent even for the same network). Written to
``benchmarks/results/{tfn,lmf}_released.{json,md}``.

    python benchmarks/reference/fusion_released.py --repo PATH/TO/MMSA [--methods tfn lmf]
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from equal_tensors import (  # noqa: E402
    RESULTS,
    bare_mmsa,
    checkout_missing,
    child_arguments,
    measure,
    measure_alternating,
    method_parser,
    mosi_misa,
    shuffled_batches,
    time_epochs,
    timed_epoch,
    write_report,
)

METHODS = ("tfn", "lmf")


def build_side(args):
    """One side's network, ``step(batch) -> loss``, ``evaluate()``, training batches and optimiser."""
    import torch
    import torch.nn.functional as F

    from imsa.methods.registry import create_method
    from imsa.methods.spec import DataSpec

    torch.set_num_threads(1)
    method = create_method(args.method)
    c = method.config
    dataset, split = mosi_misa(args.data_dir)
    training = shuffled_batches(split["train"], c.batch_size, args.epochs + 1)
    validation = shuffled_batches(split["valid"], 1024, 1)[0][0]
    torch.manual_seed(1)
    if args.side == "released":
        bare_mmsa(args.repo)
        settings = dict(
            feature_dims=(dataset.dims["l"], dataset.dims["a"], dataset.dims["v"]),
            hidden_dims=tuple(c.hidden),
            train_mode="regression",
            num_classes=1,
            use_bert=False,
        )
        if args.method == "tfn":
            from MMSA.models.singleTask.TFN import TFN

            a, v, fusion = c.dropouts
            model = TFN(types.SimpleNamespace(**settings, text_out=c.text_out, post_fusion_dim=c.post_fusion_dim, dropouts=(a, v, 0.0, fusion)))
            parameters = list(model.parameters())[2:]  # MMSA's trainer leaves the frozen output range out
            optimizer = torch.optim.Adam(parameters, lr=c.lr)
        else:
            from MMSA.models.singleTask.LMF import LMF

            model = LMF(types.SimpleNamespace(**settings, rank=c.rank, dropouts=(*c.dropouts, 0.0, 0.0)))  # text and post-fusion entries never act
            parameters = list(model.parameters())  # MMSA's trainer: the first three at factor_lr, the fusion weights left out
            optimizer = torch.optim.Adam([{"params": parameters[:3], "lr": c.factor_lr}, {"params": parameters[5:], "lr": c.lr}], weight_decay=c.weight_decay)
        means = {}  # the loader's averages, computed once as MMSA's loader does

        def averaged(batch, m):
            key = (id(batch), m)
            if key not in means:
                means[key] = batch.inputs[m].mean(dim=1, keepdim=True)
            return means[key]

        def predict(batch):
            return model(batch.inputs["l"], averaged(batch, "a"), averaged(batch, "v"))["M"].reshape(-1)

        for batches in training:  # precomputed before timing, as loading is
            for batch in batches:
                averaged(batch, "a"), averaged(batch, "v")
        averaged(validation, "a"), averaged(validation, "v")
    else:
        model = method.build(DataSpec.of(dataset))
        groups = method.phase_options(model)["param_groups"] if args.method == "lmf" else [{"params": list(model.parameters())}]
        optimizer = torch.optim.Adam(groups, lr=c.lr, weight_decay=getattr(c, "weight_decay", 0.0))

        def predict(batch):
            return model(batch).prediction.reshape(-1)

    def step(batch):
        return F.l1_loss(predict(batch), batch.labels.reshape(-1))

    return model, step, lambda: predict(validation), training, optimizer


def run_side(args) -> None:
    import json

    print(json.dumps(time_epochs(*build_side(args))))


def same_process(args) -> None:
    """Both networks in one process, epoch by epoch, the side that goes first alternating:
    the two share the allocator, the caches and whatever else runs on the machine, which
    separate processes do not (there, the same network's epoch varies by several percent
    from one process to the next)."""
    import json

    sides = {}
    for side in ("released", "imsa"):
        args.side = side
        sides[side] = build_side(args)
    train_s = {side: 0.0 for side in sides}
    eval_s = dict(train_s)
    for epoch in range(args.epochs + 1):
        for side in list(sides) if epoch % 2 else list(sides)[::-1]:
            model, step, evaluate, training, optimizer = sides[side]
            trained, evaluated = timed_epoch(model, step, evaluate, training[epoch], optimizer)
            if epoch:  # the first epoch warms up
                train_s[side] += trained
                eval_s[side] += evaluated
    print(json.dumps({side: {"train_cpu_s_per_epoch": train_s[side] / args.epochs, "eval_cpu_s": eval_s[side] / args.epochs} for side in sides}))


def main() -> None:
    args = method_parser(__doc__, METHODS, ("released", "imsa", "both")).parse_args()
    if args.side == "both":
        return same_process(args)
    if args.side:
        return run_side(args)
    if checkout_missing(args.repo, "thuiar/MMSA", "src/MMSA/models/singleTask/TFN.py"):
        return
    for method in args.methods:
        arguments = child_arguments(args) + ["--method", method]
        sides = measure_alternating(__file__, ("released", "imsa"), arguments, args.repeats)
        batch = "32" if method == "tfn" else "64"
        write_report(
            method,
            f"{method.upper()}: MMSA's released network beside imsa's, on equal tensors",
            f"`mosi-misa` fold 0, complete data, batches of {batch}, audio and video averaged over time,",
            sides,
            {"imsa": "imsa"},
            sys.argv[1:],
            args.epochs,
            script="fusion_released.py",
            why="The released trainers read MMSA's data files; here both networks get the same batches instead, so no test metrics are compared:",
        )
        add_same_process(method, measure(__file__, "both", arguments), args.epochs)


def add_same_process(method: str, both: dict, epochs: int) -> None:
    """The one-process measurement as a second setting of the method's result files."""
    import json

    path = RESULTS / f"{method}_released.json"
    report = json.loads(path.read_text())
    both = {side: both[side] for side in ("released", "imsa")}  # without the process's peak memory
    released, imsa = both["released"], both["imsa"]
    report["same_process"] = both
    report["rates"]["same_process"] = {
        "label": f"equal tensors, mosi-misa fold 0, {epochs} epochs, both in one process, alternating",
        "released": {
            "train_cpu_s_per_epoch": released["train_cpu_s_per_epoch"],
            "valid_cpu_s_per_epoch": released["eval_cpu_s"],
            "test_cpu_s_per_epoch": released["eval_cpu_s"],
        },
        "imsa": {"epoch_cpu_s": imsa["train_cpu_s_per_epoch"] + imsa["eval_cpu_s"]},
    }
    path.write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "",
        "Both networks in one process (`--side both`): epoch by epoch on the same batches, the side that goes first "
        "alternating, so both share the allocator, the caches and the machine's load; separate processes differ by "
        "several percent from one process to the next even for the same network.",
        "",
        "| side | CPU s per training epoch | CPU s per evaluation pass | ratio to released (training) |",
        "|---|---|---|---|",
    ]
    for side, row in both.items():
        ratio = row["train_cpu_s_per_epoch"] / released["train_cpu_s_per_epoch"]
        lines.append(f"| {side} | {row['train_cpu_s_per_epoch']:.3f} | {row['eval_cpu_s']:.3f} | {ratio:.2f} |")
    markdown = RESULTS / f"{method}_released.md"
    markdown.write_text(markdown.read_text() + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
