"""Grids: methods x datasets x protocols x seeds x folds, run into one results store.

A grid file is YAML::

    methods: [late_fusion, momke]          # registry names (imsa methods)
    datasets: [mosi-bclstm]                # registry names (imsa data list)
    protocols:
      - fixed                              # every modality subset, one model scored on all
      - {random: [0.0, 0.3, 0.5, 0.7]}     # GCNet missing rates, one experiment per rate
    seeds: [1, 2, 3]
    folds: [0, 1]                          # optional; default every fold of each dataset
    mask_seed: 0                           # optional; seed of the random-protocol test masks
    config: {epochs: 50}                   # optional; method config for every method
    overrides: {momke: {epochs: 100}}      # optional; per-method config, wins over ``config``
    tuned: {late_fusion: runs/tune-lf}     # optional; the best config of an ``imsa tune`` study
    tune: {trials: 20, methods: [momke]}   # optional; search these methods first (default: every untuned one)
    dataset_options: {synthetic: {num_videos: 40}}   # optional; per-dataset loader options

Every (method, dataset, protocol) is one experiment with its own run directory in the
store, ``OUT/<dataset>/<method>/<protocol>/`` (protocol ``fixed`` or ``rate=0.3``),
laid out as :mod:`imsa.experiments.runner` writes it: ``config.yaml``,
``runs/seedS-foldF.json`` (one per run), ``models/``, ``summary.json``. Running the grid
again skips finished runs and resumes interrupted ones from their checkpoints.

Everything a grid names is checked before any training starts: unknown keys, methods,
datasets, config keys, dataset options, folds, rates, and unreadable run files in the
store. Errors name the place in the file, e.g.
``grid.yaml: methods[1]: Unknown method 'momk'. Valid methods: ...``.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import shutil
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import build_config, packaged_config
from ..data.registry import COMMON_OPTIONS, data_location, dataset_entry, dataset_family, load_dataset
from ..errors import ConfigError, ImsaError, did_you_mean
from ..files import atomic_write_text, locked
from ..methods import method_class
from ..noise import NOISE_RATES
from ..protocols import FRAME_RATES, MR_RATES, PROTOCOLS, Protocol
from ..training import RunContext, notify
from .backends import make_backend
from .runner import Experiment, RunSpec, finish_experiment, plan_experiment
from .store import load_record

logger = logging.getLogger(__name__)

SHARED_PHASES = ".shared-phases"  # store folder of the checkpoints of phases that every protocol's run restores
GRID_KEYS = ("methods", "datasets", "protocols", "seeds", "folds", "mask_seed", "config", "overrides", "dataset_options", "tuned", "tune")
REQUIRED_KEYS = ("methods", "datasets", "protocols", "seeds")


@dataclass(frozen=True)
class Grid:
    """A resolved grid: every name checked against the registries.

    Parameters
    ----------
    methods, datasets : tuple of str
        Registry names.
    protocols : tuple of Protocol
        ``fixed`` and/or one ``random`` protocol per rate.
    seeds : tuple of int
    folds : tuple of int or None
        None: every fold of each dataset.
    config : dict
        Method config for every method.
    overrides : dict of str to dict
        Per-method config; wins over ``config``.
    dataset_options : dict of str to dict
        Per-dataset loader options.
    tuned : dict of str to str
        Per method, the directory of an ``imsa tune`` study on this grid's dataset: the
        method runs with the study's best config (``overrides`` still win), and its runs
        and report rows carry the study's budget.
    tune : dict
        ``{"trials": N, "methods": [...]}``: before any run, each listed method (default:
        every method not in ``tuned``) is searched with ``imsa tune`` on each dataset, N
        trials, into ``OUT/tune/<dataset>/<method>`` (resumed like any study), under the
        grid's first protocol, its folds and its first seed, from the grid's config for
        that method; its runs then use the study's best config, as ``tuned`` ones do.
    studies : dict
        ``(dataset, method)`` -> study directory, filled once the ``tune`` searches ran.
    source : str
        Where the grid came from, for error messages.
    """

    methods: tuple[str, ...]
    datasets: tuple[str, ...]
    protocols: tuple[Protocol, ...]
    seeds: tuple[int, ...]
    folds: tuple[int, ...] | None = None
    config: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)
    dataset_options: dict = field(default_factory=dict)
    tuned: dict = field(default_factory=dict)
    tune: dict = field(default_factory=dict)
    studies: dict = field(default_factory=dict)
    source: str = "grid"

    def experiments(self) -> list[tuple[str, Experiment]]:
        """``(relative directory, Experiment)`` for every (dataset, method, protocol)."""
        out = []
        for dataset in self.datasets:
            for method in self.methods:
                for protocol in self._protocols_of(method, dataset):
                    config, search = {**self.config, **self.overrides.get(method, {})}, None
                    study = self.studies.get((dataset, method)) or self.tuned.get(method)
                    if method in self.tune_methods and not study:
                        raise ConfigError(f"{self.source}: {method} on {dataset} has not been searched yet (the grid's tune step runs first).")
                    if study:
                        best, search = read_study(study)
                        config = {**best, **self.overrides.get(method, {})}
                    experiment = Experiment(
                        method=method,
                        dataset=dataset,
                        protocol=protocol,
                        seeds=self.seeds,
                        folds=self.folds,
                        config=config,
                        dataset_options=dict(self.dataset_options.get(dataset, {})),
                        search=search,
                    )
                    out.append((f"{dataset}/{method}/{protocol.name}", experiment))
        return out

    def _protocols_of(self, method: str, dataset: str) -> list[Protocol]:
        """The grid's protocols for ``method``, with the rates of each noise merged into one
        experiment (one model, trained without the noise, scored at every rate), and its frame
        rates merged too where it trains under frame noise of its own."""
        seed = self.protocols[0].mask_seed
        noises: dict[str, list[float]] = {}  # kind -> rates of the noise protocol
        for p in self.protocols:
            if p.kind == "noise":
                noises.setdefault(p.noise.partition(":")[0], []).append(p.rate)
        protocols = [p for p in self.protocols if p.kind != "noise" or len(noises[p.noise.partition(":")[0]]) < 2]
        protocols += [Protocol("noise", rates=tuple(rates), mask_seed=seed, noise=kind) for kind, rates in noises.items() if len(rates) > 1]
        rates = [p.rate for p in protocols if p.kind == "frames"]
        experiment = Experiment(
            method, dataset, config={**self.config, **self.overrides.get(method, {})}, dataset_options=dict(self.dataset_options.get(dataset, {}))
        )
        if len(rates) < 2 or not experiment.own_frame_noise():
            return protocols
        others = [p for p in protocols if p.kind != "frames"]
        return others + [Protocol("frames", rates=tuple(rates), mask_seed=seed)]

    @property
    def tune_methods(self) -> tuple[str, ...]:
        """The methods the ``tune`` step searches."""
        if not self.tune:
            return ()
        return tuple(m for m in (self.tune.get("methods") or self.methods) if m in self.methods and m not in self.tuned)

    def to_dict(self) -> dict:
        """The grid as YAML-ready data (the form :func:`grid_from_dict` reads)."""
        plain = [p for p in self.protocols if not p.noise or p.kind == "noise"]
        fixed = [p for p in plain if p.kind == "fixed" and not p.frames]
        rates = {kind: [p.rate for p in plain if p.kind == kind and not p.frames] for kind in ("random", "frames", "mr")}
        composed: dict = {}  # (kind, frame rate) -> rates
        noises: dict = {}  # noise kind -> rates
        for p in plain:
            if p.frames:
                composed.setdefault((p.kind, p.frames), []).append(p.rate)
            if p.kind == "noise":
                noises.setdefault(p.noise.partition(":")[0], []).append(p.rate)
        noisy = []  # compositions with a noise, one entry each
        for p in self.protocols:
            if p.noise and p.kind != "noise":
                base = {p.kind: None if p.kind == "fixed" else [p.rate]}
                noisy.append({**base, **({"frames": p.frames} if p.frames else {}), "noise": p.noise})
        data = {
            "methods": list(self.methods),
            "datasets": list(self.datasets),
            "protocols": (["fixed"] if fixed else [])
            + [{kind: values} for kind, values in rates.items() if values]
            + [{kind: None if kind == "fixed" else values, "frames": frames} for (kind, frames), values in composed.items()]
            + ([{"noise": noises}] if noises else [])
            + noisy,
            "seeds": list(self.seeds),
            "mask_seed": self.protocols[0].mask_seed,
        }
        if self.folds is not None:
            data["folds"] = list(self.folds)
        for key in ("config", "overrides", "dataset_options", "tuned", "tune"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        return data


def read_grid(
    path: str | os.PathLike | None = None,
    *,
    replace: dict | None = None,
    config: dict | None = None,
    dataset_options: dict | None = None,
) -> Grid:
    """Read and check a grid file, with command-line changes.

    Parameters
    ----------
    path : path, optional
        The grid YAML file; without one, ``replace`` must give the whole grid.
    replace : dict, optional
        Grid keys whose values replace the file's (``--methods``, ``--seeds``, ...).
    config : dict, optional
        Method config for every method, on top of the file's ``config`` (``--set``).
    dataset_options : dict, optional
        Loader options for every dataset, on top of the file's (``--set data.KEY=...``).

    Raises
    ------
    ConfigError
        Naming the file and the place in it, e.g. ``grid.yaml: methods[1]: ...``.
    """
    data: dict = {}
    source = "command line"
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: grid file not found.") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e}).") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a grid file is a mapping with keys {', '.join(GRID_KEYS)}; got {type(data).__name__}.")
        source = str(path)
        changed = [f"--{k.replace('_', '-')}" for k in (replace or {})] + (["--set"] if config or dataset_options else [])
        if changed:
            source += f" (with {', '.join(changed)} from the command line)"
    data = {**data, **(replace or {})}
    if "methods" in (replace or {}):  # a selection of methods keeps the file's per-method keys of those it selects
        chosen = data["methods"] if isinstance(data["methods"], list) else [data["methods"]]
        for key in ("overrides", "tuned"):
            if isinstance(data.get(key), dict):
                data[key] = {m: v for m, v in data[key].items() if m in chosen}
    if config:
        if not isinstance(data.get("config") or {}, dict):
            raise ConfigError(f"{source}: config: expected a mapping of method config keys, got {data['config']!r}.")
        data["config"] = {**(data.get("config") or {}), **config}
    if dataset_options:
        given = data.get("dataset_options") or {}
        if not isinstance(given, dict):
            raise ConfigError(f"{source}: dataset_options: expected a mapping from dataset name to loader options, got {given!r}.")
        names = data.get("datasets") or []
        names = [names] if isinstance(names, str) else names
        data["dataset_options"] = {**given, **{d: {**(given.get(d) or {}), **dataset_options} for d in names if isinstance(d, str)}}
    return grid_from_dict(data, source)


def grid_from_dict(data: dict, source: str = "grid") -> Grid:
    """Check grid data (the YAML mapping) against the registries and build a :class:`Grid`."""

    def fail(where: str, message: str):
        raise ConfigError(f"{source}: {where}: {message}")

    for key in data:
        if key not in GRID_KEYS:
            raise ConfigError(f"{source}: unknown key {key!r}.{did_you_mean(key, GRID_KEYS)} Valid keys: {', '.join(GRID_KEYS)}.")
    for key in REQUIRED_KEYS:
        if key not in data:
            raise ConfigError(f"{source}: missing key {key!r}; a grid needs {', '.join(REQUIRED_KEYS)}.")

    def names(key: str, lookup) -> tuple[str, ...]:
        values = data[key]
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not values:
            fail(key, f"expected a non-empty list of names, got {values!r}.")
        for i, name in enumerate(values):
            try:
                lookup(str(name))
            except ImsaError as e:
                fail(f"{key}[{i}]", str(e))
        if len(set(values)) != len(values):
            fail(key, f"a name appears twice in {values!r}.")
        return tuple(str(v) for v in values)

    methods = names("methods", method_class)
    datasets = names("datasets", dataset_entry)
    seeds = _int_list(data["seeds"], "seeds", fail)
    folds = None if data.get("folds") is None else _int_list(data["folds"], "folds", fail)
    mask_seed = data.get("mask_seed", 0)
    if not isinstance(mask_seed, int) or isinstance(mask_seed, bool):
        fail("mask_seed", f"expected an integer, got {mask_seed!r}.")
    protocols = _protocols(data["protocols"], mask_seed, fail)

    config = data.get("config") or {}
    if not isinstance(config, dict):
        fail("config", f"expected a mapping of method config keys, got {config!r}.")
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        fail("overrides", f"expected a mapping from method name to config, got {overrides!r}.")
    for method, values in overrides.items():
        if method not in methods:
            try:
                method_class(method)
            except ImsaError as e:
                fail(f"overrides.{method}", str(e))
            fail(f"overrides.{method}", f"method {method!r} is not in this grid's methods ({', '.join(methods)}).")
        if not isinstance(values, dict):
            fail(f"overrides.{method}", f"expected a mapping of config keys, got {values!r}.")
    # Every (method, dataset) config must resolve: an unknown key or bad value fails here, not mid-grid.
    for method in methods:
        cls = method_class(method)
        for dataset in datasets:
            packaged = packaged_config(method, dataset, family=dataset_family(dataset) or "").values
            try:
                build_config(cls.Config, packaged, config)
            except ConfigError as e:
                fail("config", f"{e} (method {method})")
            try:
                build_config(cls.Config, packaged, config, overrides.get(method))
            except ConfigError as e:
                fail(f"overrides.{method}", str(e))

    tuned = data.get("tuned") or {}
    if not isinstance(tuned, dict):
        fail("tuned", f"expected a mapping from method name to an `imsa tune` directory, got {tuned!r}.")
    for method, folder in tuned.items():
        if method not in methods:
            fail(f"tuned.{method}", f"method {method!r} is not in this grid's methods ({', '.join(methods)}).")
        try:
            _, search = read_study(folder)
        except ConfigError as e:
            fail(f"tuned.{method}", str(e))
        if search["method"] != method or list(datasets) != [search["dataset"]]:
            fail(f"tuned.{method}", f"{folder} searched {search['method']} on {search['dataset']}; this grid runs {method} on {', '.join(datasets)}.")

    tune = data.get("tune") or {}
    trials = tune.get("trials") if isinstance(tune, dict) else None
    if not isinstance(tune, dict) or (tune and (set(tune) - {"trials", "methods"} or not isinstance(trials, int) or isinstance(trials, bool) or trials < 1)):
        fail("tune", f"expected {{trials: N}} (N >= 1), optionally with methods: [names], got {tune!r}.")
    for method in tune.get("methods") or []:
        if method not in methods:
            fail("tune.methods", f"method {method!r} is not in this grid's methods ({', '.join(methods)}).")
        if method in tuned:
            fail("tune.methods", f"method {method!r} is already given a study under tuned.")
    if tune:
        from .tune import load_space

        for method in tune.get("methods") or [m for m in methods if m not in tuned]:
            try:
                load_space(method)
            except ConfigError as e:
                fail("tune", str(e))

    dataset_options = data.get("dataset_options") or {}
    if not isinstance(dataset_options, dict):
        fail("dataset_options", f"expected a mapping from dataset name to loader options, got {dataset_options!r}.")
    for dataset, options in dataset_options.items():
        if dataset not in datasets:
            fail(f"dataset_options.{dataset}", f"dataset {dataset!r} is not in this grid's datasets ({', '.join(datasets)}).")
        if not isinstance(options, dict):
            fail(f"dataset_options.{dataset}", f"expected a mapping of loader options, got {options!r}.")
        valid = {**dataset_entry(dataset).options, **COMMON_OPTIONS}
        for key in options:
            if key not in valid:
                fail(
                    f"dataset_options.{dataset}.{key}",
                    f"unknown option for dataset {dataset}.{did_you_mean(key, valid)} Valid options: {', '.join(sorted(valid)) or 'none'}.",
                )
    return Grid(
        methods=methods,
        datasets=datasets,
        protocols=protocols,
        seeds=seeds,
        folds=folds,
        config=dict(config),
        overrides={k: dict(v) for k, v in overrides.items()},
        dataset_options={k: dict(v) for k, v in dataset_options.items()},
        tuned={k: str(v) for k, v in tuned.items()},
        tune={"trials": tune["trials"], **({"methods": list(tune["methods"])} if tune.get("methods") else {})} if tune else {},
        source=source,
    )


def read_study(folder) -> tuple[dict, dict]:
    """``(best config, search record)`` of an ``imsa tune`` directory (its ``best.yaml`` and
    ``tune.yaml``); the record holds the method, dataset, metric, finished trials and folder."""
    folder = Path(folder)
    best_file, identity_file, trials_file = folder / "best.yaml", folder / "tune.yaml", folder / "trials.csv"
    if not best_file.is_file() or not identity_file.is_file():
        raise ConfigError(f"{folder}: not a finished `imsa tune` directory (no best.yaml and tune.yaml); run imsa tune --out {folder} first.")
    best, identity = yaml.safe_load(best_file.read_text()), yaml.safe_load(identity_file.read_text())
    with open(trials_file, newline="") as f:
        finished = sum(row["state"] in ("COMPLETE", "PRUNED") for row in csv.DictReader(f))
    search = {"method": identity["method"], "dataset": identity["dataset"], "metric": best["metric"], "trials": finished, "study": str(folder)}
    return best["config"], search


def _int_list(values, key, fail) -> tuple[int, ...]:
    if isinstance(values, int) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, list) or not values:
        fail(key, f"expected a non-empty list of integers, got {values!r}.")
    for i, value in enumerate(values):
        if not isinstance(value, int) or isinstance(value, bool):
            fail(f"{key}[{i}]", f"expected an integer, got {value!r}.")
    if len(set(values)) != len(values):
        fail(key, f"a value appears twice in {values!r}.")
    return tuple(values)


def _protocols(entries, mask_seed: int, fail) -> tuple[Protocol, ...]:
    """``["fixed", {"random": [0.0, 0.3]}, {"frames": [0.0, 0.5]}, {"mr": [0.1]}, {"noise": [0.3]}]`` -> Protocols;
    ``"random"`` and ``"mr"`` alone mean rates 0.0..0.7, ``"frames"`` and ``"noise"`` (Gaussian) alone
    0.0..0.9, in steps of 0.1. ``{"noise": {"erase": [0.3]}}`` names the corruption; an entry
    with a ``noise`` key besides its protocol (``{"fixed": None, "noise": "gauss:0.3"}``)
    corrupts that protocol's settings."""
    if isinstance(entries, (str, dict)):
        entries = [entries]
    if not isinstance(entries, list) or not entries:
        fail("protocols", f"expected a non-empty list such as [fixed, {{random: [0.0, 0.3]}}], got {entries!r}.")
    out: list[Protocol] = []
    defaults = {"random": [round(0.1 * k, 1) for k in range(8)], "frames": list(FRAME_RATES), "mr": list(MR_RATES), "noise": list(NOISE_RATES)}
    for i, entry in enumerate(entries):
        where = f"protocols[{i}]"
        if isinstance(entry, dict) and "noise" in entry and len(entry) > 1:  # any protocol composed with a noise
            base = {k: v for k, v in entry.items() if k != "noise"}
            for p in _protocols(["fixed"] if base == {"fixed": None} else [base], mask_seed, lambda key, message: fail(where, message)):
                try:
                    out.append(dataclasses.replace(p, noise=str(entry["noise"])))
                except ConfigError as e:
                    fail(f"{where}.noise", str(e))
            continue
        if isinstance(entry, dict) and set(entry) == {"noise"} and isinstance(entry["noise"], dict):  # {noise: {erase: [rates]}}
            for kind, values in entry["noise"].items():
                for rate in values if isinstance(values, list) else [values]:
                    try:
                        out.append(Protocol("noise", rate=rate, noise=str(kind), mask_seed=mask_seed))
                    except ConfigError as e:
                        fail(f"{where}.noise.{kind}", str(e))
            continue
        if isinstance(entry, dict) and "frames" in entry and len(entry) == 2:  # fixed or random composed with frame drops
            out.extend(_composed(entry, where, mask_seed, defaults["random"], fail))
            continue
        if isinstance(entry, str) and entry in defaults:
            entry = {entry: defaults[entry]}
        if entry == "fixed":
            out.append(Protocol("fixed", mask_seed=mask_seed))
            continue
        if not isinstance(entry, dict) or len(entry) != 1:
            fail(where, f"expected 'fixed', 'random', 'frames', 'mr' or {{random: [rates]}}, got {entry!r}. Valid protocols: {', '.join(PROTOCOLS)}.")
        ((kind, rates),) = entry.items()
        if kind not in defaults:
            fail(where, f"unknown protocol {kind!r} with values; random, frames, mr and noise take a list of rates. Valid protocols: {', '.join(PROTOCOLS)}.")
        bound = {"random": "[0, 0.7]", "frames": "[0, 1]", "mr": "{0.0, 0.1, ..., 0.7}", "noise": "[0, 1)"}[kind]
        if isinstance(rates, (int, float)) and not isinstance(rates, bool):
            rates = [rates]
        if not isinstance(rates, list) or not rates:
            fail(f"{where}.{kind}", f"expected a non-empty list of rates in {bound}, got {rates!r}.")
        for j, rate in enumerate(rates):
            if not isinstance(rate, (int, float)) or isinstance(rate, bool):
                fail(f"{where}.{kind}[{j}]", f"expected a number in {bound}, got {rate!r}.")
            try:
                out.append(Protocol(kind, rate=float(rate), mask_seed=mask_seed))
            except ConfigError as e:
                fail(f"{where}.{kind}[{j}]", str(e))
    names = [p.name for p in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        fail("protocols", f"{', '.join(duplicates)} appear(s) twice.")
    return tuple(out)


def _composed(entry: dict, where: str, mask_seed: int, default_rates: list, fail) -> list[Protocol]:
    """``{fixed: null, frames: [0.3]}`` or ``{random: [0.0, 0.3], frames: 0.2}`` -> one Protocol per
    (rate, frame rate)."""
    ((kind, rates),) = ((k, v) for k, v in entry.items() if k != "frames")
    frame_rates = entry["frames"] if isinstance(entry["frames"], list) else [entry["frames"]]
    if kind not in ("fixed", "random"):
        fail(where, f"frames composes with fixed or random (e.g. {{random: [0.3], frames: 0.2}}), not with {kind!r}.")
    if kind == "fixed" and rates is not None:
        fail(f"{where}.fixed", f"fixed takes no rates; write {{fixed: null, frames: [...]}}, got {rates!r}.")
    rates = [0.0] if kind == "fixed" else (default_rates if rates is None else rates if isinstance(rates, list) else [rates])
    out = []
    for rate in rates:
        for frames in frame_rates:
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (rate, frames)):
                fail(where, f"expected numbers for the rates, got {rate!r} and frames {frames!r}.")
            try:
                out.append(Protocol(kind, rate=float(rate), mask_seed=mask_seed, frames=float(frames)))
            except ConfigError as e:
                fail(where, str(e))
    return out


