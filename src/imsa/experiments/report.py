"""Reports: paper tables and plots made from the run files of a results store.

:func:`write_report` reads every ``runs/seedS-foldF.json`` under a directory (a grid's
store or a single ``imsa run`` directory), groups the runs by (method, dataset, protocol)
and writes, for one split:

* ``report.md`` and ``report.tex``: one table per protocol and metric in the layout
  papers use, one row per method and dataset, the fixed conditions (or the missing
  rates) as columns plus their average, each cell ``mean ± std`` over seeds x folds
  (sample std, ddof = 1), the best mean per column in bold;
* ``fixed.csv`` and ``random.csv``: the same tables as numbers (mean, std and n per cell);
* ``cells.csv``: every cell once, with the run files it aggregates (its provenance) and
  its significance against the column's reference;
* ``rate_curve.png`` (and ``frame_rate_curve.png``, ``mr_curve.png``, ``noise_curve.png``): metric against the random missing rate
  (the frame-level rate) per method, with ±std bands;
* ``conditions.png``: metric per fixed condition per method, with ±std error bars.

Metrics keep the names of :mod:`imsa.metrics` (``acc2_has0`` and ``acc2_non0`` are the
two Acc-2 definitions) and every table says which definition it shows.

Significance (:mod:`imsa.significance`): in every column, each row is compared with the
column's reference, the best row of its dataset or the ``baseline`` method's: a paired
sign-flip permutation test over the matched seed x fold runs (marker ``*``) and a paired
bootstrap over test utterances from the runs' stored predictions (marker ``†``), each at
``alpha``; the p-values are in the CSV files.
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

from ..errors import ConfigError, did_you_mean
from ..files import atomic_write_text
from ..metrics import METRICS, SIMS_METRICS
from ..significance import better, paired_bootstrap_p, paired_permutation_p, smallest_permutation_p
from .store import SPLITS, RunRecord, Stats, format_cell, load_record, read_predictions

logger = logging.getLogger(__name__)

# What a report shows when the user names no metrics, per task.
DEFAULT_METRICS = {
    "regression": ("acc2_has0", "f1_has0", "acc2_non0", "mae", "corr", "acc7"),
    "classification": ("wa", "ua", "wf1"),
    "multilabel": ("emotion_binary_acc", "emotion_binary_f1"),
}
PROTOCOL_TITLES = {
    "fixed": "fixed missing conditions",
    "random": "random missing rate",
    "frames": "frame-level missing rate",
    "mr": "MR (missing rate of DiCMoR / IMDer)",
    "noise": "noise rate (present modalities corrupted)",
}


@dataclass
class Cell:
    """One table cell: a metric of one row under one column, over the runs it lists."""

    values: list[float] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    keys: list[tuple[int, int]] = field(default_factory=list)  # (seed, fold) of each value
    sources: list[list[tuple[str, str]]] = field(default_factory=list)  # per value: (run file, setting) it averages
    reference: bool = False
    p_runs: float = math.nan
    p_bootstrap: float = math.nan
    pairs: int = 0  # matched seed x fold runs of the permutation test against the reference

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
                raise ConfigError(f"Unknown metric {name!r}.{did_you_mean(name, METRICS)} Valid metrics: {', '.join(METRICS)}.")
    else:
        tasks = []
        for _, record in runs:
            if record.task not in tasks:
                tasks.append(record.task)
        metrics = [m for task in tasks for m in DEFAULT_METRICS[task]]
        if any(SIMS_METRICS[0] in record.metrics.get(split, {}).get(setting, {}) for _, record in runs for setting in record.metrics.get(split, {})):
            metrics += [m for m in SIMS_METRICS if m not in metrics]  # CH-SIMS runs: the field's set as well
    order = order or {}
    method_rank = {m: i for i, m in enumerate(order.get("methods", []))}
    dataset_rank = {d: i for i, d in enumerate(order.get("datasets", []))}

    def row_key(row):
        method, dataset = row
        return (dataset_rank.get(dataset, len(dataset_rank)), dataset, method_rank.get(_method_of(method), len(method_rank)), method)

    # Runs of one method and dataset under different configs never share a cell: each
    # config gets its own row, labelled with what sets it apart (e.g. "mmin [variant=ae]").
    configs: dict = defaultdict(dict)
    for _, record in runs:
        configs[(record.method, record.dataset)][record.config_id] = record.config
    labels = {key: _config_labels(group) for key, group in configs.items()}

    searched = any(record.search for _, record in runs)  # then every row states its search budget

    def row_of(record) -> tuple[str, str]:
        label = labels[(record.method, record.dataset)].get(record.config_id)
        name = f"{record.method} [{label}]" if label else record.method
        if record.protocol.frames:  # a composition: its own row beside the plain protocol's
            name += f" (frames={record.protocol.frames:g})"
        if record.protocol.kind == "noise":  # one curve per corruption
            name += f" ({record.protocol.noise.partition(':')[0]})"
        elif record.protocol.noise:
            name += f" (noise={record.protocol.noise})"
        if searched:
            name += f" (tuned, {record.search['trials']} trials)" if record.search else " (not tuned)"
        return (name, record.dataset)

    tables = []
    for kind in PROTOCOL_TITLES:
        selected = [(path, r) for path, r in runs if r.protocol.kind == kind]
        if not selected:
            continue
        for metric in metrics:
            cells: dict = defaultdict(lambda: defaultdict(Cell))
            columns: list[str] = []
            if kind == "fixed":
                for path, record in selected:
                    conditions = [s for s in record.metrics[split] if s != "mean"]
                    for setting, values in record.metrics[split].items():
                        if metric in values:
                            column = _average_column(len(conditions)) if setting == "mean" else setting
                            sources = [(path, s) for s in conditions] if setting == "mean" else [(path, setting)]
                            _add(cells[row_of(record)][column], values[metric], path, (record.seed, record.fold), sources)
                            if column not in columns:
                                columns.append(column)
            else:
                rates = sorted({rate for _, r in selected for rate, _ in _rated_settings(r, split)})
                columns = [f"{rate:.1f}" for rate in rates]
                by_run = defaultdict(dict)  # (row, seed, fold) -> rate -> (value, path)
                for path, record in selected:
                    for rate, setting in _rated_settings(record, split):
                        value = record.metrics[split][setting].get(metric)
                        if value is None:
                            continue
                        row = row_of(record)
                        _add(cells[row][f"{rate:.1f}"], value, path, (record.seed, record.fold), [(path, setting)])
                        by_run[(row, record.seed, record.fold)][rate] = (value, path, setting)
                average = _average_column(len(rates), "rates")
                for (row, seed, fold), per_rate in sorted(by_run.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
                    if len(per_rate) == len(rates):  # the average needs every rate of that seed and fold
                        cell = cells[row][average]
                        cell.values.append(float(np.mean([v for v, _, _ in per_rate.values()])))
                        cell.runs.extend(p for _, p, _ in per_rate.values())
                        cell.keys.append((seed, fold))
                        cell.sources.append([(p, s) for _, p, s in per_rate.values()])
                columns.append(average)
            if cells:
                ordered = {row: dict(cells[row]) for row in sorted(cells, key=row_key)}
                tables.append(Table(kind, metric, split, columns, ordered))
    return tables


def _rated_settings(record, split: str) -> list[tuple[float, str]]:
    """``(rate, setting)`` of a run of a rated protocol: its one setting, or one per rate
    where one model was scored at several frame or noise rates."""
    if record.protocol.rates:
        prefix = f"noise={record.protocol.noise}:" if record.protocol.kind == "noise" else "frames="
        return [(rate, f"{prefix}{rate:g}") for rate in record.protocol.rates]
    return [(record.protocol.rate, next(s for s in record.metrics[split] if s != "mean"))]


def _config_labels(configs: dict[str, dict]) -> dict[str, str]:
    """Config id -> row label for the configs of one method on one dataset: nothing for a
    single config; else the values that differ between them (at most three), or the id."""
    if len(configs) < 2:
        return {}
    keys = sorted({k for config in configs.values() for k in config})
    differing = [k for k in keys if len({repr(config.get(k)) for config in configs.values()}) > 1]
    if not differing or len(differing) > 3:
        return {cid: cid for cid in configs}
    labels = {cid: ", ".join(f"{k}={_short(config.get(k))}" for k in differing) for cid, config in configs.items()}
    return labels if len(set(labels.values())) == len(labels) else {cid: cid for cid in configs}


def _short(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _method_of(row_label: str) -> str:
    """The method of a row label (``"momke [1a2b3c4d]"``, ``"momke (tuned, 20 trials)"`` -> ``"momke"``)."""
    return row_label.split(" [", 1)[0].split(" (", 1)[0]


def _average_column(count: int, what: str = "conditions") -> str:
    return f"avg ({count} {what})" if what == "rates" else f"avg ({count})"


def _add(cell: Cell, value, path: str, key: tuple[int, int], sources: list) -> None:
    if value is not None and math.isfinite(value):
        cell.values.append(float(value))
        cell.runs.append(path)
        cell.keys.append(key)
        cell.sources.append(sources)


def add_significance(tables: list[Table], root: str | os.PathLike, *, baseline: str | None = None, resamples: int = 1000) -> None:
    """Mark each column's reference row and test every other row against it (see the module docstring).

    The reference is the ``baseline`` method's row of the same dataset, else the row with
    the best mean. The bootstrap needs both rows' stored predictions
    (``predictions/<key>.npz``) on identical utterances; where they are missing its p is NaN.
    """
    root = Path(root)
    cache: dict[str, dict] = {}

    def stored(path: str) -> dict | None:
        if path not in cache:
            npz = (root / path).parent.parent / "predictions" / (Path(path).stem + ".npz")
            cache[path] = read_predictions(npz) if npz.is_file() else None
        return cache[path]

    for table in tables:
        if baseline is not None and baseline not in {_method_of(m) for m, _ in table.rows}:
            raise ConfigError(f"--baseline {baseline}: no such method in the report (methods: {', '.join(sorted({_method_of(m) for m, _ in table.rows}))}).")
        for column in table.columns:
            for dataset in {d for _, d in table.rows}:
                rows = [r for r in table.rows if r[1] == dataset and column in table.cells[r] and table.cells[r][column].n]
                if len(rows) < 2:
                    continue
                if baseline is not None:
                    reference = next((r for r in rows if _method_of(r[0]) == baseline), None)
                    if reference is None:
                        continue
                else:
                    reference = rows[0]
                    for r in rows[1:]:
                        if better(table.metric, table.cells[r][column].mean, table.cells[reference][column].mean):
                            reference = r
                ref = table.cells[reference][column]
                ref.reference = True
                for row in rows:
                    if row == reference:
                        continue
                    cell = table.cells[row][column]
                    mine = dict(zip(cell.keys, zip(cell.values, cell.sources)))
                    theirs = dict(zip(ref.keys, zip(ref.values, ref.sources)))
                    matched = sorted(set(mine) & set(theirs))
                    cell.pairs = len(matched)
                    cell.p_runs = paired_permutation_p([mine[k][0] - theirs[k][0] for k in matched])
                    cell.p_bootstrap = paired_bootstrap_p(_strata(matched, mine, theirs, table.split, stored), table.metric, resamples=resamples)


def _strata(matched, mine, theirs, split: str, stored) -> list:
    """Per matched run: labels and both rows' predictions per condition, if stored for identical utterances."""
    strata = []
    for key in matched:
        pairs, labels = [], None
        for (path_a, setting_a), (path_b, setting_b) in zip(mine[key][1], theirs[key][1]):
            a, b = stored(path_a), stored(path_b)
            if a is None or b is None or setting_a not in a.get(split, {}) or setting_b not in b.get(split, {}):
                return []
            if not np.array_equal(a[split]["ids"], b[split]["ids"]):
                return []
            labels = a[split]["labels"]
            pairs.append((a[split][setting_a], b[split][setting_b]))
        strata.append((labels, pairs))
    return strata


