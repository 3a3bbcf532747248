"""Execution backends: where the runs of a grid train.

* ``sequential``: one run after another in this process; training callbacks (per-epoch
  progress) reach the caller.
* ``local``: worker processes on this machine. Each worker sets
  ``torch.set_num_threads(cores // workers)`` so that, say, 2 workers on 2 cores do not
  oversubscribe them; a worker whose parent dies exits at once. With ``gpus``, worker k
  trains on GPU ``gpus[k % len(gpus)]``: several small runs share each GPU. The
  datasets' feature arrays go to the workers as memory-mapped files (copy-on-write):
  N workers share one copy in the page cache instead of holding N.
* ``ray``: tasks on a Ray cluster (``address``), or on a local Ray instance started for
  the grid. Datasets travel through Ray's object store, so worker nodes need imsa
  installed but not the data; records and models come back to the driver, which writes
  them into the store. On CUDA each run asks for ``gpus_per_run`` of a GPU (e.g. 0.25:
  four runs per GPU). Install with ``pip install "imsa[ray]"``.

Every backend writes a run's result file last and atomically (:func:`imsa.experiments.runner.save_run`)
and reports finished runs through ``on_run_end(name, record)``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import multiprocessing
import os
import tempfile
import threading
import time

import numpy as np
import torch

from ..allocator import tune_allocator
from ..errors import ConfigError, ImsaError, unknown_name
from ..training import RunContext, notify
from .runner import RunSpec, run_one, save_run, train_run

logger = logging.getLogger(__name__)


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Torch threads for each of ``workers`` runs sharing ``cores``: ``max(1, cores // workers)``."""
    return max(1, (cores or available_cores()) // workers)


class SequentialBackend:
    """Runs one after another in this process."""

    name = "sequential"

    def run(self, specs: list[RunSpec], datasets: dict, *, context: RunContext = RunContext(), name=lambda s: s.key):
        """Train ``specs``; yield ``(spec, record)`` as each finishes."""
        for index, spec in enumerate(specs):
            notify(context.callbacks, "on_run_start", name(spec), index, len(specs))
            record = run_one(spec, datasets[spec.experiment.dataset], context=context)
            notify(context.callbacks, "on_run_end", name(spec), record)
            yield spec, record


# ---- local worker processes -------------------------------------------------------------

_WORKER_DATASETS: dict = {}
_WORKER_DEVICE: dict = {}


def share_datasets(datasets: dict, folder: str | os.PathLike) -> dict:
    """Copies of ``datasets`` whose feature arrays are written to ``folder`` as .npy files
    and replaced by their paths; :func:`open_shared` maps them back in a worker."""
    shared = {}
    for k, (key, dataset) in enumerate(datasets.items()):
        light = copy.copy(dataset)
        light.__dict__.pop("_tensor_caches", None)
        light.features = {}
        for m, x in dataset.features.items():
            path = os.path.join(folder, f"{k}-{m}.npy")
            np.save(path, x)
            light.features[m] = path
        shared[key] = light
    return shared


def open_shared(dataset):
    """A dataset of :func:`share_datasets` with its features mapped copy-on-write (pages shared between processes)."""
    dataset.features = {m: np.load(path, mmap_mode="c") for m, path in dataset.features.items()}
    return dataset


def _init_worker(datasets: dict, threads: int, parent: int, counter=None, gpus: tuple[int, ...] = ()) -> None:
    """Worker set-up: the datasets once per process, a share of the cores (and of the GPUs), and a parent watch."""
    _WORKER_DATASETS.update({key: open_shared(dataset) for key, dataset in datasets.items()})
    tune_allocator()
    torch.set_num_threads(threads)
    if gpus:
        with counter.get_lock():
            index, counter.value = counter.value, counter.value + 1
        _WORKER_DEVICE["device"] = f"cuda:{gpus[index % len(gpus)]}"

    def watch_parent():
        while True:
            if os.getppid() != parent:  # the grid process was killed: stop rather than train for nobody
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch_parent, daemon=True).start()


def _local_job(args) -> tuple[RunSpec, dict]:
    spec, context = args
    if "device" in _WORKER_DEVICE:
        context = dataclasses.replace(context, device=_WORKER_DEVICE["device"])
    return spec, run_one(spec, _WORKER_DATASETS[spec.experiment.dataset], context=context)


class LocalBackend:
    """Worker processes on this machine.

    Parameters
    ----------
    workers : int, optional
        Processes (default: the available cores).
    threads : int, optional
        Torch threads per worker (default ``max(1, cores // workers)``).
    gpus : sequence of int, optional
        GPU indices; workers are placed on them round-robin (several per GPU).
    """

    name = "local"

    def __init__(self, workers: int | None = None, threads: int | None = None, gpus=()):
        self.workers = workers or available_cores()
        if self.workers < 1:
            raise ConfigError(f"The 'workers' parameter of the local backend must be at least 1. Got {self.workers!r} instead.")
        self.threads = threads or threads_per_worker(self.workers)
        self.gpus = tuple(int(g) for g in gpus)
        for g in self.gpus:
            if not torch.cuda.is_available() or not 0 <= g < torch.cuda.device_count():
                raise ConfigError(f"--gpus {','.join(map(str, self.gpus))}: GPU {g} is not there ({torch.cuda.device_count()} GPU(s) visible to PyTorch).")

    def run(self, specs: list[RunSpec], datasets: dict, *, context: RunContext = RunContext(), name=lambda s: s.key):
        """Train ``specs`` in worker processes; yield ``(spec, record)`` in the order they finish.

        The workers get the context without its callbacks (they hear runs start and end here).
        """
        if not specs:
            return
        workers = min(self.workers, len(specs))
        logger.info("local backend: %d worker process(es), %d torch thread(s) each.", workers, self.threads)
        processes = multiprocessing.get_context("spawn")  # no forked torch state
        counter = processes.Value("i", 0)
        folder = tempfile.TemporaryDirectory(prefix="imsa-shared-")
        pool = processes.Pool(
            workers, initializer=_init_worker, initargs=(share_datasets(datasets, folder.name), self.threads, os.getpid(), counter, self.gpus)
        )
        worker_context = dataclasses.replace(context, callbacks=())
        starts = _StartNotices(specs, workers, context.callbacks, name)
        try:
            for spec, record in pool.imap_unordered(_local_job, [(s, worker_context) for s in specs]):  # handed out in order, one per free worker
                notify(context.callbacks, "on_run_end", name(spec), record)
                starts.next()
                yield spec, record
            pool.close()
        finally:
            pool.terminate()  # on an error or Ctrl-C: unfinished runs keep their checkpoints
            pool.join()
            folder.cleanup()


