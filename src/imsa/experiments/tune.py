"""Honest hyper-parameter search: ``imsa tune``.

A study searches a method's config with Optuna (TPE sampler seeded by ``sampler_seed``,
median pruning fed by every epoch's validation score). A trial trains on the training
split of each requested fold (and seed) and scores the validation split with the
metric the method selects epochs on, averaged over the protocol's settings and over
the folds and seeds: the test split is never built, loaded or scored. The study lives
in ``DIR/study.db`` (SQLite), so killing the command and running it again continues it
(a trial the kill interrupted is marked failed and run again); trials run in one
process or in ``workers`` local processes or Ray tasks sharing that file (each stops once
the study has ``trials`` finished trials, so a worker mid-trial may add one more). After
the search, ``DIR/best.yaml`` holds the best config, ``DIR/trials.csv`` every trial,
``DIR/history.png`` the validation score per trial with the best so far, and
``DIR/importances.json`` Optuna's parameter importances; ``final`` retrains the best
config over the requested seeds and folds and scores test once, into the ordinary run
directory ``DIR/final`` that ``imsa show`` and ``imsa report`` read.

Search spaces: ``src/imsa/configs/spaces/<method>.yaml`` (packaged) or a YAML file of the
same form, one entry per config key::

    lr: {low: 1.0e-4, high: 1.0e-2, log: true}
    dropout: {low: 0.0, high: 0.5}
    dim: {choices: [32, 64, 128]}
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import multiprocessing
import os
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from ..config import build_config
from ..data.dataset import Subset
from ..data.registry import load_dataset
from ..errors import ConfigError, did_you_mean
from ..evaluation import selection_score
from ..files import atomic_write_text, locked
from ..identity import META_KEY, check_schema, differences, stamp
from ..methods import method_class
from ..metrics import METRICS
from ..protocols import Protocol
from ..training import RunContext, seed_everything
from .runner import Experiment, run_experiment

logger = logging.getLogger(__name__)

STUDY = "imsa"
DEFAULT_METRIC = {"regression": "mae", "classification": "wf1", "multilabel": "emotion_binary_f1"}


def load_space(method: str, path: str | os.PathLike | None = None) -> dict:
    """The search space of ``method``: the YAML file ``path``, else the packaged one, else the
    method class's ``search_space``; checked against its config."""
    if path is None:
        source = resources.files("imsa") / "configs" / "spaces" / f"{method}.yaml"
        where = f"configs/spaces/{method}.yaml"
        if not source.is_file():
            own = method_class(method).search_space
            if not own:
                raise ConfigError(f"No search space for {method}: give one with --space FILE, or set search_space on the method class.")
            source, where = None, f"{method}.search_space"
    else:
        source, where = Path(path), str(path)
        if not source.is_file():
            raise ConfigError(f"{where}: no such search-space file.")
    try:
        space = dict(method_class(method).search_space) if source is None else yaml.safe_load(source.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML ({e.__class__.__name__}).") from None
    fields = {f.name: f for f in dataclasses.fields(method_class(method).Config)}
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{where}: expected a mapping of config keys to ranges, e.g. 'lr: {{low: 1.0e-4, high: 1.0e-2, log: true}}'.")
    for key, entry in space.items():
        if key not in fields:
            raise ConfigError(f"{where}: {key!r} is not a config key of {method}.{did_you_mean(key, fields)} Valid keys: {', '.join(fields)}.")
        ok = isinstance(entry, dict) and (
            (set(entry) == {"choices"} and isinstance(entry["choices"], list) and entry["choices"])
            or (
                {"low", "high"} <= set(entry) <= {"low", "high", "log"}
                and all(isinstance(entry[k], (int, float)) for k in ("low", "high"))
                and entry["low"] < entry["high"]
            )
        )
        if not ok:
            raise ConfigError(f"{where}: {key}: expected {{low: A, high: B[, log: true]}} with A < B, or {{choices: [...]}}; got {entry!r}.")
    return space


def suggest(trial, space: dict, defaults) -> dict:
    """One config override per space entry, drawn by ``trial`` (integers where the default is one)."""
    values = {}
    for key, entry in space.items():
        if "choices" in entry:
            values[key] = trial.suggest_categorical(key, entry["choices"])
        elif isinstance(getattr(defaults, key), int) and isinstance(entry["low"], int) and isinstance(entry["high"], int):
            values[key] = trial.suggest_int(key, entry["low"], entry["high"], log=bool(entry.get("log")))
        else:
            values[key] = trial.suggest_float(key, float(entry["low"]), float(entry["high"]), log=bool(entry.get("log")))
    return values


class _Pruning:
    """Reports every epoch's validation score to the trial (the study's direction says which
    way is better); stops the trial when the pruner says so."""

    def __init__(self, trial):
        self.trial, self.step = trial, 0

    def on_epoch_end(self, phase, epoch, logs):
        import optuna

        self.trial.report(logs["score"], self.step)
        self.step += 1
        if self.trial.should_prune():
            raise optuna.TrialPruned()


def validation_score(method: str, config: dict, dataset, folds, seeds, protocol: Protocol, context: RunContext, trial=None) -> float:
    """The trial's objective: the selection metric on validation, averaged over folds and seeds.

    Only the training and validation videos of each fold become subsets; the test split is
    never built.
    """
    cls = method_class(method)
    callbacks = context.callbacks
    if trial is not None:  # one report stream per trial: the folds' and seeds' epochs follow each other
        callbacks = (*callbacks, _Pruning(trial))
    values = []
    for fold in folds:
        split = dataset.folds[fold]
        train, valid = Subset(dataset, split.train), Subset(dataset, split.valid)
        for seed in seeds:
            seed_everything(seed)
            instance = cls(config)
            instance.fit(train, valid, protocol=protocol, seed=seed, context=dataclasses.replace(context, callbacks=callbacks))
            values.append(selection_score(instance.evaluate(valid, protocol.settings(valid)), instance.select_metric))
    return float(np.mean(values))


def _identity(method, dataset_name, dataset_options, protocol, folds, seeds, space, base) -> dict:
    return {
        "method": method,
        "dataset": dataset_name,
        "dataset_options": dataset_options,
        "protocol": protocol.to_dict(),
        "folds": list(folds),
        "seeds": list(seeds),
        "space": space,
        "config": base,
    }


def _worker(arguments) -> None:
    """A local worker process: trials until the study holds ``trials`` finished ones."""
    out, identity, trials, threads, data_dir, context, sampler_seed, verbose = arguments
    import optuna
    import torch

    if not verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(threads)
    dataset = load_dataset(identity["dataset"], data_dir, **identity["dataset_options"])
    _optimize(Path(out), identity, trials, dataset, context, sampler_seed)


def _ray_workers(jobs: list, threads: int, address: str | None, gpus_per_worker: float) -> None:
    """Run the ``jobs`` of :func:`_worker` as Ray tasks (on a local instance unless ``address`` is given)."""
    try:
        import ray
    except ImportError:
        raise ConfigError('The ray backend needs Ray: pip install "imsa[ray]" (or pip install ray).') from None
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=len(jobs) * threads, include_dashboard=False, logging_level=logging.WARNING)
    try:
        task = ray.remote(num_cpus=threads, num_gpus=gpus_per_worker, max_retries=0)(_worker)
        ray.get([task.remote(job) for job in jobs])
    finally:
        if started_here:
            ray.shutdown()