def _markers(cell: Cell | None, alpha: float, dagger: str = "†") -> str:
    if cell is None or cell.reference:
        return ""
    return ("*" if cell.p_runs < alpha else "") + (dagger if cell.p_bootstrap < alpha else "")


def _title(table: Table) -> str:
    info = METRICS[table.metric]
    direction = "higher is better" if info.higher_is_better else "lower is better"
    return f"{table.metric} ({info.description}; {direction}), {table.split} split, {PROTOCOL_TITLES[table.protocol]}"


def _row_label(row: tuple[str, str], datasets: set) -> str:
    method, dataset = row
    return method if len(datasets) == 1 else f"{method} / {dataset}"


ALPHA = 0.05


def _permutation_floor(table: Table, alpha: float) -> str:
    """What the run count allows the * test to say: its smallest reachable p, and whether that is below alpha."""
    pairs = sorted({c.pairs for cells in table.cells.values() for c in cells.values() if c.pairs})
    if not pairs:
        return ""
    fewest = pairs[0]
    floor = smallest_permutation_p(fewest)
    runs = f"{fewest} matched runs" if len(pairs) == 1 else f"{fewest} matched runs (the fewest of any cell)"
    line = f"With {runs}, the smallest p the permutation test (*) can reach is {floor:.2g}"
    if floor >= alpha:
        needed = next(n for n in range(1, 64) if smallest_permutation_p(n) < alpha)
        return f"{line}, not below {alpha:g}: no * can appear in this table. At least {needed} matched runs (seeds × folds) are needed."
    return f"{line}."