class _StartNotices:
    """``on_run_start`` as workers take runs: the first ``workers`` at once, then one as each
    run ends (the pools hand runs out in order), so progress shows what is running."""

    def __init__(self, specs, workers: int, callbacks, name):
        self.specs, self.callbacks, self.name, self.started = specs, callbacks, name, 0
        for _ in range(min(workers, len(specs))):
            self.next()

    def next(self) -> None:
        if self.started < len(self.specs):
            spec = self.specs[self.started]
            notify(self.callbacks, "on_run_start", self.name(spec), self.started, len(self.specs))
            self.started += 1


# ---- Ray ----------------------------------------------------------------------------------


def _ray_job(spec: RunSpec, dataset, threads: int, context: RunContext):
    """A Ray task: train one run and hand its record and model back to the driver."""
    torch.set_num_threads(threads)
    return train_run(spec, dataset, context=context)


class RayBackend:
    """Ray tasks, one per run.

    Parameters
    ----------
    address : str, optional
        Address of a running cluster (``"auto"``, ``"ray://host:10001"``, ...). Without
        one, a local Ray instance is started for the grid and stopped after it.
    workers : int, optional
        CPUs of the local instance (default: the available cores); ignored with ``address``.
    threads : int
        CPUs each run asks Ray for, and its torch threads (default 1).
    gpus_per_run : float
        The share of a GPU each run asks Ray for when the run's device is CUDA.
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, threads: int = 1, gpus_per_run: float = 0.25):
        self.address = address
        self.workers = workers or available_cores()
        self.threads = threads
        if not 0 < gpus_per_run <= 1:
            raise ConfigError(f"--gpus-per-run must be in (0, 1]. Got {gpus_per_run!r}.")
        self.gpus_per_run = gpus_per_run

    def run(self, specs: list[RunSpec], datasets: dict, *, context: RunContext = RunContext(), name=lambda s: s.key):
        """Submit ``specs`` as Ray tasks; write and yield ``(spec, record)`` as each finishes."""
        if not specs:
            return
        try:
            import ray
        except ImportError:
            raise ImsaError('The ray backend needs Ray: pip install "imsa[ray]" (or pip install ray).') from None
        started_here = not ray.is_initialized()
        if started_here:
            if self.address:
                ray.init(address=self.address, logging_level=logging.WARNING)
            else:
                ray.init(num_cpus=self.workers, include_dashboard=False, logging_level=logging.WARNING)
        logger.info("ray backend: cluster resources %s.", ray.cluster_resources())
        gpus = self.gpus_per_run if context.torch_device.type == "cuda" else 0
        task = ray.remote(num_cpus=self.threads, num_gpus=gpus, max_retries=0)(_ray_job)
        pending = {}
        try:
            refs = {key: ray.put(dataset) for key, dataset in datasets.items()}
            worker_context = dataclasses.replace(context, callbacks=())
            for spec in specs:
                ref = task.remote(spec, refs[spec.experiment.dataset], self.threads, worker_context)
                pending[ref] = spec
            starts = _StartNotices(specs, max(1, int(ray.cluster_resources().get("CPU", self.workers) // self.threads)), context.callbacks, name)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                spec = pending.pop(done[0])
                output = ray.get(done[0])
                save_run(spec, output)
                notify(context.callbacks, "on_run_end", name(spec), output.record)
                starts.next()
                yield spec, output.record
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            if started_here:
                ray.shutdown()


BACKENDS = {"sequential": SequentialBackend, "local": LocalBackend, "ray": RayBackend}


def make_backend(name: str, *, workers: int | None = None, address: str | None = None, threads: int | None = None, gpus=(), gpus_per_run: float | None = None):
    """Build a backend by name: ``sequential``, ``local`` or ``ray``."""
    if name not in BACKENDS:
        raise unknown_name("backend", name, BACKENDS)
    if address and name != "ray":
        raise ConfigError(f"--address applies to the ray backend only (got --backend {name}).")
    if gpus and name != "local":
        raise ConfigError(f"--gpus places local workers on GPUs (got --backend {name}; Ray places runs itself, see --gpus-per-run).")
    if gpus_per_run is not None and name != "ray":
        raise ConfigError(f"--gpus-per-run applies to the ray backend only (got --backend {name}).")
    if name == "sequential":
        if workers not in (None, 1):
            raise ConfigError("The sequential backend runs one run at a time; use --backend local for --workers.")
        return SequentialBackend()
    if name == "local":
        return LocalBackend(workers, threads, gpus)
    return RayBackend(address, workers, threads or 1, 0.25 if gpus_per_run is None else gpus_per_run)