def _optimize(out: Path, identity: dict, trials: int, dataset, context: RunContext, sampler_seed: int) -> None:
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    # The sampler and the pruner are not stored with the study: every process makes its own,
    # seeded by the trials so far, so that a resumed search does not redraw the first ones.
    storage = f"sqlite:///{out / 'study.db'}"
    start = len(optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False))
    study = optuna.load_study(
        study_name=STUDY,
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=sampler_seed + 1000 * start),
        pruner=optuna.pruners.MedianPruner(n_warmup_steps=5),
    )
    protocol = Protocol(**identity["protocol"])
    defaults = method_class(identity["method"]).Config()

    def objective(trial):
        config = {**identity["config"], **suggest(trial, identity["space"], defaults)}
        build_config(method_class(identity["method"]).Config, config)  # refuse a bad draw before training
        return validation_score(identity["method"], config, dataset, identity["folds"], identity["seeds"], protocol, context, trial)

    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    if done < trials:
        study.optimize(objective, callbacks=[MaxTrialsCallback(trials, states=(TrialState.COMPLETE, TrialState.PRUNED))], catch=(FloatingPointError,))


def run_tune(
    method: str,
    dataset_name: str,
    out: str | os.PathLike,
    *,
    trials: int,
    space_file=None,
    protocol: Protocol = Protocol(),
    folds=None,
    seeds=(1,),
    config: dict | None = None,
    dataset_options: dict | None = None,
    data_dir=None,
    workers: int = 1,
    sampler_seed: int = 0,
    final_seeds=None,
    final_folds=None,
    backend: str = "local",
    address: str | None = None,
    gpus_per_worker: float = 0.25,
    context: RunContext = RunContext(),
) -> dict:
    """Search ``method``'s config on ``dataset_name`` by validation score; see the module docstring.

    ``workers`` processes share the study: local ones (``backend="local"``), or Ray tasks
    (``backend="ray"``: a local Ray instance, or the cluster at ``address``, whose
    machines must see ``out``; on a GPU each task asks for ``gpus_per_worker`` of one, so
    several trials share a GPU).

    Returns
    -------
    dict
        ``best_value``, ``best_config``, ``trials`` (finished), ``metric`` and, with
        ``final_seeds``, ``final`` (the summary of the retrained run directory).
    """
    try:
        import optuna
    except ImportError:
        raise ConfigError('imsa tune needs Optuna: pip install "imsa[tune]".') from None
    from optuna.trial import TrialState

    if not logger.isEnabledFor(logging.INFO):  # Optuna's per-trial lines only with -v
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    if trials < 1:
        raise ConfigError("--trials must be at least 1.")
    if workers < 1:
        raise ConfigError("--workers must be at least 1.")
    out = Path(out)
    space = load_space(method, space_file)
    cls = method_class(method)
    dataset_options = dict(dataset_options or {})
    dataset = load_dataset(dataset_name, data_dir, **dataset_options)
    base = {**Experiment(method, dataset=dataset_name, dataset_options=dataset_options).packaged_config(dataset.family).values, **(config or {})}
    defaults = build_config(cls.Config, base)
    folds = list(folds) if folds is not None else list(range(len(dataset.folds)))
    identity = _identity(method, dataset_name, dataset_options, protocol, folds, list(seeds), space, base)
    metric = defaults.select_metric or DEFAULT_METRIC[dataset.task]
    with locked(out):
        identity_file = out / "tune.yaml"
        if identity_file.exists():
            previous = yaml.safe_load(identity_file.read_text())
            check_schema(previous, identity_file)
            changed = differences(previous, identity, method_class(method).Config)
            if changed:
                raise ConfigError(
                    f"{out} holds another search ({identity_file}; differs in: {'; '.join(changed)}); choose another --out to search something else."
                )
        else:
            atomic_write_text(identity_file, yaml.safe_dump(json.loads(json.dumps({**identity, META_KEY: stamp()})), sort_keys=False))
        storage = f"sqlite:///{out / 'study.db'}"
        study = optuna.create_study(
            study_name=STUDY, storage=storage, load_if_exists=True, direction="maximize" if METRICS[metric].higher_is_better else "minimize"
        )
        for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # left by a killed run: redo them
            study._storage.set_trial_state_values(stale._trial_id, TrialState.FAIL)
            study.enqueue_trial(stale.params)
        if backend not in ("local", "ray"):
            raise ConfigError(f"Unknown tune backend {backend!r}. Valid backends: local, ray.")
        if not 0 < gpus_per_worker <= 1:
            raise ConfigError(f"--gpus-per-trial must be in (0, 1]. Got {gpus_per_worker!r}.")
        if workers == 1 and backend == "local":
            _optimize(out, identity, trials, dataset, context, sampler_seed)
        else:  # each worker stops once the study has `trials` finished ones (a worker mid-trial then may add one)
            threads = max(1, (os.cpu_count() or 1) // workers)
            quiet = dataclasses.replace(context, callbacks=())
            verbose = logger.isEnabledFor(logging.INFO)
            jobs = [(str(out.resolve()), identity, trials, threads, data_dir, quiet, sampler_seed + k, verbose) for k in range(workers)]  # one stream each
            if backend == "ray":
                _ray_workers(jobs, threads, address, gpus_per_worker=gpus_per_worker if context.torch_device.type == "cuda" else 0)
            else:
                with multiprocessing.get_context("spawn").Pool(workers) as pool:
                    pool.map(_worker, jobs)
        study = optuna.load_study(study_name=STUDY, storage=storage)
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not finished:
            raise ConfigError(f"{out}: no trial finished (every one was pruned or failed); widen the search space or raise --trials.")
        best = {**base, **study.best_params}
        atomic_write_text(
            out / "best.yaml", yaml.safe_dump({"method": method, "metric": metric, "validation": float(study.best_value), "config": best}, sort_keys=False)
        )
        _write_trials(out, study, metric)
        result = {
            "best_value": float(study.best_value),
            "best_config": best,
            "trials": len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))),
            "metric": metric,
        }
    if final_seeds:
        experiment = Experiment(
            method,
            dataset=dataset_name,
            protocol=protocol,
            seeds=tuple(final_seeds),
            folds=tuple(final_folds) if final_folds is not None else None,
            config=best,
            dataset_options=dataset_options,
        )
        result["final"] = run_experiment(experiment, out / "final", dataset=dataset, context=context)
    return result


def _write_trials(out: Path, study, metric: str) -> None:
    """``trials.csv``, ``history.png`` (score per trial, best so far) and ``importances.json``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    keys = sorted({k for t in trials for k in t.params})
    with open(out / "trials.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "state", metric, *keys])
        for t in trials:
            writer.writerow([t.number, t.state.name, "" if t.value is None else t.value, *[t.params.get(k, "") for k in keys]])
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    values = [t.value for t in done]
    best = np.maximum.accumulate(values) if maximize else np.minimum.accumulate(values)
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot([t.number for t in done], values, "o", label="trial")
    axis.plot([t.number for t in done], best, "-", label="best so far")
    axis.set_xlabel("trial")
    axis.set_ylabel(f"validation {metric}")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "history.png", dpi=120)
    plt.close(figure)
    importances = {}
    if len(done) >= 2 and keys:
        try:
            importances = {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
        except (RuntimeError, ValueError) as e:  # e.g. every finished trial drew the same values
            logger.warning("parameter importances not computed: %s", e)
    atomic_write_text(out / "importances.json", json.dumps({k: v for k, v in importances.items() if math.isfinite(v)}, indent=2) + "\n")
