"""imsa's MoMKE beside the authors' released MoMKE, per training epoch and per evaluation pass.

Both sides train on ``mosi-bclstm`` fold 0 (what ``momke_released.py`` uses), exported for
the released code with :func:`imsa.data.export.export_gcnet` into a temporary folder outside
the repository, with the released MOSI settings (imsa's defaults: dim 256, depth 4, 2 heads,
dropout 0.5, batches of 32 videos, Adam at lr 1e-4 with weight decay 1e-5), one thread, each
side in its own process (:func:`equal_tensors.measure`). The fold has 19 training videos, so
every epoch of both sides is one batch holding all of them (each side shuffles their order
with its own seeded generator); validation is its 6 videos, test its 6 others. Each side runs
its own trainer code, and its CPU seconds (``time.process_time``) are read per epoch of:

* stage 1 (one expert per modality, complete data): the training pass and the validation pass;
* stage 2 (the mixture of experts, trained with missing modalities), for each of the 7 fixed
  conditions, every model continuing from the one stage 1 above.

The first epoch of every phase (and of every stage-2 model) is a warm-up, left out.

The released side imports the released modules (``train_or_eval_model`` from
``MoMKE/train_MoMKE.py``, ``utils.get_loaders`` / ``build_model``, the losses) and calls them
as its ``__main__`` block does: one model and one Adam for both stages, ``first_stage`` true
for stage 1, ``test_condition`` the condition's modalities in stage 2 (one released run per
condition: here one model per condition, each from a copy of the stage-1 model and optimiser).
Nothing of it is copied into imsa: pass a checkout of github.com/wxxv/MoMKE with ``--repo``
(without it the script says so and exits 0). It runs unchanged; patched at run time, in
memory only, for a CPU run on this export:

* ``config.PATH_TO_FEATURES`` / ``PATH_TO_LABEL`` point at the export (the released config
  names the authors' machine's paths);
* ``torch.set_flush_denormal(True)`` and one torch thread (as ``momke_released.py``: raw
  openSMILE audio drives the released attention into denormal floats, tens of times slower
  on a CPU; flushing changes values below 1e-38 only);
* a validation loader over the fold's validation videos, built as its test loader is. The
  released trainer scores the test split after every epoch and has no validation pass; both
  passes are timed here (``valid``: the like-for-like pass; ``test``: what it runs).

The imsa sides run :meth:`imsa.methods.momke.MoMKE.fit` (the packaged ``mosi`` config) with
imsa's loop; its ``run_training`` is wrapped in memory to read the CPU clock around each
epoch's validation score (``valid`` covers scoring and the best-epoch copies; ``train`` the
rest of the epoch). ``imsa``: the defaults, ``per_condition=true``, one stage 1 and 7
stage-2 models, each validated on its condition; ``imsa-one-model``: ``per_condition=false``,
one stage-2 model trained with uniform missing masks and validated on all 7 conditions.

The whole fixed protocol (150 + 150 epochs, seven conditions) is composed from the measured
per-epoch costs: the released code trains stage 1 and stage 2 once per condition (7 runs of
300 epochs, each epoch a training pass and a test pass); imsa trains stage 1 once, then 7
stage-2 models (or one), each epoch a training pass and a validation pass, plus one test
scoring (measured). Written with :func:`equal_tensors.write_report` to
``benchmarks/results/momke_epoch_released.{json,md}``, its ``rates`` one entry per phase.

The released code needs pandas and scikit-learn (``pip install pandas scikit-learn``).

    python benchmarks/reference/momke_epoch_released.py --repo PATH/TO/MoMKE
    python benchmarks/reference/momke_epoch_released.py --repo PATH --stage1-epochs 2 --stage2-epochs 1   # smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from equal_tensors import RESULTS, measure, write_report  # noqa: E402
from momke_released import CONDITIONS, DATASET, IMSA_NAME  # noqa: E402

from common import default_data_dir  # noqa: E402

PROTOCOL_EPOCHS = 150  # each stage, MOSI: run_MoMKE_cmumosi.sh's --epoch=300 --stage_epoch=150; imsa's epochs and stage1_epochs
WARMUP = 1
SIDES = ("released", "imsa", "imsa-one-model")


def summary(rows: list[dict]) -> dict:
    """Mean CPU seconds per epoch of each pass, the warm-up epoch left out; the raw rows kept."""
    timed = rows[WARMUP:]
    return {f"{k}_cpu_s_per_epoch": sum(r[k] for r in timed) / len(timed) for k in rows[0]} | {"epochs": len(timed), "raw": rows}


# -- the released side ----------------------------------------------------------------------------


def released_side(args) -> dict:
    import copy
    import random
    import runpy
    import types

    import numpy as np
    import torch
    from torch.utils.data import DataLoader
    from torch.utils.data.sampler import SubsetRandomSampler

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    source = Path(args.repo).resolve()
    sys.path[:0] = [str(source / "MoMKE"), str(source)]
    import config
    import utils
    from loss import MaskedCELoss, MaskedMSELoss

    label = Path(args.label).resolve()
    features = label.parent / "features"
    config.PATH_TO_FEATURES["CMUMOSI"] = str(features)
    config.PATH_TO_LABEL["CMUMOSI"] = str(label)
    train_or_eval_model = runpy.run_path(str(source / "MoMKE" / "train_MoMKE.py"), run_name="train_MoMKE")["train_or_eval_model"]

    # seed_torch of the released script
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    train_loaders, test_loaders, adim, tdim, vdim = utils.get_loaders(
        audio_root=str(features / "audio"),
        text_root=str(features / "text"),
        video_root=str(features / "video"),
        num_folder=1,
        batch_size=32,
        dataset="CMUMOSI",
        num_workers=0,
    )
    train_loader, test_loader = train_loaders[0], test_loaders[0]
    dataset = test_loader.dataset
    first = len(dataset.trainVids)
    valid_loader = DataLoader(
        dataset, batch_size=32, sampler=SubsetRandomSampler(list(range(first, first + len(dataset.valVids)))), collate_fn=dataset.collate_fn, num_workers=0
    )
    # run_MoMKE_cmumosi.sh's arguments, as its parser and its CMUMOSI branch leave them
    run = types.SimpleNamespace(
        dataset="CMUMOSI",
        hidden=256,
        depth=4,
        num_heads=2,
        drop_rate=0.5,
        attn_drop_rate=0.0,
        n_classes=1,
        n_speakers=1,
        num_folder=1,
        no_cuda=False,
        device=torch.device("cpu"),
        lr=1e-4,
        l2=1e-5,
        batch_size=32,
        test_condition="atv",
    )
    model = utils.build_model(run, adim, tdim, vdim)
    optimizer = torch.optim.Adam([{"params": model.parameters(), "lr": run.lr, "weight_decay": run.l2}])
    reg_loss, cls_loss = MaskedMSELoss(), MaskedCELoss()

    def epoch(first_stage: bool) -> dict:
        row = {}
        for name, loader, train in (("train", train_loader, True), ("valid", valid_loader, False), ("test", test_loader, False)):
            start = time.process_time()
            train_or_eval_model(run, model, reg_loss, cls_loss, loader, optimizer=optimizer if train else None, train=train, first_stage=first_stage)
            row[name] = time.process_time() - start
        return row

    out = {"parameters": sum(p.numel() for p in model.parameters())}
    out["stage1"] = summary([epoch(True) for _ in range(WARMUP + args.stage1_epochs)])
    model_state, optimizer_state = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    out["stage2"] = {}
    for condition in CONDITIONS:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(copy.deepcopy(optimizer_state))
        run.test_condition = condition
        out["stage2"][condition] = summary([epoch(False) for _ in range(WARMUP + args.stage2_epochs)])
    return out


# -- the imsa sides -------------------------------------------------------------------------------


def imsa_side(args) -> dict:
    import torch

    import imsa.methods.phase as phase_module
    from imsa.config import build_config, packaged_config
    from imsa.data.registry import dataset_family, load_dataset
    from imsa.methods.momke import MoMKE
    from imsa.protocols import Protocol
    from imsa.training import RunContext, seed_everything

    torch.set_num_threads(1)
    phases: dict[str, list[dict]] = {}
    run_training = phase_module.run_training

    def timed_training(model, optimizer, *, score, phase, callbacks, **kw):
        """imsa's loop, its CPU clock read when an epoch's validation score starts and when the epoch ends."""
        rows, clock = phases.setdefault(phase, []), {}

        class Clock:
            def on_phase_start(self, *_):
                clock["epoch"] = time.process_time()

            def on_epoch_end(self, *_):
                now = time.process_time()
                rows.append({"train": clock["valid"] - clock["epoch"], "valid": now - clock["valid"]})
                clock["epoch"] = now

        def timed_score(epoch):
            clock["valid"] = time.process_time()
            return score(epoch)

        return run_training(model, optimizer, score=timed_score, phase=phase, callbacks=[*callbacks, Clock()], **kw)

    phase_module.run_training = timed_training
    dataset = load_dataset(DATASET, args.data_dir)
    splits = dataset.split(0)
    overrides = {"stage1_epochs": WARMUP + args.stage1_epochs, "epochs": WARMUP + args.stage2_epochs, "per_condition": args.side == "imsa"}
    config = build_config(MoMKE.Config, packaged_config("momke", DATASET, family=dataset_family(DATASET)).values, overrides)
    seed_everything(args.seed)
    method = MoMKE(config)
    method.fit(splits["train"], splits["valid"], protocol=Protocol(), seed=args.seed, context=RunContext())
    start = time.process_time()
    method.evaluate(splits["test"], Protocol().settings(splits["test"]))
    test_cpu_s = time.process_time() - start
    released_name = {imsa: released for released, imsa in IMSA_NAME.items()}
    stage2 = {}
    for phase, rows in phases.items():
        if phase.startswith("stage2"):
            condition = phase[len("stage2[") : -1] if "[" in phase else "all"
            stage2[released_name.get(condition, condition)] = summary(rows)
    return {
        "parameters": sum(p.numel() for p in method.build(method.spec_).parameters()),
        "config": {k: getattr(config, k) for k in ("dim", "depth", "heads", "dropout", "batch_size", "lr", "weight_decay", "per_condition", "standardize")},
        "stage1": summary(phases["stage1"]),
        "stage2": stage2,
        "test_cpu_s": test_cpu_s,
    }


# -- the report -----------------------------------------------------------------------------------


def mean_over(stage2: dict, key: str) -> float:
    return sum(row[key] for row in stage2.values()) / len(stage2)


def phase_row(side: dict, stage: str) -> dict:
    """A side's CPU per training epoch and per validation pass of a stage (stage 2: the mean over its models)."""
    if stage == "stage1":
        row = side["stage1"]
        train, valid = row["train_cpu_s_per_epoch"], row["valid_cpu_s_per_epoch"]
        test = row.get("test_cpu_s_per_epoch")
    else:
        train, valid = mean_over(side["stage2"], "train_cpu_s_per_epoch"), mean_over(side["stage2"], "valid_cpu_s_per_epoch")
        test = mean_over(side["stage2"], "test_cpu_s_per_epoch") if "test_cpu_s_per_epoch" in next(iter(side["stage2"].values())) else None
    return {"train_cpu_s_per_epoch": train, "eval_cpu_s": valid, "test_cpu_s": test, "peak_rss_mib": side["peak_rss_mib"], "parameters": side["parameters"]}


