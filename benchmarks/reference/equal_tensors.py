"""What the equal-tensor side-by-side benchmarks share.

Where a released trainer cannot run on the data here (it fine-tunes BERT, whose weights
cannot be downloaded), its network and imsa's are timed on the same tensors instead:
``mosi-misa`` fold 0 (word-aligned MOSI sequences, 44 steps; text as precomputed 384-wide
word vectors), the training split in batches in one shuffled order per epoch, and one
evaluation forward over the validation split. Each side runs in its own process with one
thread, ``epochs`` timed epochs after a warm-up epoch; peak memory comes from ``wait4``.
A side's script builds its network and a ``step(batch) -> loss`` and an
``evaluate() -> predictions``; :func:`time_epochs` times them.
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


def side_parser(
    doc: str,
    repository: str,
    sides,
    *,
    epochs: int = 5,
    epochs_help: str = "timed epochs per side, after one warm-up epoch",
    repeats: bool = False,
    pydeps: str | None = None,
):
    """The options every side-by-side script takes: ``--repo`` (a checkout of github.com/
    ``repository``), ``--data-dir``, ``--epochs`` and the hidden ``--side`` its child
    processes get; ``--repeats`` where each side runs several times, ``--pydeps`` where the
    released code imports packages (named by ``pydeps``) that imsa does not need. The
    caller adds its own and parses."""
    from common import default_data_dir

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, help=f"a checkout of github.com/{repository}")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--epochs", type=int, default=epochs, help=epochs_help)
    parser.add_argument("--side", choices=sides, help=argparse.SUPPRESS)
    if repeats:
        parser.add_argument("--repeats", type=int, default=3, help="runs per side, alternating; the fastest is kept (default 3)")
    if pydeps:
        parser.add_argument("--pydeps", type=Path, help=f"a folder of packages the released side imports ({pydeps})")
    return parser


def method_parser(doc: str, methods, sides, *, pydeps: str | None = None):
    """:func:`side_parser` for the scripts that measure several of MMSA's networks, each side
    ``--repeats`` times: ``--methods`` to measure, and the hidden ``--method`` of a child."""
    parser = side_parser(doc, "thuiar/MMSA", sides, repeats=True, pydeps=pydeps)
    parser.add_argument("--methods", nargs="+", choices=methods, default=list(methods))
    parser.add_argument("--method", choices=methods, help=argparse.SUPPRESS)
    return parser


def child_arguments(args) -> list[str]:
    """The options of :func:`side_parser` that a side's child process gets again."""
    pydeps = getattr(args, "pydeps", None)
    return ["--repo", str(args.repo), "--data-dir", str(args.data_dir), "--epochs", str(args.epochs)] + (["--pydeps", str(pydeps)] if pydeps else [])


def add_pydeps(args) -> None:
    """Put ``--pydeps`` first on the import path (the released side's process only)."""
    if args.pydeps:
        sys.path.insert(0, str(args.pydeps))


def checkout_missing(repo: Path | None, repository: str, marker: str) -> bool:
    """True (and says so) when ``repo`` is not a checkout of ``repository`` holding ``marker``."""
    if repo is not None and (repo / marker).is_file():
        return False
    print(f"pass --repo PATH: a checkout of github.com/{repository} ({marker}); nothing measured")
    return True


def bare_mmsa(repo: Path) -> None:
    """Import MMSA's model files from the checkout ``repo`` without running its package
    ``__init__`` files, which import every model, MMSA's config tooling and packages these
    networks never use (a run-time patch, in this process only)."""
    for name in ("MMSA", "MMSA.models", "MMSA.models.singleTask"):
        package = types.ModuleType(name)
        package.__path__ = [str(repo / "src" / name.replace(".", "/"))]
        sys.modules[name] = package


