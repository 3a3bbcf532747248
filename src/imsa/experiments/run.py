"""``imsa run`` as one Python call: :func:`run` takes what the command line takes and gives
the same experiment, so a script and the command are interchangeable."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

from ..config import config_source, split_assignments
from ..errors import ConfigError
from ..noise import NOISE_RATES
from ..protocols import FRAME_RATES, MR_RATES, Protocol
from ..training import RunContext
from .grid import SHARED_PHASES
from .runner import Experiment, run_experiment


def _protocols(method, dataset, kind, rate, rates, frames, mask_seed, config, packaged, noise="") -> list[Protocol]:
    if rate is not None and kind == "fixed":
        raise ConfigError("--rate applies to --protocol random, frames, mr or noise.")
    if rates and kind not in ("frames", "mr", "noise"):
        raise ConfigError("--rates applies to --protocol frames, mr or noise; give --protocol random one --rate.")
    if rates and rate is not None:
        raise ConfigError("Give --rate (one rate) or --rates (several), not both.")
    if frames and kind == "frames":
        raise ConfigError("--frames composes --protocol fixed or random with frame-level missing; --protocol frames takes --rate or --rates.")
    default = {"frames": FRAME_RATES, "mr": MR_RATES, "noise": NOISE_RATES}.get(kind, [None])  # random: Protocol asks for its rate
    rates = list(rates or ([rate] if rate is not None else default))
    if kind == "noise" and len(rates) > 1:  # training never sees the noise: one model scored at every rate
        return [Protocol("noise", rates=tuple(rates), mask_seed=mask_seed, noise=noise)]
    protocols = [Protocol(kind, rate=r, mask_seed=mask_seed, frames=frames, noise=noise) for r in rates]
    if kind == "frames" and len(rates) > 1 and Experiment(method=method, dataset=dataset, config=config, packaged=packaged).own_frame_noise():
        return [Protocol("frames", rates=tuple(rates), mask_seed=mask_seed, noise=noise)]  # one model scored at every rate
    return protocols


def default_out(method: str, dataset: str, protocols: list[Protocol], file_format: str | None = None) -> Path:
    """``runs/<method>-<dataset>-<protocol>-<time>``: where a run goes without ``--out``."""
    label = Path(dataset).stem if ("/" in dataset or "\\" in dataset or file_format) else dataset
    name = protocols[0].name if len(protocols) == 1 else protocols[0].kind
    return Path("runs") / f"{method}-{label}-{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(
    method: str = "late_fusion",
    dataset: str = "synthetic",
    *,
    protocol: str = "fixed",
    rate: float | None = None,
    rates=None,
    frames: float = 0.0,
    noise: str = "",
    mask_seed: int = 0,
    seeds=(1,),
    folds=None,
    out: str | os.PathLike | None = None,
    config: str | os.PathLike | dict | None = None,
    overrides: dict | None = None,
    file_format: str | None = None,
    data_dir=None,
    context: RunContext | None = None,
) -> dict:
    """Train and score ``method`` on ``dataset`` under a protocol, as ``imsa run`` does.

    Parameters
    ----------
    method, dataset : str
        A registered method; a registered dataset or the path of a file in a published format.
    protocol : {"fixed", "random", "frames", "mr", "noise"}
    rate : float, optional
        The random protocol's missing rate or the mr protocol's MR (required there), or one frame drop rate.
    rates : list of float, optional
        Several rates, the protocol's all by default (``frames`` and ``noise`` 0.0 ... 0.9,
        ``mr`` 0.0 ... 0.7): for ``frames`` and ``mr`` one experiment per rate in
        ``out/frames=R`` (``out/mr=R``), or, for ``frames`` with a method that brings its own
        frame noise and always for ``noise``, one model scored at all of them.
    frames : float
        Frame drop rate inside the present modalities of ``fixed`` or ``random``.
    noise : str
        ``KIND:RATE`` (``gauss``, ``replace`` or ``erase``, e.g. ``"gauss:0.3"``): the present
        modalities of every setting corrupted (see :mod:`imsa.noise`); with
        ``protocol="noise"``, the kind alone (``rate`` gives the rate).
    mask_seed, seeds, folds
        Seed of the evaluation masks; training seeds; folds (default all).
    out : path, optional
        The run directory (default ``runs/<method>-<dataset>-<protocol>-<time>``); one
        holding the same experiment is resumed.
    config : dict, path or str, optional
        Config values, a YAML file of them, or a packaged config's name (``momke/mosei``).
    overrides : dict, optional
        ``--set`` values: method config keys, and ``data.KEY`` for the dataset loader.
    file_format : str, optional
        The format of a dataset given by path (default: detected).
    data_dir : path, optional
    context : RunContext, optional

    Returns
    -------
    dict
        The summary (one table: a row per setting, rates merged), with ``out``,
        ``protocol_label``, ``experiments`` (how many were run), ``runs_total`` and
        ``finished_before`` (runs found finished and skipped).
    """
    values, packaged = config_source(config, method)
    method_overrides, dataset_options = split_assignments(overrides or {})
    values.update(method_overrides)
    if file_format:
        dataset_options["format"] = file_format
    protocols = _protocols(method, dataset, protocol, rate, rates, frames, mask_seed, values, packaged, noise)
    out = Path(out) if out else default_out(method, dataset, protocols, file_format)
    context = context or RunContext()
    summaries = []
    for each in protocols:  # several rates: one experiment per rate, in OUT/frames=R or OUT/mr=R
        experiment = Experiment(
            method=method,
            dataset=dataset,
            protocol=each,
            seeds=tuple(seeds),
            folds=tuple(folds) if folds else None,
            config=values,
            dataset_options=dataset_options,
            packaged=packaged,
        )
        shared = dataclasses.replace(context, shared=out / SHARED_PHASES) if len(protocols) > 1 else context  # rates restore each other's complete-data phases
        summaries.append(run_experiment(experiment, out if len(protocols) == 1 else out / each.name, data_dir=data_dir, context=shared))
    shutil.rmtree(out / SHARED_PHASES, ignore_errors=True)
    listed = ", ".join(f"{r:g}" for r in (protocols[0].rates or [p.rate for p in protocols]))
    if len(summaries) == 1:
        summary = dict(summaries[0])
        label = protocols[0].name
        if protocols[0].rates:
            own = "the method's own frame noise" if protocols[0].kind == "frames" else "trained without the noise"
            label = f"{protocols[0].kind} at {listed}, one model ({own})"
    else:  # one table: a row per rate
        summary = {"experiment": summaries[0]["experiment"], "runs": summaries[0]["runs"]}
        for split in ("test", "valid"):
            summary[split] = {setting: row for part in summaries for setting, row in part[split].items()}
        label = f"{protocols[0].kind} at {listed}"
    summary.update(
        out=out,
        protocol_label=label,
        experiments=len(summaries),
        runs_total=sum(s["runs"] for s in summaries),
        finished_before=sum(s["finished_before"] for s in summaries),
        given_config=bool(values),
    )
    return summary