def markdown(tables: list[Table], digits: int = 3, alpha: float = ALPHA) -> str:
    """The tables as Markdown, best mean per column in bold, significance markers (see the module docstring)."""
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
                marks = _markers(cell, alpha).replace("*", r"\*")  # escaped: next to bold ** it would read as emphasis
                out.append(f"{text} {marks}" if marks else text)
            lines.append("| " + " | ".join(out) + " |")
        if len(datasets) == 1:
            lines.append(f"\nDataset: {next(iter(datasets))}. Cells: mean ± std over seeds × folds; runs per cell in cells.csv.")
        if any(c.reference for cells in table.cells.values() for c in cells.values()):
            lines.append(
                f"\nAgainst each column's reference (the best row, or --baseline): * paired permutation test over matched "
                f"seed × fold runs, † paired bootstrap over test utterances, p < {alpha:g}; p-values in cells.csv."
            )
            lines.append(_permutation_floor(table, alpha))
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def latex(tables: list[Table], digits: int = 3, alpha: float = ALPHA) -> str:
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
                marks = _markers(cell, alpha, dagger=r"\dagger")
                text = mean if cell.n == 1 else rf"{mean} $\pm$ {cell.std:.{digits}f}"
                out.append(text + (f"$^{{{marks}}}$" if marks else ""))
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
    parts = ("mean", "std", "n", "p_runs", "p_bootstrap")
    writer.writerow(["split", "protocol", "metric", "method", "dataset"] + [f"{c} {s}" for c in columns for s in parts])
    for table in selected:
        for (method, dataset), cells in table.cells.items():
            row = [table.split, protocol, table.metric, method, dataset]
            for column in columns:
                cell = cells.get(column)
                row += [f"{cell.mean:.6f}", f"{cell.std:.6f}", cell.n, _p(cell.p_runs), _p(cell.p_bootstrap)] if cell and cell.n else ["", "", 0, "", ""]
            writer.writerow(row)
    return buffer.getvalue()


