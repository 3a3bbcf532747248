"""One experiment: a method on a dataset under a protocol, over seeds and folds.

A run directory (laid out by :mod:`imsa.experiments.store`) holds everything needed to
trace a number back to its run: the resolved experiment, one record per training run,
the fitted models and the summary over runs.

Re-running the same command on the same directory skips finished runs and resumes an
interrupted one from its checkpoints; a directory that holds a different experiment is
refused rather than overwritten.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from .. import __version__
from ..config import PackagedConfig, build_config, packaged_config, packaged_names
from ..data.checks import check_fold
from ..data.dataset import Dataset
from ..data.registry import data_location, dataset_family, load_dataset
from ..devices import describe_device, make_deterministic
from ..errors import ConfigError, DataError
from ..evaluation import metrics_of
from ..files import LOCK_FILE, atomic_write_text, locked
from ..frames import FrameSetting, sequence_modalities
from ..identity import META_KEY, SCHEMA, check_schema, differences, fingerprint, stamp
from ..logs import open_loggers
from ..methods import method_class
from ..methods.spec import check_protocol
from ..model_files import save_model
from ..protocols import Protocol
from ..training import RunContext, notify, seed_everything
from .store import SPLITS, RunLayout, RunRecord, load_record, run_key, summarize, write_predictions, write_record, write_summary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Experiment:
    """What to run. ``folds=None`` means every fold of the dataset.

    ``packaged`` names a packaged config (``"momke/mosei"``); None picks the one for the
    dataset or its family (see :func:`imsa.config.packaged_config`).
    """

    method: str
    dataset: str = "synthetic"
    protocol: Protocol = Protocol()
    seeds: tuple[int, ...] = (1,)
    folds: tuple[int, ...] | None = None
    config: dict = field(default_factory=dict)
    dataset_options: dict = field(default_factory=dict)
    packaged: str | None = None
    search: dict | None = None  # a config from `imsa tune`: {"trials", "metric", "study"}

    def __post_init__(self):
        for name in ("seeds", "folds"):
            values = getattr(self, name)
            if values is None:
                continue
            if name == "seeds" and not values:
                raise ConfigError("At least one seed is needed.")
            for value in values:
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                    raise ConfigError(f"{name} must be integers of at least 0. Got {value!r}.")
            repeated = sorted({v for v in values if list(values).count(v) > 1})
            if repeated:
                raise ConfigError(f"{name} {', '.join(map(str, repeated))} given more than once: each would count twice in mean ± std. Give each once.")

    def packaged_config(self, family: str | None = None) -> PackagedConfig:
        """The packaged config file that applies; ``family`` defaults to the registered dataset's."""
        if family is None:
            family = self.dataset_options.get("family") or dataset_family(self.dataset) or ""
        return packaged_config(self.method, self.dataset, family=family, name=self.packaged)

    def own_frame_noise(self, family: str | None = None) -> bool:
        """Whether the method, with this config, trains under frame noise of its own (then one model serves every frame rate)."""
        return method_class(self.method).own_frame_noise(self.resolved_config(family))

    def resolved_config(self, family: str | None = None):
        """The method's config: defaults, then the packaged file (:meth:`packaged_config`), then ``config``."""
        cls = method_class(self.method)
        return build_config(cls.Config, self.packaged_config(family).values, self.config)


def versions() -> dict:
    return {"imsa": __version__, "schema": SCHEMA, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}


@dataclass(frozen=True)
class RunSpec:
    """One training run: ``experiment`` with one ``seed`` on one ``fold``, recorded under ``out``.

    Its result is ``out/runs/<key>.json`` (written last, atomically, so a file there
    means a finished run), its model ``out/models/<key>.safetensors`` (+ ``.json``), its
    predictions ``out/predictions/<key>.npz``, and while it trains its
    resume checkpoints live in ``out/checkpoints/<key>/``.
    """

    experiment: Experiment
    seed: int
    fold: int
    out: Path
    identity: str = ""  # the experiment's fingerprint, carried by the run file
    data_location: dict = field(default_factory=dict)  # where the data was read from, recorded in the model file for predict

    @property
    def key(self) -> str:
        return run_key(self.seed, self.fold)

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.out)

    @property
    def path(self) -> Path:
        return self.layout.record(self.key)

    @property
    def done(self) -> bool:
        return self.path.exists()

    @property
    def checkpoints(self) -> Path:
        """The folder of this run's resume checkpoints (removed once the run is saved)."""
        return self.layout.checkpoints(self.key)


