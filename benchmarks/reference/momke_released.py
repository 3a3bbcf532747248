"""imsa's MoMKE against the authors' released code on the same folds, both selected honestly.

Runs the released MoMKE (github.com/wxxv/MoMKE) on ``mosi-bclstm`` folds exported with
:func:`imsa.data.export.export_gcnet`, one model per test condition as the paper does,
and imsa's MoMKE on the same folds and seed; writes a table of test acc2_has0 / MAE per
fold and condition, released vs imsa, to ``benchmarks/results/momke_released.{json,md}``.

The authors' code is never copied into imsa: pass a checkout of it with ``--repo``
(without it the script says so and exits 0). It runs unchanged; what a CPU run of it
needs, and what honest selection needs, is applied at run time by this script's
``released`` sub-command, which imports the released modules and replaces, in memory:

* ``config.PATH_TO_FEATURES`` / ``PATH_TO_LABEL`` / ``LOG_DIR`` / ``MODEL_DIR``: the
  exported fold and a work folder instead of the authors' machine's paths;
* ``utils.get_loaders``: its evaluation loader covers the validation *and* the test
  videos (the released code evaluates on test only and has no validation pass);
* ``utils.build_model``: a forward hook records every evaluation output per utterance,
  each epoch, with the stage it belongs to (nothing in the model changes).

``torch.set_flush_denormal(True)`` is set for the released run (a CPU setting; raw
openSMILE audio drives its attention into denormal floats, which run tens of times
slower on a CPU; flushing them changes values below 1e-38 only). The epoch is then chosen
here on validation data only, among the stage-2 epochs: by validation f1_non0 (the
released criterion, test F1 of non-zero labels, moved to validation) and by validation
MAE; the test metrics of that epoch are reported.

    python benchmarks/reference/momke_released.py --repo PATH/TO/MoMKE          # 5 folds, seed 1 (hours on 2 cores)
    python benchmarks/reference/momke_released.py --repo PATH --folds 0 --epochs 4 --stage-epochs 2 --conditions a   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from common import default_data_dir  # noqa: E402

DATASET = "mosi-bclstm"
CONDITIONS = ("a", "t", "v", "at", "av", "tv", "atv")  # the released names (t: text)
IMSA_NAME = {"a": "a", "t": "l", "v": "v", "at": "l,a", "av": "a,v", "tv": "l,v", "atv": "l,a,v"}
REPORTED = ("acc2_has0", "mae", "acc2_non0", "f1_non0", "corr")


# -- the released code, run in a child process ---------------------------------------------------


def run_released(args) -> None:
    """One released training run (one fold, one condition), recording validation and test outputs."""
    import torch

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    source = Path(args.repo).resolve()
    sys.path[:0] = [str(source / "MoMKE"), str(source)]
    import config
    import utils
    from torch.utils.data import DataLoader
    from torch.utils.data.sampler import SubsetRandomSampler

    label = Path(args.label).resolve()
    config.PATH_TO_FEATURES["CMUMOSI"] = str(label.parent / "features")
    config.PATH_TO_LABEL["CMUMOSI"] = str(label)
    work = Path(args.out).resolve().parent / "released-files"
    config.LOG_DIR = config.MODEL_DIR = str(work)

    batch_videos: list = []
    get_loaders = utils.get_loaders

    def loaders_with_validation(*a, **k):
        train_loaders, test_loaders, *dims = get_loaders(*a, **k)
        test = test_loaders[0]
        dataset = test.dataset
        first = len(dataset.trainVids)
        evaluated = list(range(first, first + len(dataset.valVids) + len(dataset.testVids)))

        def collate(data):
            batch = dataset.collate_fn(data)
            batch_videos.append(batch[-1])
            return batch

        loader = DataLoader(dataset, batch_size=test.batch_size, sampler=SubsetRandomSampler(evaluated), collate_fn=collate, num_workers=0)
        return (train_loaders, [loader], *dims)

    epochs: list[dict] = []  # per evaluation pass: {"stage": 1|2, "values": {utterance: prediction}}
    dataset_ids: dict = {}
    build_model = utils.build_model

    def build_recording_model(*a, **k):
        model = build_model(*a, **k)
        state = {"training_seen": True}

        def hook(module, inputs, output):
            if module.training:
                state["training_seen"] = True
                return
            if state["training_seen"]:
                epochs.append({"stage": 1 if inputs[3] else 2, "values": {}})
                state["training_seen"] = False
            videos = batch_videos.pop(0)
            out = output[1].detach().float().numpy()  # (batch, utterances, 1)
            for b, video in enumerate(videos):
                for i, utterance in enumerate(dataset_ids[video]):
                    epochs[-1]["values"][utterance] = float(out[b, i, 0])

        model.register_forward_hook(hook)
        return model

    utils.get_loaders, utils.build_model = loaders_with_validation, build_recording_model
    import pickle

    with open(label, "rb") as f:
        video_ids, labels, _, _, train_videos, valid_videos, test_videos = pickle.load(f, encoding="latin1")
    dataset_ids.update(video_ids)
    sys.argv = [
        "train_MoMKE.py",
        "--dataset=CMUMOSI",
        "--audio-feature=audio",
        "--text-feature=text",
        "--video-feature=video",
        f"--seed={args.seed}",
        "--batch-size=32",
        f"--epoch={args.epochs}",
        "--lr=0.0001",
        "--hidden=256",
        "--depth=4",
        "--num_heads=2",
        "--drop_rate=0.5",
        "--attn_drop_rate=0.0",
        f"--test_condition={args.condition}",
        f"--stage_epoch={args.stage_epochs}",
        "--gpu=0",
    ]  # run_MoMKE_cmumosi.sh, with the exported features and the seed and epochs asked for
    import runpy

    runpy.run_path(str(source / "MoMKE" / "train_MoMKE.py"), run_name="__main__")
    sys.stdout = sys.__stdout__
    utterances, split, truth = [], [], []
    for name, videos in (("valid", valid_videos), ("test", test_videos)):
        for video in sorted(videos):
            utterances += video_ids[video]
            split += [name] * len(video_ids[video])
            truth += [float(v) for v in labels[video]]
    predictions = np.array([[e["values"][u] for u in utterances] for e in epochs], dtype=np.float64)
    tmp = Path(args.out).with_suffix(".tmp.npz")
    np.savez(
        tmp,
        utterances=np.array(utterances),
        split=np.array(split),
        labels=np.array(truth),
        stage=np.array([e["stage"] for e in epochs]),
        predictions=predictions,
    )
    os.replace(tmp, args.out)


# -- selection and the table -----------------------------------------------------------------------


def released_scores(path: Path) -> dict:
    """Test metrics at the stage-2 epoch chosen on validation, by validation f1_non0 and by validation MAE."""
    from imsa.metrics import regression_metrics

    data = np.load(path)
    split, truth, stage, predictions = data["split"], data["labels"], data["stage"], data["predictions"]
    valid, test = split == "valid", split == "test"
    stage2 = np.flatnonzero(stage == 2)
    valid_metrics = [regression_metrics(predictions[e, valid], truth[valid]) for e in stage2]
    chosen = {
        "by_valid_f1_non0": int(stage2[int(np.argmax([m["f1_non0"] for m in valid_metrics]))]),
        "by_valid_mae": int(stage2[int(np.argmin([m["mae"] for m in valid_metrics]))]),
    }
    out = {}
    for rule, epoch in chosen.items():
        metrics = regression_metrics(predictions[epoch, test], truth[test])
        out[rule] = {"epoch": epoch, "stage2_epoch": int(epoch - stage2[0]), **{k: metrics[k] for k in REPORTED}}
    return out


def imsa_scores(run_dir: Path) -> dict:
    from imsa.experiments.store import load_record

    (record,) = [load_record(p) for p in sorted((run_dir / "runs").glob("*.json"))]
    return {c: {k: record.metrics["test"][IMSA_NAME[c]][k] for k in REPORTED} for c in CONDITIONS if IMSA_NAME[c] in record.metrics["test"]}


def write_table(results: dict, folds: list[int], conditions: list[str], out: Path) -> None:
    from imsa.experiments.store import Stats, format_cell

    columns = {"released, epoch by validation F1": ("released", "by_valid_f1_non0"), "released, epoch by validation MAE": ("released", "by_valid_mae")}
    for name in results["imsa"]:
        columns[f"imsa ({name})"] = ("imsa", name)

    def cell(source, rule, fold, condition):
        if source == "released":
            return results["released"].get(str(fold), {}).get(condition, {}).get(rule)
        return results["imsa"][rule].get(str(fold), {}).get(condition)

    summary = {}
    lines = ["| condition | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for condition in [*conditions, "mean"]:
        row = [IMSA_NAME.get(condition, condition)]
        for column, (source, rule) in columns.items():
            per_fold = []
            for fold in folds:
                chosen = [cell(source, rule, fold, c) for c in (conditions if condition == "mean" else [condition])]
                if all(chosen):
                    per_fold.append({k: float(np.mean([m[k] for m in chosen])) for k in ("acc2_has0", "mae")})
            if len(per_fold) == len(folds):
                acc, mae = (Stats.of(m[k] for m in per_fold) for k in ("acc2_has0", "mae"))
                row.append(f"{format_cell(acc)} / {format_cell(mae)}")
                summary.setdefault(column, {})[condition] = {"acc2_has0": acc.to_dict(), "mae": mae.to_dict()}
            else:
                row.append(format_cell(None))
        lines.append("| " + " | ".join(row) + " |")
    results["summary"] = summary
    text = "\n".join(
        [
            f"# MoMKE: released code vs imsa on {DATASET}, folds {' '.join(map(str, folds))}, seed {results['seed']}",
            "",
            "Test acc2_has0 / MAE, mean ± std over folds; epochs selected on validation only (stage 2).",
            "",
            *lines,
            "",
            f"Written by `python benchmarks/reference/momke_released.py {' '.join(results['argv'])}`.",
            "",
        ]
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    released = sub.add_parser("released", help=argparse.SUPPRESS)
    for name in ("repo", "label", "condition", "out"):
        released.add_argument(f"--{name}", required=True)
    for name in ("seed", "epochs", "stage_epochs", "threads"):
        released.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, required=True)
    parser.add_argument("--repo", type=Path, help="a checkout of github.com/wxxv/MoMKE (without it, nothing runs)")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS))
    parser.add_argument("--epochs", type=int, default=300, help="both stages together, as the released script counts (default 300)")
    parser.add_argument("--stage-epochs", type=int, default=150, help="stage-1 epochs (default 150)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each (default 2)")
    parser.add_argument(
        "--imsa",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="an imsa variant to run beside the released code (repeatable); default: imsa's defaults, named 'defaults'",
    )
    parser.add_argument("--only", choices=("released", "imsa"), help="run only one side (the table still shows what the other has in --work)")
    parser.add_argument(
        "--work", type=Path, default=REPO / "runs" / "momke_released", help="exported folds, released outputs and imsa runs (reused when present)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "momke_released.json")
    args = parser.parse_args(argv)
    if args.command == "released":
        run_released(args)
        return 0
    if args.repo is None:
        print("momke_released: no --repo given; pass a checkout of github.com/wxxv/MoMKE to run the comparison. Nothing was run.")
        return 0
    if not (args.repo / "MoMKE" / "train_MoMKE.py").is_file():
        print(f"momke_released: {args.repo} has no MoMKE/train_MoMKE.py; pass the root of a checkout of github.com/wxxv/MoMKE.", file=sys.stderr)
        return 2
    try:
        import pandas  # noqa: F401  (the released collate function uses it)
        import sklearn  # noqa: F401
    except ImportError as e:
        print(f"momke_released: the released code needs {e.name}; pip install pandas scikit-learn", file=sys.stderr)
        return 2
    from imsa.data.export import export_gcnet
    from imsa.data.registry import load_dataset

    dataset = load_dataset(DATASET, args.data_dir)
    stage2 = args.epochs - args.stage_epochs
    variants = {}
    for spec in args.imsa or ["defaults:"]:
        name, _, sets = spec.partition(":")
        variants[name] = [s for s in sets.split(",") if s]
    jobs = []
    for fold in args.folds:
        folder = args.work / f"fold{fold}"
        label = folder / "data" / f"{DATASET}_features_raw.pkl"
        if not label.is_file():
            label = export_gcnet(dataset, folder / "data", fold=fold)
        for condition in args.conditions:
            out = folder / f"released-{condition}-seed{args.seed}-e{args.epochs}-s{args.stage_epochs}.npz"
            if not out.is_file() and args.only != "imsa":
                command = [
                    sys.executable,
                    __file__,
                    "released",
                    "--repo",
                    str(args.repo),
                    "--label",
                    str(label),
                    "--condition",
                    condition,
                    "--out",
                    str(out),
                    "--seed",
                    str(args.seed),
                    "--epochs",
                    str(args.epochs),
                    "--stage-epochs",
                    str(args.stage_epochs),
                    "--threads",
                    "1",
                ]
                jobs.append((f"released fold {fold} {condition}", command, folder / f"released-{condition}.log"))
        for name, sets in variants.items():
            run_dir = folder / f"imsa-{name}-seed{args.seed}-e{stage2}-s{args.stage_epochs}"
            if not (run_dir / "summary.json").is_file() and args.only != "released":
                command = [
                    "imsa",
                    "run",
                    "--method",
                    "momke",
                    "--dataset",
                    DATASET,
                    "--data-dir",
                    str(args.data_dir),
                    "--folds",
                    str(fold),
                    "--seeds",
                    str(args.seed),
                    "--out",
                    str(run_dir),
                    "--threads",
                    "1",
                    "--set",
                    f"epochs={stage2}",
                    "--set",
                    f"stage1_epochs={args.stage_epochs}",
                ]
                for s in sets:
                    command += ["--set", s]
                jobs.append((f"imsa {name} fold {fold}", command, folder / f"imsa-{name}.log"))

    def execute(job):
        what, command, log = job
        started = time.perf_counter()
        with open(log, "w") as f:
            code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode
        print(f"{what}: {'done' if code == 0 else f'FAILED (exit {code}, see {log})'} in {time.perf_counter() - started:.0f} s", flush=True)
        return code

    print(f"{len(jobs)} run(s) to do, {args.jobs} at once")
    with ThreadPoolExecutor(args.jobs) as pool:
        failed = sum(code != 0 for code in pool.map(execute, jobs))
    results = {
        "dataset": DATASET,
        "seed": args.seed,
        "epochs": args.epochs,
        "stage_epochs": args.stage_epochs,
        "argv": sys.argv[1:] if argv is None else argv,
        "released": {},
        "imsa": {name: {} for name in variants},
    }
    for fold in args.folds:
        folder = args.work / f"fold{fold}"
        for condition in args.conditions:
            path = folder / f"released-{condition}-seed{args.seed}-e{args.epochs}-s{args.stage_epochs}.npz"
            if path.is_file():
                results["released"].setdefault(str(fold), {})[condition] = released_scores(path)
        for name in variants:
            run_dir = folder / f"imsa-{name}-seed{args.seed}-e{stage2}-s{args.stage_epochs}"
            if (run_dir / "summary.json").is_file():
                results["imsa"][name][str(fold)] = imsa_scores(run_dir)
    write_table(results, args.folds, args.conditions, args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
