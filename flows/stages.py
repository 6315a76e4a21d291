"""The four stages as flows of their own, so a team can rerun just one: prepare, describe, export, publish.

Each is deployed on its own (``prefect.yaml``: ``prepare/local``, ``describe/local``...) and is also what
``build-geopixeld`` runs as a sub-flow. They share one output folder OUT:

* ``prepare``: finds the images in ``source`` and maps ``prepare-image`` over them (tiles, set-of-marks,
  part tables under ``OUT/parts/``), then merges the tables and writes ``prepare_report.json``;
* ``describe``: maps ``describe-batch`` over batches of prepared tiles, talking to ``base_url`` or to the
  embedded offline describer started in this flow's process, then writes ``samples.parquet``,
  ``lmm_calls.parquet`` and ``describe_report.json``;
* ``export``: writes the export folder (``OUT/export`` by default) in the requested formats;
* ``publish``: publishes an export folder as ``name==version`` in a release store.

Mapped tasks run on the task runner named by ``runner`` (``threads`` or ``dask``, see
``flows.runners``); a progress artifact follows them in the UI while the stage runs. Every task result
is persisted under ``OUT/.prefect-results``, so a rerun finds what already finished (``Cached`` in the
UI) and runs only the rest; a cached result whose files were deleted since is run again.

Run one stage by hand on the bundled DOTA sample: ``python -m flows.stages prepare`` (then
``describe``, ``export``, ``publish``), or through its deployment: ``prefect deployment run
'describe/local' --param out=build/geopixeld/isaid``.
"""

from __future__ import annotations

if __name__ == "__main__":
    # ``python -m flows.stages`` is an entry point: keep Prefect local, before prefect is imported.
    from flows.environment import prefect_defaults

    prefect_defaults()

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect import Flow, Task, flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import PrefectFuture, as_completed
from prefect.states import State
from prefect.task_runners import TaskRunner

from flows.runners import task_runner
from flows.tasks import (
    LMM_LIMIT,
    OFFLINE_ENDPOINT,
    BatchReceipt,
    describe_tile_batch,
    discover_images,
    export_dataset,
    for_output,
    list_tile_batches,
    lmm_endpoint,
    lmm_limit_exists,
    merge_prepared,
    missing_outputs,
    prepare_one_image,
    publish_release,
    release_exists,
    write_descriptions,
)
from pipeline.batchmode import fill_batches
from pipeline.config import PrepareConfig
from pipeline.describe import DescribeConfig
from pipeline.dryrun import dry_run as plan_cost
from pipeline.export import DEFAULT_RATIOS as EXPORT_RATIOS
from pipeline.export import FORMATS as EXPORT_FORMATS

#: The library's defaults (config models and ``pipeline.export``), defined there once.
PREPARE_DEFAULTS = PrepareConfig()
DESCRIBE_DEFAULTS = DescribeConfig()
DEFAULT_FORMATS = list(EXPORT_FORMATS)
DEFAULT_RATIOS = list(EXPORT_RATIOS)


def absolute(path: str | Path) -> str:
    """``path`` made absolute against the flow run's working directory (tasks may run elsewhere)."""
    return str(Path(path).expanduser().resolve())


# -- running mapped tasks -----------------------------------------------------------------------------


@dataclass
class Outcome:
    """How one mapped task ended, and its value (a report or receipt, also from a ``Failed`` state)."""

    value: Any
    cached: bool
    failed: bool


def _outcome(future: PrefectFuture[Any]) -> Outcome:
    state = future.state
    if not state.is_final():
        future.wait()
        state = future.state
    value = state.result(raise_on_failure=False)
    if isinstance(value, BaseException):
        raise value
    return Outcome(value, cached=state.name == "Cached", failed=state.is_failed())