def plan_experiment(experiment: Experiment, out: str | os.PathLike, dataset: Dataset, *, data_location: dict | None = None) -> list[RunSpec]:
    """Check ``experiment`` against ``dataset``, claim the run directory ``out`` and list its runs.

    Fails before any training on a bad config key or fold, and refuses a directory that
    holds a different experiment (see :func:`run_experiment`). ``data_location`` (see
    :func:`imsa.data.registry.data_location`) goes into every model file the runs write.

    Returns
    -------
    list of RunSpec
        One per (seed, fold), seeds outermost; finished ones have ``done`` set.
    """
    if dataset.extraction and not dataset.extraction.get("labelled", True):
        raise DataError(
            f"{dataset.source} has no labels (a prediction-only extraction); fill the label column of its utterances.csv, or extract with --labels."
        )
    packaged = experiment.packaged_config(dataset.family)
    config = experiment.resolved_config(dataset.family)  # fails on a bad key before any work
    folds = experiment.folds if experiment.folds is not None else tuple(range(len(dataset.folds)))
    for fold in folds:
        if not 0 <= fold < len(dataset.folds):
            raise ConfigError(f"Dataset {dataset.name} has {len(dataset.folds)} fold(s); fold {fold} does not exist.")
        check_fold(dataset, fold)
    cls = method_class(experiment.method)
    check_protocol(experiment.method, cls.protocols, experiment.protocol)
    if experiment.protocol.kind == "frames" and experiment.protocol.rates and not cls.own_frame_noise(config):
        raise ConfigError(
            f"{experiment.method} trains at the test rate here (train_missing={config.train_missing!r}), so one model cannot serve the frame rates "
            f"{list(experiment.protocol.rates)}: give it a frame noise of its own (e.g. --set train_missing=frames:lnln) or run one experiment per rate."
        )
    if experiment.protocol.drops_frames:
        sequence_modalities(dataset)  # refuses utterance vectors now, not after other runs trained
    out = Path(out)
    resolved = {
        "method": experiment.method,
        "dataset": experiment.dataset,
        "dataset_options": dict(experiment.dataset_options),
        "protocol": experiment.protocol.to_dict(),
        "seeds": list(experiment.seeds),
        "folds": list(folds),
        "config": dataclasses.asdict(config),
        "family": dataset.family,
        "packaged_config": packaged.name,
        "data_checksum": dataset.checksum,
        META_KEY: stamp(),
    }
    if experiment.search:
        resolved["search"] = experiment.search
    if experiment.protocol.drops_frames:  # what a dropped word became
        resolved["dropped_text"] = (
            "no text" if "l" not in dataset.modalities else "[UNK] tokens" if cls.reads_text_tokens(config) else "zeroed precomputed features"
        )
    if packaged.name is None and packaged_names(experiment.method):
        given = f" and the given {', '.join(sorted(experiment.config))}" if experiment.config else ""
        logger.warning("%s; %s runs with its defaults%s (name one with --config %s/<name>).", packaged.reason, experiment.method, given, experiment.method)
    _claim_directory(out, resolved)
    identity = experiment_fingerprint(resolved)
    location = dict(data_location or {})
    if dataset.extraction:  # features made from media: predict --media extracts new media the same way
        if not dataset.extraction.get("labelled", True):
            raise DataError(
                f"{dataset.source} has no labels (a prediction-only extraction); add a label column to its utterances.csv, or extract with --labels."
            )
        location["extraction"] = dataset.extraction
    specs = [RunSpec(experiment, seed, fold, out, identity, location) for seed in experiment.seeds for fold in folds]
    for spec in specs:
        if spec.done:
            check_record(spec, load_record(spec.path))  # a foreign or unreadable result fails now, not after training
    return specs


def experiment_fingerprint(resolved: dict) -> str:
    """The identity every run file of a run directory carries: its resolved experiment, less seeds and folds
    (see :mod:`imsa.identity`)."""
    return fingerprint({k: v for k, v in resolved.items() if k not in ("seeds", "folds")}, method_class(resolved["method"]).Config)


