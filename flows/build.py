"""build-geopixeld: imagery and labels in, a published GeoPixelD-style dataset out.

The flow runs the stages of ``flows.stages`` as sub-flows, then checks and reports:

    prepare ──▶ describe ──▶ validate ──▶ export ──▶ publish (with a store) ──▶ report

It takes the parameters of the command line (``geopixeld build``) and runs the same library code.
What it adds is orchestration: images and tile batches are mapped tasks on a thread pool or a Dask
cluster (``runner``); transient failures are retried; every finished task is cached by the content
of its inputs with its result kept under ``OUT/.prefect-results``, so a run that crashed or was
cancelled, run again, redoes nothing that finished; describe batches take a slot of the global
concurrency limit ``lmm-api``; and every run, even a failed one, leaves a report: ``OUT/report/``
(``summary.md``, ``run.json``, PNG plots) and the same as artifacts in the Prefect UI.

Run it locally (a temporary Prefect server is started when ``PREFECT_API_URL`` is not set)::

    python -m flows.build                 # the bundled iSAID sample, offline, into build/geopixeld/isaid

or deploy it (``make serve``) and run ``prefect deployment run 'build-geopixeld/local' --watch``.
"""

from __future__ import annotations

if __name__ == "__main__":
    # ``python -m flows.build`` is an entry point: keep Prefect local, before prefect is imported.
    from flows.environment import prefect_defaults

    prefect_defaults()

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.artifacts import publish_artifacts, write_report
from flows.runners import check_runner, shared_scheduler
from flows.stages import (
    DEFAULT_FORMATS,
    DEFAULT_RATIOS,
    DESCRIBE_DEFAULTS,
    PREPARE_DEFAULTS,
    absolute,
    describe_stage,
    export_stage,
    prepare_stage,
    publish_stage,
    source_list,
)
from flows.tasks import validate_samples


@task(name="report-run", cache_policy=NO_CACHE)
def report_run(out_dir: str, run: dict[str, Any]) -> str:
    """Write ``OUT/report/`` and show it as artifacts in the UI; returns the summary's path."""
    report = write_report(out_dir, run)
    publish_artifacts(report, run)
    return str(report.summary_md)


def _report(out_dir: str, run: dict[str, Any]) -> None:
    """Report the run; a failed report fails a good run, but never hides the error of a failed one."""
    try:
        run["report"] = report_run(out_dir, run)
        get_run_logger().info("run summary: %s", run["report"])
    except Exception:
        if run["status"] == "completed":
            raise
        get_run_logger().exception("could not write the report of the failed run")