@dataclass(frozen=True)
class GridPlan:
    """What :func:`plan_grid` found: every run of the grid and the datasets they use."""

    out: Path
    experiments: list[tuple[Path, Experiment, list[RunSpec]]]
    datasets: dict[str, object]

    @property
    def runs(self) -> list[RunSpec]:
        return [spec for _, _, specs in self.experiments for spec in specs]


def plan_grid(grid: Grid, out: str | os.PathLike, *, data_dir=None, locks: ExitStack) -> GridPlan:
    """Load the grid's datasets, claim every experiment directory under ``out`` and list the runs.

    Nothing trains here; every error a grid can cause (missing data, a fold a dataset
    lacks, a store holding another experiment, an unreadable run file, another process
    on the store) is raised now. The store and its experiment directories are locked
    through ``locks`` (see :func:`imsa.files.locked`).
    """
    out = Path(out)
    datasets = {}
    for name in grid.datasets:
        try:
            datasets[name] = load_dataset(name, data_dir, **grid.dataset_options.get(name, {}))
        except ImsaError as e:
            raise type(e)(f"{grid.source}: datasets: {e}") from None
        if grid.folds is not None:
            for i, fold in enumerate(grid.folds):
                if not 0 <= fold < len(datasets[name].folds):
                    raise ConfigError(f"{grid.source}: folds[{i}]: dataset {name} has {len(datasets[name].folds)} fold(s); fold {fold} does not exist.")
    experiments = []
    for relative, experiment in grid.experiments():
        directory = out / relative
        locks.enter_context(locked(directory))  # held until the grid ends: no other process writes there
        specs = plan_experiment(
            experiment, directory, datasets[experiment.dataset], data_location=data_location(experiment.dataset, data_dir)
        )  # refuses unreadable or foreign results now
        experiments.append((directory, experiment, specs))
    _write_grid_file(out, grid)
    return GridPlan(out, experiments, datasets)