def check_record(spec: "RunSpec", record: RunRecord) -> RunRecord:
    """Refuse a run file that belongs to another experiment or another run, naming it."""
    if (record.seed, record.fold) != (spec.seed, spec.fold) or (record.experiment and record.experiment != spec.identity):
        raise ConfigError(
            f"{spec.path}: this run file belongs to another experiment or run (seed {record.seed}, fold {record.fold}, "
            f"experiment {record.experiment[:12] or 'unknown'}; this directory is {spec.identity[:12]}). Move it away, or delete it to train that run again."
        )
    return record


def run_one(spec: RunSpec, dataset: Dataset, *, context: RunContext = RunContext()) -> RunRecord:
    """Train and score one run unless it finished earlier; return its record.

    An interrupted run resumes from its checkpoints. The record is written last and
    atomically, so an interruption never leaves a result that looks finished.
    """
    if spec.done:
        logger.info("%s: finished earlier, skipped (%s).", spec.key, spec.path)
        return check_record(spec, load_record(spec.path))
    output = train_run(spec, dataset, context=context)
    save_run(spec, output)
    return output.record


@dataclass
class RunOutput:
    """What a finished run hands to :func:`save_run`: its record, model state and predictions."""

    record: RunRecord
    state: dict
    predictions: dict  # split -> setting -> per-utterance predictions (aligned with ids)
    utterance_ids: dict  # split -> utterance ids
    labels: dict  # split -> labels


def train_run(spec: RunSpec, dataset: Dataset, *, context: RunContext = RunContext()) -> RunOutput:
    """Train and score one run; write nothing but its resume checkpoints.

    ``context`` gives the callbacks and checkpoint interval; its work directory is the
    run's own checkpoint folder (:attr:`RunSpec.checkpoints`). The metrics are computed
    from the per-utterance predictions that the output keeps.
    """
    experiment = spec.experiment
    config = experiment.resolved_config(dataset.family)
    cls = method_class(experiment.method)
    available = torch.get_num_threads()
    torch.set_num_threads(context.threads or min(cls.default_threads or available, available))
    try:
        return _train_run(spec, dataset, context, config, cls)
    finally:
        torch.set_num_threads(available)


def _train_run(spec: RunSpec, dataset: Dataset, context: RunContext, config, cls) -> RunOutput:
    experiment = spec.experiment
    started = time.perf_counter()
    seed_everything(spec.seed)
    if context.deterministic:
        make_deterministic()
    splits = dataset.split(spec.fold)
    method = cls(config)
    loggers = (
        open_loggers(
            context.log,
            spec.out,
            spec.key,
            experiment=f"{experiment.method} {experiment.dataset} {experiment.protocol.name}",
            params=dataclasses.asdict(config),
        )
        if context.log
        else []
    )
    try:
        method.fit(
            splits["train"],
            splits["valid"],
            protocol=experiment.protocol,
            seed=spec.seed,
            context=dataclasses.replace(context, workdir=spec.checkpoints, callbacks=(*context.callbacks, *loggers)),
        )
        settings = {split: experiment.protocol.settings(splits[split]) for split in SPLITS}
        predictions = {split: method.predict_settings(splits[split], settings[split]) for split in SPLITS}
        frames_dropped = (
            {
                split: {
                    name: round(s.dropped_fraction(dataset, splits[split].indices), 6) for name, s in settings[split].items() if isinstance(s, FrameSetting)
                }
                for split in SPLITS
            }
            if experiment.protocol.drops_frames
            else {}
        )
        metrics = {split: metrics_of(predictions[split], splits[split]) for split in SPLITS}
        for logger in loggers:
            logger.final(metrics)
    finally:
        for logger in loggers:
            logger.close()
    phases = [p.to_dict() for p in getattr(method, "phases_", [])]
    record = RunRecord(
        method=experiment.method,
        dataset=experiment.dataset,
        protocol=experiment.protocol,
        seed=spec.seed,
        fold=spec.fold,
        metrics=metrics,
        task=dataset.task,
        config=dataclasses.asdict(config),
        dataset_options=dict(experiment.dataset_options),
        data_checksum=dataset.checksum,
        selected_epochs={p["phase"]: p["best_epoch"] for p in phases},
        select_metric=method.select_metric,
        phases=phases,
        sizes={split: len(splits[split]) for split in ("train", "valid", "test")},
        wall_time_s=time.perf_counter() - started,
        torch_threads=torch.get_num_threads(),
        execution={**describe_device(context.torch_device), "precision": context.precision, "deterministic": context.deterministic},
        versions=versions(),
        experiment=spec.identity,
        search=dict(experiment.search or {}),
        frames_dropped=frames_dropped,
    )
    return RunOutput(
        record,
        method.state_dict(),
        predictions,
        {split: [dataset.utterance_ids[i] for i in splits[split].indices] for split in SPLITS},
        {split: splits[split].labels for split in SPLITS},
    )