def cells_csv(tables: list[Table]) -> str:
    """Every cell with the run files it aggregates (``;``-separated, relative to the store)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["split", "protocol", "metric", "method", "dataset", "column", "mean", "std", "n", "reference", "p_runs", "p_bootstrap", "runs"])
    for table in tables:
        for (method, dataset), cells in table.cells.items():
            for column in table.columns:
                cell = cells.get(column)
                if cell is not None and cell.n:
                    writer.writerow(
                        [table.split, table.protocol, table.metric, method, dataset, column, f"{cell.mean:.6f}", f"{cell.std:.6f}", cell.n]
                        + [int(cell.reference), _p(cell.p_runs), _p(cell.p_bootstrap), ";".join(cell.runs)]
                    )
    return buffer.getvalue()


def _p(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4g}"


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


def plot_rate_curves(tables: list[Table], path: Path, protocol: str = "random") -> bool:
    """Metric against missing rate (``protocol`` random, frames or mr), one line per (method, dataset)
    with a ±std band; one panel per metric."""
    selected = [t for t in tables if t.protocol == protocol]
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
        ax.set_xlabel({"frames": "frame drop rate", "mr": "MR", "noise": "noise rate"}.get(protocol, "missing rate"))
        ax.set_ylabel(table.metric)
        ax.set_xticks([float(c) for c in rate_columns])
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(selected) :]:
        ax.set_visible(False)
    _title_and_legend(fig, axes, f"{_datasets(selected)}, {selected[0].split} split, {PROTOCOL_TITLES[protocol]}: mean ± std over seeds × folds")
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
    for ax in list(axes.flat)[len(selected) :]:
        ax.set_visible(False)
    _title_and_legend(fig, axes, f"{_datasets(selected)}, {selected[0].split} split, fixed missing conditions: mean ± std over seeds × folds")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def report_tables(root: str | os.PathLike, metrics=None, split: str = "test", *, baseline: str | None = None, resamples: int = 1000) -> list[Table]:
    """:func:`build_tables` over every run under ``root`` (rows in the order of its ``grid.yaml``
    if it has one), with significance against each column's reference (:func:`add_significance`)."""
    root = Path(root)
    runs = collect_runs(root)  # every file is read (and a bad one refused) before anything is written
    order = {}
    grid_file = root / "grid.yaml"
    if grid_file.is_file():
        order = yaml.safe_load(grid_file.read_text()) or {}
    tables = build_tables(runs, metrics, split, order)
    if not tables:
        raise ConfigError(f"{root}: none of the runs has the metric(s) {', '.join(metrics or [])} on the {split} split.")
    add_significance(tables, root, baseline=baseline, resamples=resamples)
    return tables