def mult_settings(c, dims: dict) -> types.SimpleNamespace:
    """The settings MMSA's ``MULT`` (and the DiCMoR and IMDer networks built on it) reads,
    from an imsa MulT-family config ``c``, on precomputed text (``use_bert`` off)."""
    return types.SimpleNamespace(
        use_bert=False,
        dst_feature_dim_nheads=(c.dim, c.heads),
        feature_dims=(dims["l"], dims["a"], dims["v"]),
        nlevels=c.depth,
        attn_dropout=c.attn_dropout,
        attn_dropout_a=c.attn_dropout_a,
        attn_dropout_v=c.attn_dropout_v,
        relu_dropout=c.relu_dropout,
        embed_dropout=c.embed_dropout,
        res_dropout=c.res_dropout,
        output_dropout=c.output_dropout,
        text_dropout=c.text_dropout,
        attn_mask=c.causal,
        conv1d_kernel_size_l=c.conv_kernel,
        conv1d_kernel_size_a=c.conv_kernel,
        conv1d_kernel_size_v=c.conv_kernel,
        train_mode="regression",
        num_classes=1,
    )


def mosi_misa(data_dir: Path):
    from imsa.data.registry import load_dataset

    dataset = load_dataset("mosi-misa", data_dir)
    return dataset, dataset.split(0)


def shuffled_batches(subset, batch_size: int, epochs: int) -> list[list]:
    """Each epoch's training batches, shuffled by the epoch's own seed."""
    import numpy as np

    from imsa.batch import iterate_batches

    return [list(iterate_batches(subset, batch_size, shuffle=True, rng=np.random.default_rng(epoch))) for epoch in range(epochs)]


def timed_epoch(model, step, evaluate, batches: list, optimizer, before_step=None) -> tuple[float, float]:
    """Train on ``batches`` (``step(batch)`` gives the loss; ``before_step()``, e.g. gradient
    clipping, runs between backward and the optimiser), then evaluate: the CPU seconds of each."""
    import torch

    model.train()
    start = time.process_time()
    for batch in batches:
        step(batch).backward()
        if before_step is not None:
            before_step()
        optimizer.step()
        optimizer.zero_grad()
    trained = time.process_time() - start
    model.eval()
    start = time.process_time()
    with torch.no_grad():
        evaluate()
    return trained, time.process_time() - start