@flow(name="build-geopixeld", log_prints=True)
def build_geopixeld(
    source: list[str] | str,
    out: str,
    format: str = PREPARE_DEFAULTS.format,
    tile_size: int = PREPARE_DEFAULTS.tile_size,
    overlap: int = PREPARE_DEFAULTS.overlap,
    base_url: str | None = None,
    model: str | None = None,
    concurrency: int = DESCRIBE_DEFAULTS.concurrency,
    prompts: str | None = None,
    formats: list[str] | None = None,
    store: str | None = None,
    name: str = "geopixeld",
    version: str = "0.1.0",
    batch_tiles: int = DESCRIBE_DEFAULTS.batch_tiles,
    prepare_options: dict[str, Any] | None = None,
    describe_options: dict[str, Any] | None = None,
    export_options: dict[str, Any] | None = None,
    runner: str = "threads",
    dask_address: str | None = None,
    workers: int = 2,
    dry_run: bool = False,
    instances_per_call: int = 1,
    batch: bool = False,
) -> dict[str, Any]:
    """Build a GeoPixelD-style dataset: prepare, describe, validate, export and (with a store) publish.

    Args:
        source: images, folders or annotation files, as for ``geopixeld prepare``: one path or a list
            (relative paths are taken from the working directory of the flow run: the repository root for
            deployments).
        out: the output folder (OUT): tiles, tables, samples, ``export/`` and ``report/``.
        format: annotation format: isaid, coco, dota, boxes, geojson or raster.
        tile_size: tile side in px (800 as iSAID/GeoPixelD; 0 keeps whole images up to 4096 px).
        overlap: px shared by neighbouring tiles (200 as iSAID).
        base_url: OpenAI-compatible LMM endpoint; none starts the embedded offline describer on 127.0.0.1.
        model: LMM model name (default: the offline describer's).
        concurrency: LMM requests in flight at once per describe batch.
        prompts: prompt set name under ``prompts/`` or a folder (default geopixeld-v1).
        formats: export formats: any of gcg-parquet, coco, geopixel, glamm, geo (default: all of them).
        store: release store, a local folder or an fsspec URL; none skips publishing.
        name: release name.
        version: release version, MAJOR.MINOR.PATCH.
        batch_tiles: tiles per describe task.
        prepare_options: any other ``PrepareConfig`` field, e.g. ``{"min_area": 20}``.
        describe_options: any other ``DescribeConfig`` field, e.g. ``{"max_retries": 2}`` or
            ``{"policy": "all-instances"}``.
        export_options: any other ``pipeline.export.export`` argument, e.g. ``{"max_severity": "warning"}``.
        runner: task runner: ``threads`` or ``dask``.
        dask_address: an existing Dask scheduler (``tcp://host:8786``); none starts a local cluster of
            ``workers`` processes on 127.0.0.1 (runner ``dask`` only).
        workers: threads, or local Dask worker processes.
        dry_run: prepare, then only count what describe would send (calls, tokens, price per tier, whole
            dataset and per 1,000 tiles) and stop: nothing is sent, validated, exported or published.
        instances_per_call: marked objects of one tile per LMM request (1: one per call, as the paper).
        batch: send describe's requests through the OpenAI Batch API (half price, within 24 h).
    """
    check_runner(runner)
    out_dir = absolute(out)
    describe_options = {
        **(describe_options or {}),
        **({"instances_per_call": instances_per_call} if instances_per_call != 1 else {}),
        **({"batch": True} if batch else {}),
    }
    if dry_run:
        with shared_scheduler(runner, dask_address, workers) as address:
            prepared = prepare_stage(
                source, out_dir, format, tile_size, overlap, prepare_options,
                runner=runner, dask_address=address, workers=workers,
            )  # fmt: skip
        planned = describe_stage(
            out_dir, base_url, model, concurrency, prompts, batch_tiles, describe_options, dry_run=True
        )
        return {"out_dir": out_dir, "dry_run": True, "prepare": prepared.get("text"), **planned}
    export_dir = str(Path(out_dir) / "export")
    run: dict[str, Any] = {
        "out_dir": out_dir,
        "flow_run": {"name": flow_run.name, "id": flow_run.id, "url": flow_run.ui_url},
        "parameters": {
            "source": source_list(source),
            "format": format,
            "tile_size": tile_size,
            "overlap": overlap,
            "base_url": base_url,
            "model": model,
            "runner": runner,
            "store": store,
            "release": f"{name}=={version}",
        },
        "status": "running",
        "errors": [],
    }
    try:
        with shared_scheduler(runner, dask_address, workers) as address:
            run["prepare"] = prepare_stage(
                source, out_dir, format, tile_size, overlap, prepare_options,
                runner=runner, dask_address=address, workers=workers,
            )  # fmt: skip
            run["describe"] = describe_stage(
                out_dir, base_url, model, concurrency, prompts, batch_tiles, describe_options,
                runner=runner, dask_address=address, workers=workers,
            )  # fmt: skip
        run["this_run"] = {**run["prepare"]["this_run"], **run["describe"]["this_run"]}
        run["validation"] = validate_samples(out_dir)
        run["export"] = export_stage(
            out_dir,
            formats or DEFAULT_FORMATS,
            export_dir,
            DEFAULT_RATIOS,
            name=name,
            export_options=export_options,
        )
        if store:
            run["publish"] = publish_stage(export_dir, store, name, version)
        run["status"] = "completed"
    except Exception as exc:
        run["status"] = "failed"
        run["errors"].append(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if run["status"] != "running":  # not when the run is being cancelled or killed
            _report(out_dir, run)
    return {
        "out_dir": out_dir,
        "samples": str(Path(out_dir) / "samples.parquet"),
        "export_dir": export_dir,
        "release": run.get("publish"),
        "report": run["report"],
        "this_run": run["this_run"],
        "flags": run["validation"]["flags"],
    }


if __name__ == "__main__":
    # The bundled iSAID sample, offline, through to a release in a local store.
    result = build_geopixeld(
        source=["tests/data/isaid"],
        out="build/geopixeld/isaid",
        format="isaid",
        store="build/geopixeld/releases",
        name="geopixeld-isaid",
    )
    print(result)