def write_report(
    root: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    metrics=None,
    split: str = "test",
    digits: int = 3,
    baseline: str | None = None,
    alpha: float = ALPHA,
    resamples: int = 1000,
    tables: list[Table] | None = None,
) -> dict[str, Path]:
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
    baseline : str, optional
        The method every row is tested against (default: each column's best row).
    alpha : float
        Level of the significance markers.
    resamples : int
        Bootstrap resamples.
    tables : list of Table, optional
        Tables already made by :func:`report_tables` (default: made here).

    Returns
    -------
    dict
        ``{"markdown", "latex", "cells", "fixed_csv", "random_csv", "frames_csv", "mr_csv", "noise_csv",
        "rate_curve", "frame_rate_curve", "mr_curve", "noise_curve", "conditions"}``
        -> path, for the files written.
    """
    root = Path(root)
    tables = tables if tables is not None else report_tables(root, metrics, split, baseline=baseline, resamples=resamples)
    runs = {path for table in tables for cells in table.cells.values() for cell in cells.values() for path in cell.runs}
    out = Path(out) if out else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    written = {}

    def write(key: str, name: str, text: str) -> None:
        path = out / name
        written[key] = atomic_write_text(path, text)

    header = f"# imsa report: {root}\n\n{len(runs)} runs. Each cell: mean ± std (sample std, ddof = 1) over the seeds × folds of that row; cells.csv lists the run files behind every cell.\n\n"
    write("markdown", "report.md", header + markdown(tables, digits, alpha))
    write("latex", "report.tex", latex(tables, digits, alpha))
    write("cells", "cells.csv", cells_csv(tables))
    for protocol in PROTOCOL_TITLES:
        if any(t.protocol == protocol for t in tables):
            write(f"{protocol}_csv", f"{protocol}.csv", wide_csv(tables, protocol))
    if plot_rate_curves(tables, out / "rate_curve.png"):
        written["rate_curve"] = out / "rate_curve.png"
    if plot_rate_curves(tables, out / "frame_rate_curve.png", "frames"):
        written["frame_rate_curve"] = out / "frame_rate_curve.png"
    if plot_rate_curves(tables, out / "mr_curve.png", "mr"):
        written["mr_curve"] = out / "mr_curve.png"
    if plot_rate_curves(tables, out / "noise_curve.png", "noise"):
        written["noise_curve"] = out / "noise_curve.png"
    if plot_conditions(tables, out / "conditions.png"):
        written["conditions"] = out / "conditions.png"
    return written
