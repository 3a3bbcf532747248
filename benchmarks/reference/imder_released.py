"""imsa's IMDer beside the authors' released network, on equal tensors: CPU per training epoch
of the recovery phase, per evaluation pass, and in the reverse-SDE sampler (the harness:
``equal_tensors.py``).

Both networks take imsa's IMDer defaults (the released MOSI settings: MulT width 32, 8
heads, 4 crossmodal and 4 memory layers, kernel 3, dropouts 0.2 on the embedding and the
audio attention; score U-Net 32/64/128/256 with 2 attention layers per level; 20-block
refiners; sigma 25; 100 Euler-Maruyama steps), batches of 32, Adam at 2e-3, gradient values
clipped at 1.0, and the released loss ``L1 + 0.1 (score losses + reconstruction MSE)``, the
sampler run on every training step as released. Missing modalities: one pattern per batch
(as the release draws them), drawn uniformly from the seven modality combinations by a
seeded generator, the same on both sides (the release's ``random.sample`` is replaced by
the drawn pattern); imsa gets that pattern on every row of the batch, so both sample the
same rows. The sequences are zero-padded from 44 to 50 steps on both sides (the release's
sampler hard-codes 48 projected steps, MOSI's aligned_50 after the kernel-3 projection);
imsa runs with ``padding_mask=false``, as released. An evaluation pass scores the
validation split under all seven combinations (imsa's fixed protocol does so every epoch):
imsa in one stacked forward, as ``imsa.evaluation`` does, the release in seven forwards.
The sampler's CPU time (noise included) is read around each side's sampler call
(``IMDerNet.sample``; the release's ``Euler_Maruyama_sampler``) and reported apart.

The released network comes from a checkout of github.com/mdswyz/IMDer (``--repo``; commit
1901a92; never copied into imsa) with ``use_bert`` off, so it reads the precomputed text
vectors as imsa does. Patched in memory only, for a CPU run: its package ``__init__``
files are skipped (they import the trainers), ``BertTextEncoder`` is a stub (unused), the
module's ``device = 'cuda'`` is set to ``'cpu'`` and the sampler is called with
``device='cpu'``. Weights are not shared. Written to
``benchmarks/results/imder_released.{json,md}``.

    python benchmarks/reference/imder_released.py --repo PATH/TO/IMDer
    python benchmarks/reference/imder_released.py --repo PATH --sampling-steps 10   # quicker
"""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from equal_tensors import (  # noqa: E402
    RESULTS,
    checkout_missing,
    child_arguments,
    measure,
    mosi_misa,
    mult_settings,
    shuffled_batches,
    side_parser,
    time_epochs,
    write_report,
)

RELEASED_INDEX = {"l": 0, "v": 1, "a": 2}  # the release's modal_idx: 0 text, 1 vision, 2 audio
STEPS = 50  # the release's sampler wants 48 projected steps
SIDES = ("released", "imsa")


def padded(batch, steps: int):
    """``batch`` with its sequences zero-padded at the end to ``steps`` steps."""
    import dataclasses

    import torch.nn.functional as F

    extra = {m: steps - x.shape[1] for m, x in batch.inputs.items()}
    return dataclasses.replace(
        batch,
        inputs={m: F.pad(x, (0, 0, 0, extra[m])) for m, x in batch.inputs.items()},
        padding={m: F.pad(p, (0, extra[m]), value=False) for m, p in batch.padding.items()},
    )


def import_released(repo: Path):
    """The released ``trains.singleTask.model.imder`` module, its package ``__init__`` files skipped."""
    import importlib

    for name, folder in (
        ("trains", "trains"),
        ("trains.subNets", "trains/subNets"),
        ("trains.singleTask", "trains/singleTask"),
        ("trains.singleTask.model", "trains/singleTask/model"),
    ):
        package = types.ModuleType(name)
        package.__path__ = [str(repo / folder)]
        sys.modules[name] = package
    sys.modules["trains.subNets"].BertTextEncoder = None  # use_bert is off
    module = importlib.import_module("trains.singleTask.model.imder")
    module.device = "cpu"
    return module


