"""Reports: paper tables and plots made from the run files of a results store.

:func:`write_report` reads every ``runs/seedS-foldF.json`` under a directory (a grid's
store or a single ``imsa run`` directory), groups the runs by (method, dataset, protocol)
and writes, for one split:

* ``report.md`` and ``report.tex``: one table per protocol and metric in the layout
  papers use, one row per method and dataset, the fixed conditions (or the missing
  rates) as columns plus their average, each cell ``mean ± std`` over seeds x folds
  (sample std, ddof = 1), the best mean per column in bold;
* ``fixed.csv`` and ``random.csv``: the same tables as numbers (mean, std and n per cell);
* ``cells.csv``: every cell once, with the run files it aggregates (its provenance);
* ``rate_curve.png``: metric against missing rate per method, with ±std bands;
* ``conditions.png``: metric per fixed condition per method, with ±std error bars.

Metrics keep the names of :mod:`imsa.metrics` (``acc2_has0`` and ``acc2_non0`` are the
two Acc-2 definitions) and every table says which definition it shows.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..errors import ConfigError
from ..files import atomic_write_text
from ..metrics import METRICS
from .store import SPLITS, RunRecord, Stats, format_cell, load_record

logger = logging.getLogger(__name__)

# What a report shows when the user names no metrics, per task.
DEFAULT_METRICS = {
    "regression": ("acc2_has0", "f1_has0", "acc2_non0", "mae", "corr", "acc7"),
    "classification": ("wa", "ua", "wf1"),
}
PROTOCOL_TITLES = {"fixed": "fixed missing conditions", "random": "random missing rate"}


@dataclass
class Cell:
    """One table cell: a metric of one row under one column, over the runs it lists."""

    values: list[float] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)

    @property
    def stats(self) -> Stats:
        return Stats.of(self.values)

    @property
    def mean(self) -> float:
        return self.stats.mean

    @property
    def std(self) -> float:
        return self.stats.std

    @property
    def n(self) -> int:
        return len(self.values)


@dataclass
class Table:
    """Rows ``(method, dataset)`` x columns (conditions or rates, then the average) of one protocol, metric and split."""

    protocol: str
    metric: str
    split: str
    columns: list[str]
    cells: dict[tuple[str, str], dict[str, Cell]]

    @property
    def rows(self) -> list[tuple[str, str]]:
        return list(self.cells)

    def best(self, column: str) -> float | None:
        means = [c[column].mean for c in self.cells.values() if column in c and c[column].n]
        if len(means) < 2:
            return None
        return max(means) if METRICS[self.metric].higher_is_better else min(means)


def collect_runs(root: str | os.PathLike) -> list[tuple[str, RunRecord]]:
    """Every run file under ``root`` as ``(path relative to root, record)``, sorted by path.

    Raises
    ------
    ConfigError
        When ``root`` holds no run files, or one cannot be read (naming the file).
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a directory; give the --out of an `imsa grid run` or `imsa run`.")
    paths = sorted(p for p in root.rglob("runs/seed*-fold*.json") if p.is_file())
    if not paths:
        raise ConfigError(f"{root}: no run files (runs/seedS-foldF.json) found; give the --out of an `imsa grid run` or `imsa run`.")
    return [(str(path.relative_to(root)), load_record(path)) for path in paths]


