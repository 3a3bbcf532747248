"""Experiment logging: a run's per-epoch log and final metrics mirrored into CSV files,
TensorBoard event files or a local MLflow store (``--log csv tensorboard mlflow``).

The run JSON stays the record; these are views for the tools people already use. Each
run logs under its experiment directory: ``logs/<seedS-foldF>/epochs.csv`` and
``final.csv``, ``logs/<seedS-foldF>/tensorboard/`` (``tensorboard --logdir DIR/logs``), and
one MLflow store per experiment directory, the SQLite file ``mlflow.db`` (``mlflow ui
--backend-store-uri sqlite:///DIR/mlflow.db``). TensorBoard and MLflow are optional extras (``pip install "imsa[tensorboard]"``,
``"imsa[mlflow]"``); asking for one that is not installed is refused before training.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

from .errors import ConfigError

LOGGERS = ("csv", "tensorboard", "mlflow")
EXTRAS = {"tensorboard": ("tensorboard",), "mlflow": ("mlflow", "sqlalchemy")}


def check_loggers(kinds) -> tuple[str, ...]:
    """The requested loggers, refusing unknown ones and those whose library is missing."""
    kinds = tuple(dict.fromkeys(kinds or ()))
    for kind in kinds:
        if kind not in LOGGERS:
            raise ConfigError(f"Unknown logger {kind!r}. Valid loggers: {', '.join(LOGGERS)}.")
        missing = [module for module in EXTRAS.get(kind, ()) if importlib.util.find_spec(module) is None]
        if missing:
            raise ConfigError(f'--log {kind} needs the {" and ".join(missing)} package(s): pip install "imsa[{kind}]".')
    return kinds


class CSVLogger:
    """``epochs.csv`` (one row per epoch and phase) and ``final.csv`` (split, setting, metric, value)."""

    columns = ("phase", "epoch", "loss", "score", "best", "lr", "seconds")

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "epochs.csv"
        if not self.path.exists():
            self.path.write_text(",".join(self.columns) + "\n")

    def on_epoch_end(self, phase, epoch, logs):
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([phase] + [logs.get(c, "") for c in self.columns[1:]])

    def final(self, metrics: dict) -> None:
        with open(self.directory / "final.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["split", "setting", "metric", "value"])
            for split, settings in metrics.items():
                for setting, values in settings.items():
                    for name, value in values.items():
                        writer.writerow([split, setting, name, value])

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Scalars ``<phase>/loss``, ``<phase>/valid_score``, ``<phase>/lr`` per epoch; ``<split>/<metric>``
    of the settings' mean (or the one setting) at the end."""

    def __init__(self, directory: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(directory / "tensorboard"))

    def on_epoch_end(self, phase, epoch, logs):
        for name, key in (("loss", "loss"), ("valid_score", "score"), ("lr", "lr")):
            if key in logs:
                self.writer.add_scalar(f"{phase}/{name}", logs[key], epoch)

    def final(self, metrics: dict) -> None:
        for split, settings in metrics.items():
            values = settings.get("mean") or next(iter(settings.values()))
            for name, value in values.items():
                self.writer.add_scalar(f"{split}/{name}", value, 0)

    def close(self) -> None:
        self.writer.close()


class MLflowLogger:
    """One MLflow run per imsa run in ``<experiment dir>/mlflow.db``: the config as parameters,
    ``<phase>_loss`` / ``<phase>_valid_score`` / ``<phase>_lr`` per epoch, ``<split>_<metric>`` at the end."""

    def __init__(self, store: Path, experiment: str, run: str, params: dict):
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(f"sqlite:///{store.resolve()}")
        mlflow.set_experiment(experiment)
        self.run = mlflow.start_run(run_name=run)
        mlflow.log_params({k: str(v)[:250] for k, v in params.items()})
        self.steps: dict[str, int] = {}

    def on_epoch_end(self, phase, epoch, logs):
        self.mlflow.log_metrics(
            {f"{phase}_{name}": logs[key] for name, key in (("loss", "loss"), ("valid_score", "score"), ("lr", "lr")) if key in logs}, step=epoch
        )

    def final(self, metrics: dict) -> None:
        for split, settings in metrics.items():
            values = settings.get("mean") or next(iter(settings.values()))
            self.mlflow.log_metrics({f"{split}_{name}": value for name, value in values.items()})

    def close(self) -> None:
        self.mlflow.end_run()


def open_loggers(kinds, experiment_dir: Path, key: str, *, experiment: str, params: dict) -> list:
    """The loggers of one run (``key``, e.g. ``seed1-fold0``) of the experiment in ``experiment_dir``."""
    directory = Path(experiment_dir) / "logs" / key
    loggers = []
    for kind in check_loggers(kinds):
        if kind == "csv":
            loggers.append(CSVLogger(directory))
        elif kind == "tensorboard":
            loggers.append(TensorBoardLogger(directory))
        else:
            loggers.append(MLflowLogger(Path(experiment_dir) / "mlflow.db", experiment, key, params))
    return loggers