def save_run(spec: RunSpec, output: RunOutput) -> None:
    """Write a run's model and predictions, then its record (all atomically), then drop its checkpoints."""
    record = output.record
    save_model(
        output.state,
        spec.layout.model(spec.key),
        dataset=record.dataset,
        dataset_options=record.dataset_options,
        data_checksum=record.data_checksum,
        seed=record.seed,
        fold=record.fold,
        protocol=record.protocol.to_dict(),
        **spec.data_location,
    )
    write_predictions(spec.layout.predictions(spec.key), output.predictions, output.utterance_ids, output.labels)
    write_record(spec.path, record)
    shutil.rmtree(spec.checkpoints, ignore_errors=True)


def finish_experiment(out: str | os.PathLike, records: list[RunRecord]) -> dict:
    """Write ``summary.json`` and ``summary.csv`` of a run directory from its records and return the summary."""
    layout = RunLayout(out)
    summary = summarize(records)
    summary["experiment"] = yaml.safe_load(layout.config.read_text())
    write_summary(layout, summary)
    return summary


def run_experiment(
    experiment: Experiment,
    out: str | os.PathLike,
    *,
    data_dir=None,
    dataset: Dataset | None = None,
    context: RunContext = RunContext(),
) -> dict:
    """Train and score every (seed, fold) of ``experiment`` into ``out`` and return the summary.

    Parameters
    ----------
    experiment : Experiment
    out : path
        Run directory; created if needed, resumed if it holds the same experiment.
    data_dir : path, optional
        Data root (default ``$IMSA_DATA`` or the user cache).
    dataset : Dataset, optional
        An already loaded dataset (skips loading).
    context : RunContext
        Callbacks and checkpoint interval (each run checkpoints into its own folder);
        callbacks with ``on_run_start(key, index, total)`` or ``on_run_end(key,
        record)`` also hear about whole runs.

    Returns
    -------
    dict
        The summary (see :func:`summarize`), also written to ``out/summary.json``, and
        ``finished_before``: how many of its runs had finished earlier and were skipped.
    """
    if experiment.packaged or dataset_family(experiment.dataset) is not None:
        experiment.resolved_config()  # the packaged file is known: fail on a bad key before loading data
    location = {} if dataset is not None else data_location(experiment.dataset, data_dir)
    dataset = dataset or load_dataset(experiment.dataset, data_dir, **experiment.dataset_options)
    with locked(out):
        specs = plan_experiment(experiment, out, dataset, data_location=location)
        finished_before = sum(spec.done for spec in specs)
        records = []
        for index, spec in enumerate(specs):
            notify(context.callbacks, "on_run_start", spec.key, index, len(specs))
            record = run_one(spec, dataset, context=context)
            notify(context.callbacks, "on_run_end", spec.key, record)
            records.append(record)
        return {**finish_experiment(out, records), "finished_before": finished_before}


def _claim_directory(out: Path, resolved: dict) -> None:
    """Create ``out`` or check that it holds this very experiment; never overwrite another."""
    layout = RunLayout(out)
    config_path = layout.config
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; --out needs a directory. Choose another --out.")
    if config_path.exists():
        try:
            previous = yaml.safe_load(config_path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(
                f"{config_path}: damaged ({type(e).__name__}); this directory cannot be resumed safely. Choose another --out, or delete the directory to start over."
            ) from None
        check_schema(previous, config_path)
        changed = differences(previous, resolved, method_class(resolved["method"]).Config)
        if changed:
            raise ConfigError(
                f"{out} already holds a different experiment (differs in: {'; '.join(changed)}). Choose another --out, or delete that directory to start over."
            )
        logger.info("Resuming the experiment in %s.", out)
    elif out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise ConfigError(f"{out} exists and is not an imsa run directory; choose another --out.")
    layout.make()
    if not config_path.exists():
        atomic_write_text(config_path, yaml.safe_dump(resolved, sort_keys=False))