def run_side(args) -> None:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from imsa.methods.imder import IMDer, IMDerNet, pad_to_multiple, score_matching_loss
    from imsa.methods.phase import task_loss
    from imsa.methods.spec import DataSpec
    from imsa.missing import fixed_conditions

    torch.set_num_threads(1)
    dataset, split = mosi_misa(args.data_dir)
    modalities = dataset.modalities
    conditions = fixed_conditions(modalities)
    masks = [torch.from_numpy(c.mask(modalities)) for c in conditions]  # (M,) bool per combination
    training = [
        [(padded(batch, STEPS), masks[rng.integers(len(masks))]) for batch in batches]
        for epoch, batches in enumerate(shuffled_batches(split["train"], 32, args.epochs + 1))
        for rng in [np.random.default_rng([7, epoch])]
    ]
    validation = padded(shuffled_batches(split["valid"], 1024, 1)[0][0], STEPS)
    method = IMDer(sampling_steps=args.sampling_steps)
    c = method.config
    sampled = {"train": [0.0] * (args.epochs + 1), "eval": [0.0] * (args.epochs + 1)}
    rows = {"train": [0] * (args.epochs + 1), "eval": [0] * (args.epochs + 1)}
    evaluations = [0]

    def timed_sampler(sampler, rows_of):
        def wrapped(*a, **k):
            start = time.process_time()
            out = sampler(*a, **k)
            phase = "train" if model.training else "eval"
            sampled[phase][evaluations[0]] += time.process_time() - start
            rows[phase][evaluations[0]] += rows_of(*a, **k)
            return out

        return wrapped

    torch.manual_seed(1)
    if args.side == "released":
        released = import_released(args.repo)
        config = mult_settings(c, dataset.dims)
        model = released.IMDER(config)
        sampler = released.Euler_Maruyama_sampler
        released.Euler_Maruyama_sampler = timed_sampler(
            lambda *a, **k: sampler(*a, **{**k, "device": "cpu", "num_steps": args.sampling_steps}), lambda *a, **k: a[3]
        )
        pattern = [None]
        released.sample = lambda population, k: [RELEASED_INDEX[modalities[j]] for j in np.flatnonzero(pattern[0].numpy())]

        def forward(batch, present):
            pattern[0] = present
            return model(batch.inputs["l"], batch.inputs["a"], batch.inputs["v"], num_modal=int(present.sum()))

        def step(pair):  # the released do_train's loop body
            batch, present = pair
            out = forward(batch, present)
            task = F.l1_loss(out["M"], batch.labels.view(-1, 1))
            return task + 0.1 * (out["loss_score_l"] + out["loss_score_v"] + out["loss_score_a"] + out["loss_rec"])

        def evaluate():
            return [forward(validation, present)["M"] for present in masks]

        def clip():
            torch.nn.utils.clip_grad_value_([p for p in model.parameters() if p.requires_grad], c.grad_clip)
    else:
        IMDerNet.sample = timed_sampler(IMDerNet.sample, lambda net, m, condition, *rest: len(condition))
        model = method.build(DataSpec.of(dataset))
        model.backbone.projections.requires_grad_(False)  # frozen in the recovery phase

        def step(pair):  # IMDer.fit's recovery loss, the drawn pattern on every row
            batch, pattern = pair
            present, size = pattern.expand(len(batch), -1), len(batch)
            drawn = batch.with_present(present)
            x, mask = model.backbone.projections(model.backbone.inputs(batch), batch.padding, torch.ones_like(present))
            visible = {m: v * present[:, k].to(v.dtype)[:, None, None] for k, (m, v) in enumerate(x.items())}
            scores, squared = 0.0, 0.0
            recovered = dict(visible)
            for k, m in enumerate(modalities):
                missing = torch.nonzero(~present[:, k]).squeeze(1)
                if not len(missing):
                    continue
                condition = model.condition({s: v[missing] for s, v in visible.items()}, present[missing], m)
                target = x[m][missing].transpose(1, 2)
                scores = scores + score_matching_loss(model.scores[m], pad_to_multiple(target), pad_to_multiple(condition), model.sde).sum() / size
                refined = model.refiners[m](model.sample(m, condition, None, None), None)
                squared = squared + (refined - target.detach()).pow(2).sum() / (size * target[0].numel())
                recovered[m] = visible[m].index_put((missing,), refined.transpose(1, 2))
            prediction = model.backbone.head(recovered, mask)[0]
            return task_loss(prediction, drawn, "regression", "l1") + c.score_weight * scores + c.recon_weight * squared

        stacked = validation.repeat(len(masks)).with_present(torch.stack(masks).repeat_interleave(len(validation), 0))

        def evaluate():  # imsa.evaluation's stacked forward over every combination
            return model(stacked).prediction

        def clip():
            torch.nn.utils.clip_grad_value_([p for p in model.parameters() if p.requires_grad], c.grad_clip)

    def counted_evaluate():
        out = evaluate()
        evaluations[0] += 1
        return out

    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=c.lr)
    result = time_epochs(model, step, counted_evaluate, training, optimizer, clip)
    timed = slice(1, None)
    result |= {
        "sampler_train_cpu_s_per_epoch": sum(sampled["train"][timed]) / args.epochs,
        "sampler_eval_cpu_s": sum(sampled["eval"][timed]) / args.epochs,
        "sampled_rows_train_per_epoch": sum(rows["train"][timed]) / args.epochs,
        "sampled_rows_eval": sum(rows["eval"][timed]) / args.epochs,
        "sampling_steps": args.sampling_steps,
    }
    print(json.dumps(result))