def _write_grid_file(out: Path, grid: Grid) -> None:
    path = out / "grid.yaml"
    atomic_write_text(path, yaml.safe_dump(grid.to_dict(), sort_keys=False))


def run_grid(
    grid: Grid,
    out: str | os.PathLike,
    *,
    data_dir=None,
    backend="sequential",
    context: RunContext = RunContext(),
) -> dict[str, dict]:
    """Run every (method, dataset, protocol, seed, fold) of ``grid`` into the store ``out``.

    Parameters
    ----------
    grid : Grid
    out : path
        The results store; created if needed, resumed if it holds this grid's experiments.
    data_dir : path, optional
        Data root (default ``$IMSA_DATA`` or the user cache).
    backend : str or Backend
        ``"sequential"``, ``"local"`` (worker processes) or ``"ray"``, or a backend
        object from :func:`imsa.experiments.backends.make_backend`.
    context : RunContext
        Checkpoint interval, and callbacks that hear ``on_grid_start(total, finished)``,
        ``on_run_start(key, index, total)``, ``on_run_end(key, record)`` (keys are
        ``<dataset>/<method>/<protocol>/seedS-foldF``) and, with the sequential backend,
        the per-epoch hooks of training.

    Returns
    -------
    dict
        Relative experiment directory -> its summary (also written to its ``summary.json``),
        with ``finished_before``: how many of its runs had finished earlier and were skipped.
    """
    with ExitStack() as locks:
        return _run_grid(grid, out, data_dir=data_dir, backend=backend, context=context, locks=locks)