def protocol_costs(runs: dict) -> dict:
    """The fixed protocol's CPU seconds, composed from the measured epochs (150 + 150 epochs, 7 conditions)."""
    n = PROTOCOL_EPOCHS
    released = runs["released"]
    s1 = released["stage1"]
    released_stage1 = len(CONDITIONS) * n * (s1["train_cpu_s_per_epoch"] + s1["test_cpu_s_per_epoch"])
    released_stage2 = sum(n * (r["train_cpu_s_per_epoch"] + r["test_cpu_s_per_epoch"]) for r in released["stage2"].values())
    out = {"released": {"stage1": released_stage1, "stage2": released_stage2, "total": released_stage1 + released_stage2}}
    # as momke_released.py runs it: a validation pass added to every epoch, for selection on validation
    with_valid1 = released_stage1 + len(CONDITIONS) * n * s1["valid_cpu_s_per_epoch"]
    with_valid2 = released_stage2 + sum(n * r["valid_cpu_s_per_epoch"] for r in released["stage2"].values())
    out["released + validation pass"] = {"stage1": with_valid1, "stage2": with_valid2, "total": with_valid1 + with_valid2}
    for side in ("imsa", "imsa-one-model"):
        s1 = runs[side]["stage1"]
        stage1 = n * (s1["train_cpu_s_per_epoch"] + s1["valid_cpu_s_per_epoch"])
        stage2 = sum(n * (r["train_cpu_s_per_epoch"] + r["valid_cpu_s_per_epoch"]) for r in runs[side]["stage2"].values())
        test = runs[side]["test_cpu_s"]
        out[side] = {"stage1": stage1, "stage2": stage2, "test": test, "total": stage1 + stage2 + test}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, help="a checkout of github.com/wxxv/MoMKE (without it, nothing runs)")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stage1-epochs", type=int, default=20, help="timed stage-1 epochs per side, after a warm-up epoch (default 20)")
    parser.add_argument("--stage2-epochs", type=int, default=10, help="timed stage-2 epochs per model, after a warm-up epoch (default 10)")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--label", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(released_side(args) if args.side == "released" else imsa_side(args)))
        return
    if args.repo is None or not (args.repo / "MoMKE" / "train_MoMKE.py").is_file():
        print("momke_epoch_released: pass --repo PATH, a checkout of github.com/wxxv/MoMKE (its MoMKE/train_MoMKE.py); nothing was measured.")
        return
    import importlib.util

    missing = [name for name in ("pandas", "sklearn") if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"momke_epoch_released: the released code needs {', '.join(missing)}; pip install pandas scikit-learn")
    from imsa.data.export import export_gcnet
    from imsa.data.registry import load_dataset

    with tempfile.TemporaryDirectory(prefix="momke-epoch-") as work:
        label = export_gcnet(load_dataset(DATASET, args.data_dir), Path(work) / "data", fold=0)
        arguments = ["--repo", str(args.repo), "--label", str(label), "--data-dir", str(args.data_dir), "--seed", str(args.seed)]
        arguments += ["--stage1-epochs", str(args.stage1_epochs), "--stage2-epochs", str(args.stage2_epochs)]
        runs = {}
        for side in SIDES:
            runs[side] = measure(__file__, side, arguments)
            print(f"{side}: done", flush=True)
    for run in runs.values():
        for row in [run["stage1"], *run["stage2"].values()]:
            row.pop("raw")

    stage2_sides = {side: phase_row(runs[side], "stage2") for side in SIDES}
    argv = sys.argv[1:]
    write_report(
        "momke_epoch",
        "MoMKE: the authors' released trainer beside imsa's, CPU per epoch",
        f"stage 2 (the mixture of experts; each side's mean over its stage-2 models: the released code's 7 and imsa's 7 "
        f"per-condition models, or imsa's one model for the 7 conditions) on `{DATASET}` fold 0 (19 training videos: one batch "
        "of 32 videos per epoch; 6 validation videos), the released MOSI settings (dim 256, depth 4, 2 heads, dropout 0.5, "
        "Adam at 1e-4, weight decay 1e-5), each side's own trainer,",
        {side: {k: v for k, v in row.items() if k != "test_cpu_s"} for side, row in stage2_sides.items()},
        {"imsa": "imsa per_condition=true (defaults)", "imsa-one-model": "imsa per_condition=false"},
        argv,
        args.stage2_epochs,
        script="momke_epoch_released.py",
        why="imsa-one-model's evaluation scores all 7 conditions. The released trainer itself runs (its training and "
        "evaluation function, loaders and masks), patched in memory for a CPU run only (see the script); "
        "stage 1 and the whole protocol follow;",
    )

    # write_report's rates have one entry per imsa side and an equal-tensor label: replaced by one entry per phase.
    stage1 = {side: phase_row(runs[side], "stage1") for side in SIDES}
    protocol = protocol_costs(runs)
    released1, released2 = stage1["released"], stage2_sides["released"]

    def released_rates(row):
        return {"train_cpu_s_per_epoch": row["train_cpu_s_per_epoch"], "valid_cpu_s_per_epoch": row["eval_cpu_s"], "test_cpu_s_per_epoch": row["test_cpu_s"]}

    def imsa_rates(row):
        return {
            "epoch_cpu_s": row["train_cpu_s_per_epoch"] + row["eval_cpu_s"],
            "train_cpu_s_per_epoch": row["train_cpu_s_per_epoch"],
            "valid_cpu_s_per_epoch": row["eval_cpu_s"],
        }

    how = (
        f"composed from the CPU per epoch measured here × {PROTOCOL_EPOCHS} epochs per stage: released 7 runs "
        "(stage 1 and stage 2 each; training + its per-epoch test pass); imsa {}, training + validation, + one test scoring (measured)"
    )
    where = f"{DATASET} fold 0"
    rates = {
        "stage1": {
            "label": f"{where}, stage 1 (unimodal experts, complete data), {args.stage1_epochs} epochs",
            "released": released_rates(released1),
            "imsa": imsa_rates(stage1["imsa"]),
        },
        "stage2": {
            "label": f"{where}, stage 2 (mixture of experts), one model per condition, mean of 7, {args.stage2_epochs} epochs each",
            "released": released_rates(released2),
            "imsa": imsa_rates(stage2_sides["imsa"]),
            "protocol": {
                "name": f"fixed, 7 conditions, {PROTOCOL_EPOCHS} + {PROTOCOL_EPOCHS} epochs; imsa per_condition=true",
                "released_cpu_s": protocol["released"]["total"],
                "imsa_cpu_s": protocol["imsa"]["total"],
                "how": how.format("1 stage 1 + 7 stage-2 models"),
            },
        },
        "stage2-one-model": {
            "label": f"{where}, stage 2, imsa one model for the 7 conditions (per_condition=false; validation under all 7) "
            f"vs a released per-condition model, {args.stage2_epochs} epochs",
            "released": released_rates(released2),
            "imsa": imsa_rates(stage2_sides["imsa-one-model"]),
            "protocol": {
                "name": f"fixed, 7 conditions, {PROTOCOL_EPOCHS} + {PROTOCOL_EPOCHS} epochs; imsa per_condition=false",
                "released_cpu_s": protocol["released"]["total"],
                "imsa_cpu_s": protocol["imsa-one-model"]["total"],
                "how": how.format("1 stage 1 + 1 stage-2 model"),
            },
        },
    }
    path = RESULTS / "momke_epoch_released.json"
    report = json.loads(path.read_text())
    report.update(
        rates=rates,
        stage1_sides=stage1,
        protocol_cpu_s=protocol,
        runs=runs,
        settings={
            "dataset": DATASET,
            "fold": 0,
            "seed": args.seed,
            "warmup_epochs": WARMUP,
            "stage1_epochs": args.stage1_epochs,
            "stage2_epochs": args.stage2_epochs,
        },
    )
    path.write_text(json.dumps(report, indent=2) + "\n")

    lines = [
        "",
        f"Stage 1 (unimodal experts, complete data), {args.stage1_epochs} epochs after a warm-up epoch:",
        "",
        "| side | CPU s per training epoch | CPU s per validation pass | CPU s per test pass | ratio to released (training) | ratio to released (training + validation) |",
        "|---|---|---|---|---|---|",
    ]
    for side, row in stage1.items():
        test = "—" if row["test_cpu_s"] is None else f"{row['test_cpu_s']:.3f}"
        ratio = (row["train_cpu_s_per_epoch"] + row["eval_cpu_s"]) / (released1["train_cpu_s_per_epoch"] + released1["eval_cpu_s"])
        lines.append(
            f"| {side} | {row['train_cpu_s_per_epoch']:.3f} | {row['eval_cpu_s']:.3f} | {test} | {row['train_cpu_s_per_epoch'] / released1['train_cpu_s_per_epoch']:.2f} | {ratio:.2f} |"
        )
    lines += [
        "",
        f"Stage 2 per model, {args.stage2_epochs} epochs after a warm-up epoch (CPU s per training epoch / per validation pass; released: / per test pass):",
        "",
        "| condition | " + " | ".join(SIDES) + " |",
        "|---" * (len(SIDES) + 1) + "|",
    ]
    for condition in [*CONDITIONS, "all"]:
        cells = []
        for side in SIDES:
            row = runs[side]["stage2"].get(condition)
            if row is None:
                cells.append("—")
            else:
                cells.append(
                    f"{row['train_cpu_s_per_epoch']:.3f} / {row['valid_cpu_s_per_epoch']:.3f}"
                    + (f" / {row['test_cpu_s_per_epoch']:.3f}" if "test_cpu_s_per_epoch" in row else "")
                )
        lines.append(f"| {IMSA_NAME.get(condition, condition)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"The whole fixed protocol ({PROTOCOL_EPOCHS} + {PROTOCOL_EPOCHS} epochs, 7 conditions), composed from the epochs above: the released "
        "code runs once per condition, both stages each time, every epoch a training pass and a test pass (no validation); imsa "
        "trains stage 1 once, then 7 stage-2 models (`per_condition=true`) or one (`false`), every epoch a training pass and a "
        "validation pass, then scores the test split once (measured). `released + validation pass`: the released code as "
        "`momke_released.py` runs it, a validation pass added to every epoch for selection on validation data. Start-up, data "
        "loading and export are left out.",
        "",
        "| side | stage 1 CPU s | stage 2 CPU s | test scoring CPU s | total CPU s | ratio to released |",
        "|---|---|---|---|---|---|",
    ]
    for side, cost in protocol.items():
        test = f"{cost['test']:.2f}" if "test" in cost else "— (every epoch)"
        lines.append(
            f"| {side} | {cost['stage1']:.1f} | {cost['stage2']:.1f} | {test} | {cost['total']:.1f} | {cost['total'] / protocol['released']['total']:.2f} |"
        )
    md = RESULTS / "momke_epoch_released.md"
    md.write_text(md.read_text() + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