def add_sampling(sides: dict, steps: int) -> None:
    """The sampler's share, per side, into ``imder_released.{json,md}``."""
    path = RESULTS / "imder_released.json"
    report = json.loads(path.read_text())
    keys = ("sampler_train_cpu_s_per_epoch", "sampler_eval_cpu_s", "sampled_rows_train_per_epoch", "sampled_rows_eval")
    report["sampling"] = {"steps": steps, **{side: {k: row[k] for k in keys} for side, row in sides.items()}}
    path.write_text(json.dumps(report, indent=2) + "\n")
    released = sides["released"]
    lines = [
        "",
        f"The reverse-SDE sampler ({steps} Euler-Maruyama steps, noise included) within those times; a sampled row is one missing modality of one utterance:",
        "",
        "| side | sampler CPU s per training epoch | rows sampled per training epoch | sampler CPU s per evaluation pass | rows sampled per evaluation pass "
        "| ms per sampled row (evaluation) | ratio to released (evaluation sampler) |",
        "|---|---|---|---|---|---|---|",
    ]
    for side, row in sides.items():
        per_row = 1000 * row["sampler_eval_cpu_s"] / max(row["sampled_rows_eval"], 1)
        lines.append(
            f"| {side} | {row['sampler_train_cpu_s_per_epoch']:.2f} | {row['sampled_rows_train_per_epoch']:.0f} | {row['sampler_eval_cpu_s']:.2f} | "
            f"{row['sampled_rows_eval']:.0f} | {per_row:.1f} | {row['sampler_eval_cpu_s'] / released['sampler_eval_cpu_s']:.2f} |"
        )
    markdown = RESULTS / "imder_released.md"
    markdown.write_text(markdown.read_text() + "\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = side_parser(__doc__, "mdswyz/IMDer", SIDES, epochs=1, epochs_help="timed epochs per side, after one warm-up epoch (an epoch costs minutes)")
    parser.add_argument("--sampling-steps", type=int, default=100, help="Euler-Maruyama steps on both sides (100 as released)")
    args = parser.parse_args()
    if args.side:
        return run_side(args)
    if checkout_missing(args.repo, "mdswyz/IMDer", "trains/singleTask/model/imder.py"):
        return
    arguments = child_arguments(args) + ["--sampling-steps", str(args.sampling_steps)]
    sides = {side: measure(__file__, side, arguments) for side in SIDES}
    write_report(
        "imder",
        "IMDer: the released network beside imsa's, on equal tensors",
        "`mosi-misa` fold 0 padded to 50 steps, recovery phase (one missing pattern per batch of 32, drawn uniformly from the seven "
        f"combinations, the same on both sides; {args.sampling_steps} sampling steps in training and evaluation), evaluation under all "
        "seven combinations,",
        sides,
        {"imsa": f"recovery phase, {args.sampling_steps} sampling steps, imsa padding_mask=false (as released)"},
        sys.argv[1:],
        args.epochs,
        why="The released trainer needs BERT's weights and the authors' unreleased complete-data checkpoint, so no test metrics are compared:",
    )
    add_sampling(sides, args.sampling_steps)


if __name__ == "__main__":
    main()