def run_mapped(
    runner: TaskRunner[Any], task_: Task[Any, Any], calls: list[dict[str, Any]], out_dir: str, what: str
) -> list[Outcome]:
    """Run ``task_`` once per parameter dict on ``runner``; outcomes in call order.

    A progress artifact counts finished calls. A cached result whose files are gone is run again with
    ``refresh_cache``. A task that raised (after its retries) stops the stage with that error.
    """
    logger = get_run_logger()
    total = len(calls)
    # Called in a flow run, the sync API returns the id (its typing also allows the async coroutine).
    progress = cast(UUID, create_progress_artifact(0.0, description=f"{what}: 0 of {total} done"))
    futures = [runner.submit(task_, parameters=c) for c in calls]
    position = {f.task_run_id: k for k, f in enumerate(futures)}
    outcomes: list[Outcome | None] = [None] * total
    for done, future in enumerate(as_completed(futures), start=1):
        outcomes[position[future.task_run_id]] = _outcome(future)
        update_progress_artifact(
            progress, 100.0 * done / total, description=f"{what}: {done} of {total} done"
        )
    if total == 0:
        update_progress_artifact(progress, 100.0, description=f"{what}: nothing to do")
    for k, o in enumerate(outcomes):
        assert o is not None
        gone = missing_outputs(o.value, out_dir) if o.cached else []
        if gone:
            logger.warning(
                "cached result of %s names missing files (%s): running it again", task_.name, gone[0]
            )
            outcomes[k] = _outcome(runner.submit(task_.with_options(refresh_cache=True), parameters=calls[k]))
    return [o for o in outcomes if o is not None]


# -- the stage flows ----------------------------------------------------------------------------------


def source_list(source: list[str] | str) -> list[str]:
    """``source`` as a list: one path (``--param source=DIR``) or a list of paths."""
    return [source] if isinstance(source, str) else [str(s) for s in source]


@flow(name="prepare", log_prints=True)
def prepare_stage(
    source: list[str] | str,
    out: str,
    format: str = PREPARE_DEFAULTS.format,
    tile_size: int = PREPARE_DEFAULTS.tile_size,
    overlap: int = PREPARE_DEFAULTS.overlap,
    prepare_options: dict[str, Any] | None = None,
    runner: str = "threads",
    dask_address: str | None = None,
    workers: int = 2,
) -> dict[str, Any]:
    """Prepare: imagery and labels → tiles, set-of-marks images, instance and cluster tables in OUT.

    Args:
        source: images, folders or annotation files, as for ``geopixeld prepare``: one path or a list
            (relative paths are taken from the working directory of the flow run: the repository root for
            deployments).
        out: the output folder (OUT).
        format: annotation format: isaid, coco, dota, boxes, geojson or raster.
        tile_size: tile side in px (800 as iSAID/GeoPixelD; 0 keeps whole images up to 4096 px).
        overlap: px shared by neighbouring tiles (200 as iSAID).
        prepare_options: any other ``PrepareConfig`` field, e.g. ``{"min_area": 20, "gsd": 0.3}``.
        runner: ``threads`` or ``dask``.
        dask_address: an existing Dask scheduler; none starts a local cluster (runner ``dask`` only).
        workers: threads, or local Dask worker processes.
    """
    out_dir = absolute(out)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    config = PrepareConfig(format=format, tile_size=tile_size, overlap=overlap, **(prepare_options or {}))
    items, skips = discover_images([absolute(s) for s in source_list(source)], config)
    calls = [{"item": it, "config": config, "out_dir": out_dir} for it in items]
    with task_runner(runner, dask_address, workers) as tr:
        outcomes = run_mapped(tr, for_output(prepare_one_image, out_dir), calls, out_dir, "images prepared")
    summary = merge_prepared(out_dir, [o.value for o in outcomes], skips, config)
    if summary["images_ok"] + summary["images_reused"] == 0:
        raise RuntimeError(f"no image could be prepared from {source}:\n{summary['text']}")
    summary["this_run"] = {"images": len(outcomes), "images_cached": sum(o.cached for o in outcomes)}
    return summary