def _run_grid(grid: Grid, out, *, data_dir, backend, context: RunContext, locks: ExitStack) -> dict[str, dict]:
    locks.enter_context(locked(out))
    grid = tune_grid(grid, out, data_dir=data_dir, context=context)
    plan = plan_grid(grid, out, data_dir=data_dir, locks=locks)
    backend = make_backend(backend) if isinstance(backend, str) else backend
    runs = plan.runs
    todo = [spec for spec in runs if not spec.done]
    finished_before = {directory: sum(spec.done for spec in specs) for directory, _, specs in plan.experiments}
    logger.info("Grid in %s: %d runs, %d finished earlier, %d to run on the %s backend.", plan.out, len(runs), len(runs) - len(todo), len(todo), backend.name)
    notify(context.callbacks, "on_grid_start", len(runs), len(runs) - len(todo))
    shared = context.shared or plan.out / SHARED_PHASES  # complete-data phases, trained once for every protocol
    for _ in backend.run(todo, plan.datasets, context=dataclasses.replace(context, shared=shared), name=lambda s: run_name(plan.out, s)):
        pass
    if context.shared is None:  # every run is written: nothing left to restore
        shutil.rmtree(shared, ignore_errors=True)
    summaries = {}
    for directory, _, specs in plan.experiments:
        records = [load_record(spec.path) for spec in specs]
        summaries[str(directory.relative_to(plan.out))] = {**finish_experiment(directory, records), "finished_before": finished_before[directory]}
    return summaries