def time_epochs(model, step, evaluate, training: list[list], optimizer, before_step=None) -> dict:
    """:func:`timed_epoch` on each epoch's batches; CPU seconds per epoch and per evaluation,
    the first (warm-up) epoch left out."""
    train_s, eval_s = zip(*(timed_epoch(model, step, evaluate, batches, optimizer, before_step) for batches in training))
    timed = len(training) - 1
    return {
        "train_cpu_s_per_epoch": sum(train_s[1:]) / timed,
        "eval_cpu_s": sum(eval_s[1:]) / timed,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def measure(script: str, side: str, arguments: list[str]) -> dict:
    """``script --side SIDE ARGUMENTS`` in a one-thread child process: the JSON it prints
    last, and its peak resident memory (MiB). An imsa side first tunes the C allocator as
    imsa's command line and grid workers do (:func:`imsa.allocator.tune_allocator`); the
    released side keeps the system's defaults, as its own scripts run."""
    command = [sys.executable, script, "--side", side, *arguments]
    if side.startswith("imsa"):
        launch = "import runpy, sys; from imsa.allocator import tune_allocator; tune_allocator(); sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
        command = [sys.executable, "-c", launch, script, "--side", side, *arguments]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        out.seek(0), err.seek(0)
        if status != 0:
            raise SystemExit(f"{side} failed:\n{err.read().decode()[-2000:]}")
        return {**json.loads(out.read().decode().strip().splitlines()[-1]), "peak_rss_mib": round(usage.ru_maxrss / 1024)}


def measure_alternating(script: str, sides: tuple[str, ...], arguments: list[str], repeats: int) -> dict[str, dict]:
    """:func:`measure` each side ``repeats`` times, the sides alternating, keeping each side's
    fastest run: on a machine that other work shares, the least disturbed run of each."""
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for _ in range(repeats):
        for side in sides:
            runs[side].append(measure(script, side, arguments))
    return {side: min(results, key=lambda r: r["train_cpu_s_per_epoch"]) | {"repeats": repeats} for side, results in runs.items()}


def write_report(
    method: str,
    title: str,
    description: str,
    sides: dict[str, dict],
    imsa_sides: dict[str, str],
    argv: list[str],
    epochs: int,
    script: str | None = None,
    why: str = "The released trainer needs BERT's weights, which cannot be downloaded here, so no test metrics are compared:",
) -> None:
    """``benchmarks/results/<method>_released.{json,md}``; ``imsa_sides`` maps each imsa
    side to its label in ``speed_vs_released.md`` (the released side is ``released``);
    ``script`` is the benchmark's file name (default ``<method>_released.py``), ``why`` the
    reason tensors, not the released trainer, are compared."""
    from common import machine

    released = sides["released"]
    report = {
        "benchmark": f"{method}_released",
        "argv": argv,
        "machine": machine(),
        "fold": 0,
        "seed": 1,
        "epochs": epochs,
        "sides": sides,
        "rates": {side: rate(f"equal tensors, mosi-misa fold 0, {epochs} epochs, {label}", released, sides[side]) for side, label in imsa_sides.items()},
    }
    (RESULTS / f"{method}_released.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# {title}",
        "",
        f"`python benchmarks/reference/{script or method + '_released.py'} {' '.join(argv)}` on {report['machine']}: {description} {epochs} "
        "epochs after a warm-up epoch, one thread, a process per side"
        + (f" (each side {sides['released']['repeats']} times, alternating, its fastest run kept)" if "repeats" in sides["released"] else "")
        + f"; evaluation: one forward over the validation split. {why} each network starts from "
        "its own initialisation and both see the same tensors.",
        "",
        *table(sides),
    ]
    (RESULTS / f"{method}_released.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def add_phase(method: str, phase: str, label: str, heading: str, released: dict, imsa: dict) -> None:
    """A second phase of the same method (e.g. a teacher or pretraining phase) appended to
    ``<method>_released.{json,md}`` as written by :func:`write_report`: its own setting row
    (``label``) and a table under ``heading``."""
    path = RESULTS / f"{method}_released.json"
    report = json.loads(path.read_text())
    report[f"{phase}_phase"] = {"released": released, "imsa": imsa}
    report["rates"][phase] = rate(label, released, imsa)
    path.write_text(json.dumps(report, indent=2) + "\n")
    lines = ["", heading, "", *table({"released": released, "imsa": imsa})]
    markdown = RESULTS / f"{method}_released.md"
    markdown.write_text(markdown.read_text() + "\n".join(lines) + "\n")
    print("\n".join(lines))


def rate(label: str, released: dict, imsa: dict) -> dict:
    """One setting of a results file as ``speed_vs_released.py`` reads it: the released
    network's evaluation pass stands for both its validation and its test pass."""
    return {
        "label": label,
        "released": {
            "train_cpu_s_per_epoch": released["train_cpu_s_per_epoch"],
            "valid_cpu_s_per_epoch": released["eval_cpu_s"],
            "test_cpu_s_per_epoch": released["eval_cpu_s"],
        },
        "imsa": {"epoch_cpu_s": imsa["train_cpu_s_per_epoch"] + imsa["eval_cpu_s"]},
    }


def table(sides: dict[str, dict]) -> list[str]:
    """The markdown table of the sides, each beside the ``released`` side's training time."""
    released = sides["released"]["train_cpu_s_per_epoch"]
    lines = [
        "| side | CPU s per training epoch | CPU s per evaluation pass | ratio to released (training) | peak RSS MiB | parameters |",
        "|---|---|---|---|---|---|",
    ]
    for side, row in sides.items():
        lines.append(
            f"| {side} | {row['train_cpu_s_per_epoch']:.3f} | {row['eval_cpu_s']:.3f} | "
            f"{row['train_cpu_s_per_epoch'] / released:.2f} | {row['peak_rss_mib']} | {row['parameters']:,} |"
        )
    return lines
