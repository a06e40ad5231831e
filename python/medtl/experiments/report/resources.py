"""What the report's runs cost to train, beside a published timing table (Shin Table VII):
per configuration the training time, seconds per epoch, the time at the paper's epoch
count (linear), images per second and peak host / GPU memory, with the hardware of both
sides named. The numbers are the runs' own (`resources` in run.json, recorded by the runner:
`medtl.experiments.resources`); runs finished before the kit recorded them are counted as
such. Any study's report can call :func:`resource_section`."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from medtl.experiments.report.context import FinishedRun, ReportContext
from medtl.experiments.report.published import Table

_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*"
                       r"(?:(\d+(?:\.\d+)?)s)?\s*$")


def duration_seconds(value: float | str | None) -> float | None:
    """Seconds of a time as a paper prints it ('7m16s', '1h2m', '20h24m') or a number."""
    if value is None or isinstance(value, (int, float)):
        return value
    match = _DURATION.match(value)
    if not match or not any(match.groups()):
        return None
    h, m, s = (float(g or 0) for g in match.groups())
    return h * 3600 + m * 60 + s


def format_duration(seconds: float | None) -> str:
    """'7m16s' style (the paper's), '-' for none."""
    if seconds is None or not np.isfinite(seconds):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m}m" if h else f"{m}m{s}s"


def _key(label: str) -> str:
    return re.sub(r"[^a-z0-9]", "", label.lower())


def published_row(table: Table, label: str) -> tuple[str, list[Any]] | None:
    """The table's row for an architecture that `label` begins with (the longest such);
    'AlexNet-TL-H' -> 'AlexNet'."""
    found = [(row, values) for row, values in table.rows.items()
             if _key(label).startswith(_key(row))]
    return max(found, key=lambda rv: len(_key(rv[0]))) if found else None


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value / 1024:.2f} GB"


def configuration_resources(runs: list[FinishedRun], paper_epochs: int | None
                            ) -> dict[str, Any]:
    """Mean per run over the runs that trained and recorded `resources`; peaks are maxima."""
    rec = [r.record["resources"] for r in runs if "resources" in r.record]
    trained = [x for x in rec if x.get("trained") and x["training_seconds"] > 0]
    per_epoch = _mean([x["training_seconds"] / x["epochs"] for x in trained])
    gpu = [x["peak_gpu_memory_mb"] for x in rec if x.get("peak_gpu_memory_mb") is not None]
    return {
        "runs": len(runs), "recorded": len(rec), "trained": len(trained),
        "epochs": _mean([x["epochs"] for x in trained]),
        "training_seconds": _mean([x["training_seconds"] for x in trained]),
        "seconds_per_epoch": per_epoch,
        "paper_epochs": paper_epochs,
        "seconds_at_paper_epochs": (per_epoch * paper_epochs
                                    if per_epoch is not None and paper_epochs else None),
        "images_per_second": _mean([x["images_per_second"] for x in trained
                                    if x.get("images_per_second")]),
        "batch_size": sorted({x["batch_size"] for x in trained}),
        "peak_host_memory_mb": max((x["peak_host_memory_mb"] for x in rec), default=None),
        "peak_gpu_memory_mb": max(gpu, default=None),
        "gpu_memory_notes": sorted({x["gpu_memory_note"] for x in rec}),
        "hardware": [dict(h) for h in {_frozen(x["hardware"]) for x in rec}],
    }


def _frozen(hardware: dict[str, Any]) -> tuple:
    return tuple(sorted(hardware.items()))


def _hardware_text(hardware: dict[str, Any]) -> str:
    gpu = hardware.get("gpu") or "no GPU (CPU mode)"
    return (f"{hardware.get('cpu', 'unknown CPU')} ({hardware.get('cpus', '?')} CPUs), "
            f"{hardware.get('platform', '')}; GPU: {gpu}")


def resource_section(ctx: ReportContext, table: str | None = None
                     ) -> tuple[list[str], dict[str, Any]]:
    """(Markdown lines, report.json entry): '### Training time and memory' per
    configuration, beside the published table named `table` (e.g. 'table_vii')."""
    published = ctx.table(table) if table else None
    epochs = {c.id: c.solver.max_epochs.value for c in ctx.experiment.configurations}
    per_config = {cid: configuration_resources(runs, epochs.get(cid))
                  for cid, runs in ctx.by_configuration().items()}
    lines = ["", "### Training time and memory" + (f" (beside {published.source})"
                                                    if published else ""), "",
             "Per run, mean over the configuration's runs: training time (the epochs' "
             "iterations, validation and snapshots), that time scaled linearly to the "
             "configuration's epochs in the paper, training images per second (iterations x "
             "batch / training time), peak memory (maxima over the runs).", "",
             "| configuration | runs | epochs | training time | s / epoch | at the paper's "
             "epochs | images / s | peak host memory | peak GPU memory | published |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for cid, r in per_config.items():
        label = ctx.labels.get(cid, cid)
        runs = f"{r['runs']}" + (f" ({r['recorded']} recorded)" if r["recorded"] < r["runs"]
                                 else "")
        at_paper = format_duration(r["seconds_at_paper_epochs"]) + (
            f" ({r['paper_epochs']})" if r["seconds_at_paper_epochs"] is not None else "")
        cells = [label, runs, _num(r["epochs"], "g"), format_duration(r["training_seconds"]),
                 _num(r["seconds_per_epoch"], ".2f"), at_paper,
                 _num(r["images_per_second"], ".1f"), _mb(r["peak_host_memory_mb"]),
                 _mb(r["peak_gpu_memory_mb"]), _published_cell(published, label)]
        lines.append(f"| {' | '.join(cells)} |")
    lines += ["", *_hardware_lines(per_config, published)]
    summary = {"configurations": per_config,
               "published": ({"table": published.name, "source": published.source,
                              "hardware": published.hardware, "rows": published.rows}
                             if published else None)}
    return lines, summary


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _published_cell(published: Table | None, label: str) -> str:
    row = published_row(published, label) if published else None
    if published is None or row is None:
        return "-"
    return f"{row[0]}: " + ", ".join(_published_value(m, v) for m, v in
                                     zip(published.metrics, row[1], strict=True))


def _published_value(metric: str, value: Any) -> str:
    if metric.endswith("_gb") and isinstance(value, (int, float)):
        return f"{value:g} GB"
    return "-" if value is None else str(value)


def _hardware_lines(per_config: dict[str, dict[str, Any]], published: Table | None
                    ) -> list[str]:
    hardware = {_frozen(h): h for r in per_config.values() for h in r["hardware"]}
    notes = sorted({n for r in per_config.values() for n in r["gpu_memory_notes"]})
    lines = [f"Measured on: {'; '.join(_hardware_text(h) for h in hardware.values())}."
             if hardware else "Measured on: not recorded (runs finished before the kit "
                              "recorded resources)."]
    if notes:
        lines.append(f"Peak GPU memory: {'; '.join(notes)}. Peak host memory: ru_maxrss of "
                     "the process that trained, over its whole life.")
    if published:
        lines.append(f"Published ({published.source}): {published.description}"
                     + (f" Hardware: {published.hardware}." if published.hardware else ""))
        lines += [f"- {n}" for n in published.notes]
    return lines
