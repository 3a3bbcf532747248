"""One table of imsa's CPU per epoch against each method's released code, from the side-by-side
benchmarks under ``benchmarks/reference/`` (each writes ``benchmarks/results/<method>_released.json``),
and one table of what an epoch costs at CMU-MOSEI's scale, from ``method_speed.json`` (CPU) and
``method_speed_cuda.json`` (GPU).

Per epoch, each side is charged what its trainer runs in an epoch of the protocol: training and
validation, plus, for the released trainers that score the test split after every epoch, that
pass (imsa scores test once, after selecting the epoch on validation). Per whole protocol, where
a benchmark measured one (a whole run, or every model a protocol needs), its CPU seconds.

A method whose side-by-side benchmark has not been written or run yet gets a row that says
so; nothing is estimated. Written to ``benchmarks/results/speed_vs_released.{json,md}``.

    python benchmarks/speed_vs_released.py
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = (
    "cmad",
    "gcnet",
    "mmin",
    "momke",
    "mult",
    "dicmor",
    "imder",
    "lnln",
    "tfn",
    "lmf",
    "mmim",
    "misa",
    "self_mm",
    "tetfn",
    "almt",
    "tfr_net",
    "cenet",
    "hme",
    "mplmm",
    "prmf",
)
SOURCES = {"momke": "momke_epoch_released"}  # a method whose side-by-side result has another name


def rows_of(method: str) -> list[dict]:
    """The per-setting speed rows of a method's side-by-side result, or none."""
    name = SOURCES.get(method, f"{method}_released")
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return []
    report = json.loads(path.read_text())
    rows = []
    for setting, row in report.get("rates", {}).items():
        released, imsa = row["released"], row["imsa"]
        released_epoch = released["train_cpu_s_per_epoch"] + released["valid_cpu_s_per_epoch"]
        with_test = released_epoch + released["test_cpu_s_per_epoch"]
        protocol = row.get("protocol")
        rows.append(
            {
                "method": method,
                "setting": row.get("label") or f"rate {setting}, fold {report['fold']}, seed {report['seed']}, {report['epochs']} epochs",
                "released_cpu_s_per_epoch": round(released_epoch, 3),
                "released_test_pass_cpu_s_per_epoch": round(released["test_cpu_s_per_epoch"], 3),
                "imsa_cpu_s_per_epoch": round(imsa["epoch_cpu_s"], 3),
                "ratio": round(imsa["epoch_cpu_s"] / released_epoch, 2),
                "ratio_with_test_pass": round(imsa["epoch_cpu_s"] / with_test, 2),
                "released_process_cpu_s": released.get("process_cpu_s") and round(released["process_cpu_s"], 1),
                "imsa_process_cpu_s": imsa.get("total_cpu_s") and round(imsa["total_cpu_s"], 1),
                "protocol": protocol,
                "source": f"benchmarks/results/{name}.md",
            }
        )
    return rows


def mosei_scale() -> list[dict]:
    """Per method: the CPU epoch extrapolated to MOSEI's training split along the measured sizes,
    and the GPU epoch measured there, with how each grows."""
    cpu_report, gpu_report = (
        json.loads(p.read_text()) if p.is_file() else {"rows": [], "scaling": {}} for p in (RESULTS / "method_speed.json", RESULTS / "method_speed_cuda.json")
    )
    out = []
    for name in sorted(set(cpu_report["scaling"]) | set(gpu_report["scaling"])):
        cpu_scaling, gpu_scaling = cpu_report["scaling"].get(name) or {}, gpu_report["scaling"].get(name) or {}
        gpu_rows = sorted((r for r in gpu_report["rows"] if r["method"] == name and "error" not in r), key=lambda r: r["train_utterances"])
        cpu_rows = [r for r in cpu_report["rows"] if r["method"] == name and "error" not in r]
        cpu_sizes = sorted(r["train_utterances"] for r in cpu_rows)
        overrides = {k: v for r in cpu_rows + gpu_rows for k, v in r["overrides"].items()}
        out.append(
            {
                "method": name,
                "overrides": overrides,
                "cpu_sizes": cpu_sizes,
                "cpu_s_per_1000": cpu_scaling.get("s_per_1000_train_utterances"),
                "cpu_marginal_s_per_1000": cpu_scaling.get("marginal_s_per_1000_train_utterances"),
                "cpu_mosei_epoch_s_extrapolated": cpu_scaling.get("mosei_epoch_s_extrapolated"),
                "cpu_peak_rss_mib_extrapolated": cpu_scaling.get("peak_mib_extrapolated"),
                "gpu_sizes": [r["train_utterances"] for r in gpu_rows],
                "gpu_fit_wall_s": [r["fit_wall_s"] for r in gpu_rows],
                "gpu_train_s": [round(sum(r["phase_seconds"].values()), 2) for r in gpu_rows],
                "gpu_peak_mib": [r["peak_gpu_mib"] for r in gpu_rows],
                "gpu_s_per_1000": gpu_scaling.get("s_per_1000_train_utterances"),
            }
        )
    return out