def tune_grid(grid: Grid, out, *, data_dir=None, context: RunContext = RunContext()) -> Grid:
    """Run the grid's ``tune`` searches (each resumes its study) and return the grid with their directories."""
    if not grid.tune:
        return grid
    from .tune import run_tune

    studies = {}
    protocol = grid.protocols[0]
    for dataset in grid.datasets:
        for method in grid.tune_methods:
            folder = Path(out) / "tune" / dataset / method
            logger.info("Searching %s on %s: %d trials under the %s protocol, into %s.", method, dataset, grid.tune["trials"], protocol.name, folder)
            run_tune(
                method,
                dataset,
                folder,
                trials=grid.tune["trials"],
                protocol=protocol,
                folds=grid.folds,
                seeds=grid.seeds[:1],
                config={**grid.config, **grid.overrides.get(method, {})},
                dataset_options=grid.dataset_options.get(dataset, {}),
                data_dir=data_dir,
                context=dataclasses.replace(context, callbacks=()),
            )
            studies[(dataset, method)] = str(folder)
    return dataclasses.replace(grid, studies=studies)


def run_name(out: Path, spec: RunSpec) -> str:
    """``<dataset>/<method>/<protocol>/seedS-foldF``: a run's name inside the store."""
    return f"{Path(spec.out).relative_to(out)}/{spec.key}"