@flow(name="describe", log_prints=True)
def describe_stage(
    out: str,
    base_url: str | None = None,
    model: str | None = None,
    concurrency: int = DESCRIBE_DEFAULTS.concurrency,
    prompts: str | None = None,
    batch_tiles: int = DESCRIBE_DEFAULTS.batch_tiles,
    describe_options: dict[str, Any] | None = None,
    runner: str = "threads",
    dask_address: str | None = None,
    workers: int = 2,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Describe: prepared tiles in OUT → LMM descriptions → grounded GCG samples with validation flags.

    Args:
        out: a folder written by the prepare stage.
        base_url: OpenAI-compatible endpoint; none starts the embedded offline describer on 127.0.0.1.
        model: model name (default: the offline describer's).
        concurrency: LMM requests in flight at once per batch.
        prompts: prompt set name under ``prompts/`` or a folder (default geopixeld-v1).
        batch_tiles: tiles per describe task.
        describe_options: any other ``DescribeConfig`` field, e.g. ``{"max_retries": 2}``,
            ``{"instances_per_call": 4}`` (grouped objects) or ``{"batch": true}`` (the OpenAI Batch API).
        runner: ``threads`` or ``dask``.
        dask_address: an existing Dask scheduler; none starts a local cluster (runner ``dask`` only).
        workers: threads, or local Dask worker processes.
        dry_run: send nothing: log and return the calls, tokens and price the run would take
            (:mod:`pipeline.dryrun`). A real run logs the same estimate first.
    """
    logger = get_run_logger()
    data_dir = absolute(out)
    config = DescribeConfig(
        base_url=base_url,
        model=model,
        concurrency=concurrency,
        prompts=prompts,
        batch_tiles=batch_tiles,
        **(describe_options or {}),
    )
    estimate = plan_cost(data_dir, config, progress=False)
    logger.info(estimate.headline())
    if dry_run:
        logger.info("%s", estimate.text())
        return {
            "dry_run": True,
            "estimate": estimate.to_dict(),
            "text": estimate.text(),
            "this_run": {"lmm_sent": 0},
        }
    if config.batch:  # every request through the Batch API first; the mapped batches then read the cache
        logger.info("batch api: %s", fill_batches(data_dir, config, progress=False))
    batches = list_tile_batches(data_dir, config.batch_tiles)
    if not lmm_limit_exists():
        logger.warning(
            "no global concurrency limit %r on this Prefect server: describe batches are not "
            "throttled across runs (`make serve` creates it)",
            LMM_LIMIT,
        )
    with lmm_endpoint(base_url) as url, task_runner(runner, dask_address, workers) as tr:
        calls = [{"data_dir": data_dir, "tile_ids": b, "config": config, "base_url": url} for b in batches]
        outcomes = run_mapped(
            tr, for_output(describe_tile_batch, data_dir), calls, data_dir, "tile batches described"
        )
    receipts: list[BatchReceipt] = [o.value for o in outcomes]
    summary = write_descriptions(data_dir, receipts, config, base_url or OFFLINE_ENDPOINT)
    ran = [o.value for o in outcomes if not o.cached]
    summary["this_run"] = {
        "batches": len(outcomes),
        "batches_cached": len(outcomes) - len(ran),
        "batches_run": len(ran),
        "batches_failed": sum(o.failed for o in outcomes),
        "lmm_sent": sum(r.sent for r in ran),
        "input_tokens": sum(r.input_tokens for r in ran),
        "output_tokens": sum(r.output_tokens for r in ran),
    }
    if summary["this_run"]["batches_failed"]:
        logger.warning(
            "%d batches had failed LMM calls (flagged lmm_failed); a rerun retries just those",
            summary["this_run"]["batches_failed"],
        )
    return summary


def _call_checking_outputs(task_: Task[Any, Any], parameters: dict[str, Any]) -> Any:
    """Call ``task_``; if its result came from the cache but its files are gone, call it again, uncached."""
    state: State[Any] = task_(**parameters, return_state=True)
    value = state.result()
    if state.name == "Cached" and missing_outputs(value, ""):
        get_run_logger().warning(
            "cached result of %s names files that are gone: running it again", task_.name
        )
        value = task_.with_options(refresh_cache=True)(**parameters)
    return value


@flow(name="export", log_prints=True)
def export_stage(
    out: str,
    formats: list[str] | None = None,
    export_dir: str | None = None,
    ratios: list[float] | None = None,
    seed: int = 0,
    decisions: str | None = None,
    name: str | None = None,
    export_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export: samples in OUT → train/val/test in GCG Parquet, COCO, GeoPixel, GLaMM and GeoParquet formats.

    Args:
        out: a folder written by the describe stage.
        formats: any of gcg-parquet, coco, geopixel, glamm, geo (default: all of them).
        export_dir: where the export goes (default OUT/export).
        ratios: train, val and test shares (default 0.8, 0.1, 0.1).
        seed: split seed.
        decisions: review decisions file (default: the annotation app's ``OUT/review.sqlite`` if any).
        name: dataset name in the export's card (default: the name of OUT).
        export_options: any other argument of ``pipeline.export.export``, e.g.
            ``{"max_severity": "warning", "exclude_flags": ["refusal"], "geopixel_prefix": "data/GeoPixelD",
            "geo_crs": "EPSG:4326", "split_by": "block", "block_size": 500}``.
    """
    data_dir = absolute(out)
    target = absolute(export_dir or Path(data_dir) / "export")
    parameters = {
        "data_dir": data_dir,
        "export_dir": target,
        "formats": list(formats or DEFAULT_FORMATS),
        "ratios": list(ratios or DEFAULT_RATIOS),
        "seed": seed,
        "decisions": absolute(decisions) if decisions else None,
        "name": name,
        "options": dict(export_options or {}),
    }
    result: dict[str, Any] = _call_checking_outputs(for_output(export_dataset, data_dir), parameters)
    return result


@flow(name="publish", log_prints=True)
def publish_stage(
    export_dir: str, store: str, name: str = "geopixeld", version: str = "0.1.0"
) -> dict[str, Any]:
    """Publish: an export folder → an immutable, checksummed release ``name==version`` in ``store``.

    Args:
        export_dir: a folder written by the export stage.
        store: a local folder or an fsspec URL (``s3://bucket/prefix``).
        name: release name (letters, digits, ``._-``).
        version: MAJOR.MINOR.PATCH, a large enough bump over the latest published version.
    """
    source = absolute(export_dir)
    target = store if "://" in store else absolute(store)
    parameters = {"export_dir": source, "name": name, "version": version, "store": target}
    task_ = for_output(publish_release, Path(source).parent)
    state: State[Any] = task_(**parameters, return_state=True)
    value = state.result()
    if state.name == "Cached" and not release_exists(target, name, version):
        get_run_logger().warning(
            "cached publish of %s==%s but the release is gone: publishing again", name, version
        )
        value = task_.with_options(refresh_cache=True)(**parameters)
    return value


STAGES: dict[str, Flow[..., dict[str, Any]]] = {
    "prepare": prepare_stage,
    "describe": describe_stage,
    "export": export_stage,
    "publish": publish_stage,
}


if __name__ == "__main__":
    # ``python -m flows.stages STAGE``: one stage on the bundled DOTA sample, into build/geopixeld/dota.
    out = "build/geopixeld/dota"
    examples: dict[str, dict[str, Any]] = {
        "prepare": {"source": ["tests/data/dota"], "out": out, "format": "dota"},
        "describe": {"out": out},
        "export": {"out": out},
        "publish": {
            "export_dir": f"{out}/export",
            "store": "build/geopixeld/releases",
            "name": "geopixeld-dota",
        },
    }
    stage = sys.argv[1] if len(sys.argv) > 1 else "prepare"
    print(STAGES[stage](**examples[stage]))