def build_tables(runs: list[tuple[str, RunRecord]], metrics=None, split: str = "test", order: dict | None = None) -> list[Table]:
    """Aggregate runs into tables, one per protocol kind and metric.

    Parameters
    ----------
    runs : list of (str, dict)
        From :func:`collect_runs`.
    metrics : list of str, optional
        Metric names (see :data:`imsa.metrics.METRICS`); default per task
        (:data:`DEFAULT_METRICS`).
    split : {"valid", "test"}
    order : dict, optional
        ``{"methods": [...], "datasets": [...]}`` giving the row order (e.g. a grid's);
        default alphabetical.

    Returns
    -------
    list of Table
        Fixed-protocol tables first; rows that lack a metric are left out of its table.
    """
    if split not in SPLITS:
        raise ConfigError(f"Unknown split {split!r}. Valid splits: {', '.join(SPLITS)}.")
    if metrics:
        for name in metrics:
            if name not in METRICS:
                raise ConfigError(f"Unknown metric {name!r}. Valid metrics: {', '.join(METRICS)}.")
    else:
        tasks = []
        for _, record in runs:
            if record.task not in tasks:
                tasks.append(record.task)
        metrics = [m for task in tasks for m in DEFAULT_METRICS[task]]
    order = order or {}
    method_rank = {m: i for i, m in enumerate(order.get("methods", []))}
    dataset_rank = {d: i for i, d in enumerate(order.get("datasets", []))}

    def row_key(row):
        method, dataset = row
        return (dataset_rank.get(dataset, len(dataset_rank)), dataset, method_rank.get(method, len(method_rank)), method)

    tables = []
    for kind in ("fixed", "random"):
        selected = [(path, r) for path, r in runs if r.protocol.kind == kind]
        if not selected:
            continue
        for metric in metrics:
            cells: dict = defaultdict(lambda: defaultdict(Cell))
            columns: list[str] = []
            if kind == "fixed":
                for path, record in selected:
                    for setting, values in record.metrics[split].items():
                        if metric in values:
                            column = _average_column(len(record.metrics[split]) - 1) if setting == "mean" else setting
                            _add(cells[(record.method, record.dataset)][column], values[metric], path)
                            if column not in columns:
                                columns.append(column)
            else:
                rates = sorted({r.protocol.rate for _, r in selected})
                columns = [f"{rate:.1f}" for rate in rates]
                by_run = defaultdict(dict)  # (row, seed, fold) -> rate -> (value, path)
                for path, record in selected:
                    setting = next(s for s in record.metrics[split] if s != "mean")
                    value = record.metrics[split][setting].get(metric)
                    if value is None:
                        continue
                    row = (record.method, record.dataset)
                    _add(cells[row][f"{record.protocol.rate:.1f}"], value, path)
                    by_run[(row, record.seed, record.fold)][record.protocol.rate] = (value, path)
                average = _average_column(len(rates), "rates")
                for (row, _, _), per_rate in sorted(by_run.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
                    if len(per_rate) == len(rates):  # the average needs every rate of that seed and fold
                        cell = cells[row][average]
                        cell.values.append(float(np.mean([v for v, _ in per_rate.values()])))
                        cell.runs.extend(p for _, p in per_rate.values())
                columns.append(average)
            if cells:
                ordered = {row: dict(cells[row]) for row in sorted(cells, key=row_key)}
                tables.append(Table(kind, metric, split, columns, ordered))
    return tables


def _average_column(count: int, what: str = "conditions") -> str:
    return f"avg ({count} {what})" if what == "rates" else f"avg ({count})"


def _add(cell: Cell, value, path: str) -> None:
    if value is not None and math.isfinite(value):
        cell.values.append(float(value))
        cell.runs.append(path)


def _title(table: Table) -> str:
    info = METRICS[table.metric]
    direction = "higher is better" if info.higher_is_better else "lower is better"
    return f"{table.metric} ({info.description}; {direction}), {table.split} split, {PROTOCOL_TITLES[table.protocol]}"


def _row_label(row: tuple[str, str], datasets: set) -> str:
    method, dataset = row
    return method if len(datasets) == 1 else f"{method} / {dataset}"


def markdown(tables: list[Table], digits: int = 3) -> str:
    """The tables as Markdown, best mean per column in bold."""
    parts = []
    for table in tables:
        datasets = {d for _, d in table.rows}
        header = ["method" if len(datasets) == 1 else "method / dataset"] + table.columns
        lines = [f"### {_title(table)}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row, cells in table.cells.items():
            out = [_row_label(row, datasets)]
            for column in table.columns:
                cell = cells.get(column)
                text = format_cell(cell.stats if cell else None, digits)
                best = table.best(column)
                if best is not None and column in cells and cells[column].n and round(cells[column].mean, digits) == round(best, digits):
                    text = f"**{text}**"
                out.append(text)
            lines.append("| " + " | ".join(out) + " |")
        if len(datasets) == 1:
            lines.append(f"\nDataset: {next(iter(datasets))}. Cells: mean ± std over seeds × folds; runs per cell in cells.csv.")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def latex(tables: list[Table], digits: int = 3) -> str:
    """The tables as LaTeX ``table`` environments (needs ``\\usepackage{booktabs}``)."""

    def esc(text: str) -> str:
        return text.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("&", r"\&").replace("%", r"\%").replace("#", r"\#")

    parts = ["% imsa report: mean $\\pm$ std over seeds x folds. Needs \\usepackage{booktabs}."]
    for table in tables:
        datasets = {d for _, d in table.rows}
        lines = [
            r"\begin{table}[t]",
            r"\centering",
            r"\small",
            rf"\caption{{{esc(_title(table))}. Mean $\pm$ std over seeds $\times$ folds.}}",
            r"\begin{tabular}{l" + "c" * len(table.columns) + "}",
            r"\toprule",
            " & ".join([esc("method" if len(datasets) == 1 else "method / dataset")] + [esc(c) for c in table.columns]) + r" \\",
            r"\midrule",
        ]
        for row, cells in table.cells.items():
            out = [esc(_row_label(row, datasets))]
            for column in table.columns:
                cell = cells.get(column)
                if cell is None or not cell.n:
                    out.append("--")
                    continue
                best = table.best(column)
                mean = f"{cell.mean:.{digits}f}"
                if best is not None and round(cell.mean, digits) == round(best, digits):
                    mean = rf"\textbf{{{mean}}}"
                out.append(mean if cell.n == 1 else rf"{mean} $\pm$ {cell.std:.{digits}f}")
            lines.append(" & ".join(out) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def wide_csv(tables: list[Table], protocol: str) -> str:
    """One protocol's tables as numbers: a row per (metric, method, dataset), mean/std/n per column."""
    selected = [t for t in tables if t.protocol == protocol]
    columns: list[str] = []
    for table in selected:
        columns += [c for c in table.columns if c not in columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["split", "protocol", "metric", "method", "dataset"] + [f"{c} {s}" for c in columns for s in ("mean", "std", "n")])
    for table in selected:
        for (method, dataset), cells in table.cells.items():
            row = [table.split, protocol, table.metric, method, dataset]
            for column in columns:
                cell = cells.get(column)
                row += [f"{cell.mean:.6f}", f"{cell.std:.6f}", cell.n] if cell and cell.n else ["", "", 0]
            writer.writerow(row)
    return buffer.getvalue()


def cells_csv(tables: list[Table]) -> str:
    """Every cell with the run files it aggregates (``;``-separated, relative to the store)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["split", "protocol", "metric", "method", "dataset", "column", "mean", "std", "n", "runs"])
    for table in tables:
        for (method, dataset), cells in table.cells.items():
            for column in table.columns:
                cell = cells.get(column)
                if cell is not None and cell.n:
                    writer.writerow([table.split, table.protocol, table.metric, method, dataset, column, f"{cell.mean:.6f}", f"{cell.std:.6f}", cell.n, ";".join(cell.runs)])
    return buffer.getvalue()


def _grid(count: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = min(3, count)
    nrows = math.ceil(count / ncols)
    return plt, ncols, nrows


def _datasets(tables: list[Table]) -> str:
    return ", ".join(sorted({d for t in tables for _, d in t.rows}))


def _title_and_legend(fig, axes, title: str) -> None:
    """Title on top, the legend of the first panel under it, panels below both (no overlap)."""
    height = fig.get_figheight()
    fig.suptitle(title, y=1 - 0.08 / height, va="top", fontsize=11)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 4), frameon=False, bbox_to_anchor=(0.5, 1 - 0.34 / height))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.62 / height))


def plot_rate_curves(tables: list[Table], path: Path) -> bool:
    """Metric against missing rate, one line per (method, dataset) with a ±std band; one panel per metric."""
    selected = [t for t in tables if t.protocol == "random"]
    if not selected:
        return False
    plt, ncols, nrows = _grid(len(selected))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.9 * nrows), squeeze=False)
    for ax, table in zip(axes.flat, selected):
        datasets = {d for _, d in table.rows}
        rate_columns = [c for c in table.columns if not c.startswith("avg")]
        for row, cells in table.cells.items():
            points = [(float(c), cells[c].mean, cells[c].std) for c in rate_columns if c in cells and cells[c].n]
            if not points:
                continue
            x, mean, std = (np.array(v) for v in zip(*points))
            (line,) = ax.plot(x, mean, marker="o", label=_row_label(row, datasets))
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(f"{table.metric} ({'↑' if METRICS[table.metric].higher_is_better else '↓'})", fontsize=11)
        ax.set_xlabel("missing rate")
        ax.set_ylabel(table.metric)
        ax.set_xticks([float(c) for c in rate_columns])
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(selected):]:
        ax.set_visible(False)
    _title_and_legend(fig, axes, f"{_datasets(selected)}, {selected[0].split} split, random missing rate: mean ± std over seeds × folds")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_conditions(tables: list[Table], path: Path) -> bool:
    """Grouped bars: metric per fixed condition (and their average) per (method, dataset), ±std error bars."""
    selected = [t for t in tables if t.protocol == "fixed"]
    if not selected:
        return False
    plt, ncols, nrows = _grid(len(selected))
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.0 * ncols, 3.9 * nrows), squeeze=False)
    for ax, table in zip(axes.flat, selected):
        datasets = {d for _, d in table.rows}
        rows = table.rows
        width = 0.8 / len(rows)
        x = np.arange(len(table.columns))
        for i, row in enumerate(rows):
            cells = table.cells[row]
            mean = [cells[c].mean if c in cells else np.nan for c in table.columns]
            std = [cells[c].std if c in cells else 0.0 for c in table.columns]
            ax.bar(x + (i - (len(rows) - 1) / 2) * width, mean, width, yerr=std, capsize=2, label=_row_label(row, datasets), error_kw={"linewidth": 0.8})
        ax.set_xticks(x)
        ax.set_xticklabels(table.columns, rotation=30, ha="right")
        ax.set_title(f"{table.metric} ({'↑' if METRICS[table.metric].higher_is_better else '↓'})", fontsize=11)
        ax.set_ylabel(table.metric)
        finite = [c.mean - c.std for cells in table.cells.values() for c in cells.values() if c.n]
        top = [c.mean + c.std for cells in table.cells.values() for c in cells.values() if c.n]
        span = max(top) - min(finite) if finite else 0.0
        if span > 0 and METRICS[table.metric].higher_is_better and min(finite) > 0.3:
            ax.set_ylim(max(0.0, min(finite) - 0.15 * span), max(top) + 0.1 * span)  # show the differences, not the baseline at 0
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(selected):]:
        ax.set_visible(False)
    _title_and_legend(fig, axes, f"{_datasets(selected)}, {selected[0].split} split, fixed missing conditions: mean ± std over seeds × folds")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def report_tables(root: str | os.PathLike, metrics=None, split: str = "test") -> list[Table]:
    """:func:`build_tables` over every run under ``root``, rows in the order of its ``grid.yaml`` if it has one."""
    root = Path(root)
    runs = collect_runs(root)  # every file is read (and a bad one refused) before anything is written
    order = {}
    grid_file = root / "grid.yaml"
    if grid_file.is_file():
        order = yaml.safe_load(grid_file.read_text()) or {}
    tables = build_tables(runs, metrics, split, order)
    if not tables:
        raise ConfigError(f"{root}: none of the runs has the metric(s) {', '.join(metrics or [])} on the {split} split.")
    return tables


def write_report(root: str | os.PathLike, out: str | os.PathLike | None = None, *, metrics=None, split: str = "test", digits: int = 3) -> dict[str, Path]:
    """Aggregate the run files under ``root`` and write tables and plots to ``out``.

    Parameters
    ----------
    root : path
        A results store (``imsa grid run --out``) or run directory (``imsa run --out``).
    out : path, optional
        Report directory (default ``root/report``).
    metrics : list of str, optional
        Metrics to report (default per task, see :data:`DEFAULT_METRICS`).
    split : {"valid", "test"}
    digits : int
        Decimals in the Markdown and LaTeX tables.

    Returns
    -------
    dict
        ``{"markdown", "latex", "cells", "fixed_csv", "random_csv", "rate_curve", "conditions"}``
        -> path, for the files written.
    """
    root = Path(root)
    tables = report_tables(root, metrics, split)
    runs = {path for table in tables for cells in table.cells.values() for cell in cells.values() for path in cell.runs}
    out = Path(out) if out else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    written = {}

    def write(key: str, name: str, text: str) -> None:
        path = out / name
        written[key] = atomic_write_text(path, text)

    header = f"# imsa report: {root}\n\n{len(runs)} runs. Each cell: mean ± std (sample std, ddof = 1) over the seeds × folds of that row; cells.csv lists the run files behind every cell.\n\n"
    write("markdown", "report.md", header + markdown(tables, digits))
    write("latex", "report.tex", latex(tables, digits))
    write("cells", "cells.csv", cells_csv(tables))
    for protocol in ("fixed", "random"):
        if any(t.protocol == protocol for t in tables):
            write(f"{protocol}_csv", f"{protocol}.csv", wide_csv(tables, protocol))
    if plot_rate_curves(tables, out / "rate_curve.png"):
        written["rate_curve"] = out / "rate_curve.png"
    if plot_conditions(tables, out / "conditions.png"):
        written["conditions"] = out / "conditions.png"
    return written
