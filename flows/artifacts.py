"""Run reports: a Markdown summary and plots, written under ``OUT/report/`` and shown in the Prefect UI.

:func:`write_report` needs no Prefect: from the run's summaries (a plain dict, see below) and the
prepared tables it writes

* ``summary.md``: counts; flags by code and severity; when the output folder has review decisions
  (``review.sqlite``), the review calibration per flag code (:mod:`pipeline.calibration`); LMM calls, tokens and estimated cost (for the
  dataset, and what this run sent); the export and the release; every skipped input with its reason;
* ``run.json``: the same dict;
* ``instances_per_category.png``, ``instance_sizes.png`` (visible area in px, by size class, log
  scale) and ``flags_per_code.png`` (matplotlib, Agg, no display needed).

:func:`publish_artifacts` shows the same in the Prefect UI from inside a task: the summary as a
Markdown artifact with the plots embedded as ``data:image/png;base64`` images, and the flags and the
skipped inputs as table artifacts.

The run dict has the keys ``out_dir``, ``flow_run`` (``name``, ``id``, ``url``), ``prepare``
(``pipeline.prepare_report.PrepareSummary`` as a dict), ``describe`` (``DescribeSummary`` as a dict),
``this_run`` (batches and requests of this run), ``validation``, ``export``, ``publish`` and
``errors``; any of them may be missing or ``None`` when the run stopped early.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from matplotlib.figure import Figure

#: Sub-folder of OUT holding the report.
REPORT_DIR = "report"
#: Artifact keys (lowercase letters, digits and dashes, as Prefect requires).
SUMMARY_KEY = "geopixeld-summary"
FLAGS_KEY = "geopixeld-flags"
SKIPPED_KEY = "geopixeld-skipped"
SEVERITY_COLOURS = {"error": "#c0392b", "warning": "#e67e22", "info": "#2e86c1"}
SIZE_CLASSES = ("small", "medium", "large")
MAX_LISTED_SKIPS = 50


@dataclass
class RunReport:
    """The files of a run report.

    Attributes:
        folder: ``OUT/report``.
        summary_md: the Markdown summary (plots linked as relative files).
        run_json: the run dict as JSON.
        plots: plot name → PNG path, for the plots that had data.
        markdown: the summary text with plots linked relatively (what ``summary_md`` holds).
    """

    folder: Path
    summary_md: Path
    run_json: Path
    plots: dict[str, Path] = field(default_factory=dict)
    markdown: str = ""


# -- plots --------------------------------------------------------------------------------------------


def _save(fig: Figure, png: Path) -> Path:
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    return png


def plot_instances_per_category(instances: Path, png: Path) -> Path | None:
    """Horizontal bars: instances per category (``instances.parquet``), most frequent on top."""
    if not instances.exists():
        return None
    names = pq.read_table(instances, columns=["category_name"]).column("category_name").to_pylist()
    if not names:
        return None
    labels, counts = np.unique(np.array(names, dtype=object), return_counts=True)
    order = np.argsort(counts)
    fig = Figure(figsize=(7, max(2.4, 0.35 * len(labels) + 1.2)))
    ax = fig.subplots()
    ax.barh([str(x) for x in labels[order]], counts[order], color="#2e86c1")
    for y, n in enumerate(counts[order]):
        ax.annotate(str(n), (n, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.margins(x=0.12)
    ax.set_xlabel("instances")
    ax.set_title(f"Instances per category ({len(names)} in all)")
    return _save(fig, png)


def plot_instance_sizes(instances: Path, png: Path) -> Path | None:
    """Histogram of visible instance areas (px, log scale), stacked by size class."""
    if not instances.exists():
        return None
    table = pq.read_table(instances, columns=["area", "size_class"]).to_pydict()
    areas = np.asarray(table["area"], dtype=float)
    if areas.size == 0:
        return None
    classes = np.asarray(table["size_class"], dtype=object)
    bins = np.logspace(np.log10(max(areas.min(), 1.0)), np.log10(max(areas.max(), 2.0)), 30)
    groups = [areas[classes == c] for c in SIZE_CLASSES]
    fig = Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    ax.hist(
        groups,
        bins=bins.tolist(),
        stacked=True,
        label=list(SIZE_CLASSES),
        color=["#85c1e9", "#2e86c1", "#1b4f72"],
    )
    ax.set_xscale("log")
    ax.set_xlabel("visible area (px)")
    ax.set_ylabel("instances")
    ax.set_title("Instance size distribution")
    ax.legend(title="size class")
    return _save(fig, png)


def plot_flags_per_code(flags: list[dict[str, Any]], png: Path) -> Path | None:
    """Bars: validation flags per code, coloured by severity (``[{code, severity, count}]``)."""
    if not flags:
        return None
    rows = sorted(flags, key=lambda f: f["count"])
    fig = Figure(figsize=(7, max(2.4, 0.35 * len(rows) + 1.2)))
    ax = fig.subplots()
    ax.barh(
        [f["code"] for f in rows],
        [f["count"] for f in rows],
        color=[SEVERITY_COLOURS.get(f["severity"], "grey") for f in rows],
    )
    for y, f in enumerate(rows):
        ax.annotate(
            f"{f['count']} ({f['severity']})",
            (f["count"], y),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.margins(x=0.2)
    ax.set_xlabel("flags")
    ax.set_title("Validation flags per code")
    return _save(fig, png)


# -- summary ------------------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(cell(v) for v in r) + " |" for r in rows),
    ]


def summary_markdown(run: Mapping[str, Any], images: Mapping[str, str] | None = None) -> str:
    """The run summary in Markdown; ``images`` maps plot names to image sources (paths or data URLs)."""
    prep = run.get("prepare") or {}
    desc = run.get("describe") or {}
    val = run.get("validation") or {}
    this = run.get("this_run") or {}
    fr = run.get("flow_run") or {}
    lines = [f"# GeoPixelD build: `{run.get('out_dir', '?')}`", ""]
    if fr:
        url = str(fr.get("url") or "")
        link = f"[{fr.get('name')}]({url})" if url.startswith("http") else f"`{fr.get('name')}`"
        lines += [f"Flow run {link}, status **{run.get('status', 'unknown')}**.", ""]
    for err in run.get("errors") or []:
        lines += [f"> **Error:** {err}", ""]

    lines += ["## Counts", ""]
    counts: list[list[Any]] = []
    if prep:
        counts += [
            [
                "images",
                f"{prep['images']} ({prep['images_ok']} prepared, {prep['images_reused']} reused, "
                f"{prep['images_failed']} failed)",
            ],
            ["tiles", prep["tiles"]],
            ["instances", f"{prep['instances']} ({prep['marks']} marked), clusters {prep['clusters']}"],
        ]
    if desc:
        counts.append(
            ["samples", f"{desc['samples']} (grounded phrases {desc['phrases']}, flagged {desc['flagged']})"]
        )
    if val:
        sev = ", ".join(f"{k} {v}" for k, v in sorted(val.get("samples_by_severity", {}).items()))
        counts.append(["samples by worst flag", sev or "none"])
    exp = run.get("export")
    if exp:
        counts.append(["export", f"`{exp.get('export_dir')}`"])
    pub = run.get("publish")
    if pub:
        again = " (already published, unchanged)" if pub.get("already_published") else ""
        counts.append(["release", f"`{pub['name']}=={pub['version']}` at `{pub['location']}`{again}"])
    lines += _table(["", "value"], counts) if counts else ["(nothing was counted)"]

    lines += ["", "## Flags by code", ""]
    flags = val.get("flags") or []
    lines += (
        _table(["code", "severity", "count"], [[f["code"], f["severity"], f["count"]] for f in flags])
        if flags
        else ["No flags."]
    )

    cal = run.get("calibration") or {}
    if cal.get("markdown"):
        lines += ["", "## Review calibration", "", cal["markdown"]]

    fid = desc.get("fidelity") or {}
    if fid:
        lines += ["", f"## GeoPixelD fidelity (policy `{desc.get('policy', '?')}`)", ""]
        from pipeline.fidelity import rows as fidelity_rows

        lines += _table(["", "this dataset", "GeoPixelD"], fidelity_rows(fid))

    lmm = desc.get("lmm") or {}
    if lmm:
        lines += [
            "",
            "## LMM calls",
            "",
            f"Model `{desc.get('model')}` at {desc.get('base_url')}, prompts `{desc.get('prompt_version')}`.",
            "",
        ]
        lines += _table(
            [
                "",
                "calls",
                "sent",
                "cached",
                "failed",
                "attempts",
                "tokens in",
                "tokens out",
                "est. cost (USD)",
            ],
            [
                [
                    "dataset",
                    lmm.get("calls"),
                    lmm.get("sent"),
                    lmm.get("cached"),
                    lmm.get("failed"),
                    lmm.get("attempts"),
                    f"{lmm.get('input_tokens', 0):,}",
                    f"{lmm.get('output_tokens', 0):,}",
                    f"{lmm.get('cost_usd', 0.0):.4f}",
                ]
            ],
        )
        if lmm.get("note"):
            lines += ["", f"Cost: {lmm['note']}."]
    if this:
        lines += [
            "",
            f"This run: {this.get('batches_run', 0)} of {this.get('batches', 0)} describe batches ran "
            f"({this.get('batches_cached', 0)} reused from the Prefect cache), {this.get('lmm_sent', 0)} LMM "
            f"requests sent, tokens in {this.get('input_tokens', 0):,} / "
            f"out {this.get('output_tokens', 0):,}; "
            f"{this.get('images_cached', 0)} of {this.get('images', 0)} images reused from the cache.",
        ]
        if this.get("batches_failed"):
            lines += [
                "",
                f"**{this['batches_failed']} batches had failed LMM calls** (flagged `lmm_failed`); "
                "run again to retry just those.",
            ]

    skipped = prep.get("skipped") or []
    lines += ["", "## Skipped inputs", ""]
    if skipped:
        lines += [f"{len(skipped)} skipped."]
        by_reason = prep.get("skipped_by_reason") or {}
        if by_reason:
            lines += [""] + _table(
                ["reason", "count"], [[k, v] for k, v in sorted(by_reason.items(), key=lambda kv: -kv[1])]
            )
        lines += [""] + _table(
            ["path", "stage", "kind", "reason"],
            [
                [s.get("path"), s.get("stage"), s.get("kind"), s.get("reason")]
                for s in skipped[:MAX_LISTED_SKIPS]
            ],
        )
        if len(skipped) > MAX_LISTED_SKIPS:
            lines += ["", f"... {len(skipped) - MAX_LISTED_SKIPS} more in `prepare_report.json`."]
    else:
        lines += ["None."]

    if images:
        lines += ["", "## Plots", ""]
        for name, src in images.items():
            lines += [f"![{name.replace('_', ' ')}]({src})", ""]
    if exp and exp.get("text"):
        lines += ["## Export", "", "```", exp["text"], "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def review_calibration(out_dir: str | Path) -> dict[str, Any] | None:
    """The review calibration of ``out_dir`` (its ``review.sqlite`` decisions) as a dict with its Markdown, or
    None when there are no decisions or they cannot be read (the report says nothing then)."""
    from pipeline.calibration import calibrate
    from pipeline.export.decisions import DEFAULT_DB_NAME, DecisionsError

    out = Path(out_dir)
    if not (out / DEFAULT_DB_NAME).is_file() or not (out / "samples.parquet").is_file():
        return None
    try:
        report = calibrate(out)
    except (DecisionsError, ValueError, OSError):
        return None
    return {**report.as_dict(), "markdown": report.markdown()} if report.reviewed else None


def write_report(out_dir: str | Path, run: Mapping[str, Any]) -> RunReport:
    """Write ``OUT/report/`` (see the module docstring) and return its files."""
    out = Path(out_dir)
    folder = out / REPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    instances = out / "instances.parquet"
    flags = (run.get("validation") or {}).get("flags") or []
    made = {
        "instances_per_category": plot_instances_per_category(
            instances, folder / "instances_per_category.png"
        ),
        "instance_sizes": plot_instance_sizes(instances, folder / "instance_sizes.png"),
        "flags_per_code": plot_flags_per_code(flags, folder / "flags_per_code.png"),
    }
    plots = {k: v for k, v in made.items() if v is not None}
    if "calibration" not in run:
        run = {**run, "calibration": review_calibration(out)}
    markdown = summary_markdown(run, {k: p.name for k, p in plots.items()})
    summary_md = folder / "summary.md"
    summary_md.write_text(markdown)
    run_json = folder / "run.json"
    run_json.write_text(json.dumps(run, indent=1, default=str))
    return RunReport(folder, summary_md, run_json, plots, markdown)


def data_url(png: Path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URL (shown inline by the Prefect UI)."""
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def publish_artifacts(report: RunReport, run: Mapping[str, Any]) -> dict[str, str]:
    """Create the run's Prefect artifacts (inside a flow or task run); returns key → artifact id."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    ids: dict[str, str] = {}
    markdown = summary_markdown(run, {k: data_url(p) for k, p in report.plots.items()})
    ids[SUMMARY_KEY] = str(
        create_markdown_artifact(
            markdown, key=SUMMARY_KEY, description=f"GeoPixelD build summary; files in {report.folder}"
        )
    )
    flags = (run.get("validation") or {}).get("flags") or []
    ids[FLAGS_KEY] = str(
        create_table_artifact(
            flags or [{"code": "none", "severity": "", "count": 0}],
            key=FLAGS_KEY,
            description="Validation flags per code",
        )
    )
    skipped = (run.get("prepare") or {}).get("skipped") or []
    rows = [{k: s.get(k) for k in ("path", "stage", "kind", "reason")} for s in skipped]
    ids[SKIPPED_KEY] = str(
        create_table_artifact(
            rows or [{"path": "", "stage": "", "kind": "", "reason": "nothing skipped"}],
            key=SKIPPED_KEY,
            description="Inputs skipped by prepare, with the reason",
        )
    )
    return ids