def cpu(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.1f}"


def series(values, fmt: str = "{:.2f}") -> str:
    return " → ".join(fmt.format(v) for v in values) if values else "not measured"


def main() -> None:
    rows, missing = [], []
    for method in METHODS:
        found = rows_of(method)
        rows += found
        if not found:
            missing.append(method)
    scale = mosei_scale()
    (RESULTS / "speed_vs_released.json").write_text(json.dumps({"rows": rows, "not_measured": missing, "mosei_scale": scale}, indent=2) + "\n")
    lines = [
        "# CPU per epoch: imsa against the released code",
        "",
        "Generated by `python benchmarks/speed_vs_released.py` from the side-by-side benchmarks under `benchmarks/reference/`. "
        "One thread each, the same data, epochs and batch size; an epoch is training plus validation (the released "
        "trainers that also score the test split every epoch have that pass in its own column). `ratio` is imsa over "
        "released: below 1 imsa is faster; `with test pass` charges the released side the test pass its trainer runs "
        "every epoch (imsa scores test once, after choosing the epoch on validation), so it is the ratio over a whole "
        "run of the protocol. `process CPU s`: a whole run, where the benchmark ran the released trainer itself.",
        "",
        "| method | setting | released CPU s/epoch | released test pass s/epoch | imsa CPU s/epoch | ratio | ratio with test pass | released process CPU s | imsa process CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['setting']} | {r['released_cpu_s_per_epoch']:.3f} | {r['released_test_pass_cpu_s_per_epoch']:.3f} | "
            f"{r['imsa_cpu_s_per_epoch']:.3f} | {r['ratio']:.2f} | {r['ratio_with_test_pass']:.2f} | "
            f"{cpu(r['released_process_cpu_s'])} | {cpu(r['imsa_process_cpu_s'])} |"
        )
    protocols = [r for r in rows if r["protocol"]]
    if protocols:
        lines += [
            "",
            "Per whole protocol, where the released code trains more models than imsa:",
            "",
            "| method | protocol | released CPU s | imsa CPU s | ratio | how |",
            "|---|---|---|---|---|---|",
        ]
        for r in protocols:
            p = r["protocol"]
            lines.append(
                f"| {r['method']} | {p['name']} | {p['released_cpu_s']:.1f} | {p['imsa_cpu_s']:.1f} | {p['imsa_cpu_s'] / p['released_cpu_s']:.2f} | {p['how']} |"
            )
    if missing:
        lines += ["", f"Not measured side by side yet: {', '.join(missing)}."]
    lines += [
        "",
        "**At CMU-MOSEI's scale.** One epoch of every phase (training and validation) on synthetic data of MOSEI's shapes (`benchmarks/method_speed.py`; "
        "50 aligned steps, widths 768 / 74 / 35, each method's defaults). CPU: one thread, measured at the sizes given and "
        "extrapolated to MOSEI's 16,326 training utterances along the last marginal cost (`method_speed.md`); the cost per "
        "1,000 training utterances at each size shows the growth (equal values: linear; falling values: a fixed cost "
        "spread over more data). GPU: an H200, measured at the sizes given, the largest being MOSEI's split "
        "(`method_speed_cuda.md`; `fit` includes the per-fit fixed costs, `train` the epochs alone; peak memory includes "
        "the whole generated dataset, which imsa keeps on the device).",
        "",
        "| method | CPU sizes | CPU s per 1,000 utterances | CPU s per MOSEI epoch (extrapolated) | peak RSS MiB at MOSEI (extrapolated) | GPU sizes | GPU fit wall s | GPU epoch s | peak GPU MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in scale:
        lines.append(
            f"| {s['method']}{''.join(f' ({k}={v!r})' for k, v in s['overrides'].items())} | {series(s['cpu_sizes'], '{:,}')} | {series(s['cpu_s_per_1000'])} | {cpu(s['cpu_mosei_epoch_s_extrapolated'])} | "
            f"{cpu(s['cpu_peak_rss_mib_extrapolated'])} | {series(s['gpu_sizes'], '{:,}')} | {series(s['gpu_fit_wall_s'])} | "
            f"{series(s['gpu_train_s'])} | {series(s['gpu_peak_mib'], '{:,.0f}')} |"
        )
    (RESULTS / "speed_vs_released.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
