"""Prefect tasks: each wraps one library call in retries, caching and limits; the logic stays in ``pipeline``.

What every task gets is plain data: paths (``str``), tile and image ids, small configs (pydantic
models, the frozen ``ImageItem`` records). What it returns is as small: a report or a receipt naming the
files it wrote. Nothing here holds a client, a file handle or a big table between tasks, so every task
pickles to a Dask worker and hashes into a cache key.

Caching. Each task that does real work has a cache key made of the *content* of its inputs (sha256 of
the source images and annotation files, of the prepared tiles and tables of a batch...), its
parameters, the output folder and the task's own source code (``TASK_SOURCE``). Results are persisted
next to the outputs, in ``OUT/.prefect-results/`` (see :func:`for_output`), so a rerun after a crash
or a cancel finds every finished image, batch, export and release there and redoes none of them;
deleting OUT forgets both together. Work that did not succeed is never cached: a failed image and a
batch with failed LMM calls *return* a ``Failed`` state carrying their report (Prefect keeps such a
result without filing it under the cache key), so the flow still writes complete outputs with the
failures flagged, and the next run tries exactly those again.

Retries. :func:`retry_transient` lets Prefect retry a task after errors that may pass (connection
drops, time-outs, a storage hiccup) and after failed LMM calls; bad input, a missing file or a release
version that already exists are final.

LMM traffic. A describe batch holds one slot of the global concurrency limit ``lmm-api`` (created by
``make serve``) while it talks to the endpoint, so runs sharing an endpoint queue rather than overrun
it; each batch keeps up to ``concurrency`` requests in flight. Without that limit (a bare server, the
test harness) Prefect logs that it does not exist and the batch runs unthrottled. The library's
response cache under ``OUT/lmm_cache`` means a retried or rerun batch re-sends only what never got an
answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow.parquet as pq
from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE, TASK_SOURCE, CacheKeyFnPolicy
from prefect.client.schemas.objects import TaskRun
from prefect.concurrency.sync import concurrency
from prefect.context import TaskRunContext
from prefect.states import Failed, State

import pipeline
from pipeline.config import PrepareConfig
from pipeline.describe import DescribeConfig, describe_batch, merge_describe_parts, tile_batches
from pipeline.errors import Skip
from pipeline.flag_summary import summarize as summarize_flags
from pipeline.ingest import ImageItem
from pipeline.lmm.records import write_calls_parquet
from pipeline.lmm.server import running_offline_server
from pipeline.prepare import discover, merge, prepare_image
from pipeline.prepare_report import ImageReport, summarize
from pipeline.tables import SAMPLES_SCHEMA, write_table

#: Part of every cache key: bump it (or release a new geopixeld version) to invalidate cached results.
CACHE_VERSION = f"1-geopixeld-{pipeline.__version__}"
#: Where task results and cache records live, under the output folder.
RESULTS_DIR = ".prefect-results"
#: Per-batch describe outputs, under the output folder, merged into samples.parquet / lmm_calls.parquet.
DESCRIBE_PARTS_DIR = "describe_parts"
#: Name of the global concurrency limit that describe batches take a slot of.
LMM_LIMIT = "lmm-api"
#: Seconds a describe batch's slot is leased for (renewed while it runs); a killed run frees it after this.
LMM_LEASE_S = 60.0
#: How the embedded offline describer is named in reports.
OFFLINE_ENDPOINT = "embedded offline describer (127.0.0.1)"

T = TypeVar("T", bound=Task[Any, Any])


# -- helpers shared by the tasks and the flows ------------------------------------------------------


def for_output(task_: T, out_dir: str | Path) -> T:
    """``task_`` with its results (and so its cache records) persisted under ``OUT/.prefect-results``."""
    bound = task_.with_options(result_storage=Path(out_dir) / RESULTS_DIR, persist_result=True)
    return bound  # type: ignore[return-value]


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (``"missing"`` when it does not exist)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except FileNotFoundError:
        return "missing"
    return h.hexdigest()


def digest(*parts: Any) -> str:
    """sha256 of a JSON rendering of ``parts`` (a cache key)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def tree_fingerprint(folder: str | Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime in ns) of each file under ``folder``: changes when a file is rewritten."""
    root = Path(folder)
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out.append((p.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return out


PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    ValueError,
    TypeError,
    KeyError,
    ImportError,
)


def retry_transient(task_: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect ``retry_condition_fn``: retry what may pass, never bad input or a final refusal.

    ``state.data`` is the raised exception, or the report a task returned inside a ``Failed`` state.
    """
    data = state.data
    if isinstance(data, BatchReceipt):
        return True  # failed LMM calls: 429s, 5xx, time-outs, a restarting server...
    if isinstance(data, ImageReport):
        return False  # the library decided the image is bad input
    if isinstance(data, BaseException):
        from pipeline.release.errors import ReleaseError

        return not isinstance(data, (*PERMANENT_ERRORS, ReleaseError))
    return True


@contextlib.contextmanager
def lmm_endpoint(base_url: str | None) -> Iterator[str]:
    """``base_url``, or the embedded offline describer started on 127.0.0.1 for the block (its URL)."""
    if base_url:
        yield base_url
    else:
        with running_offline_server() as url:
            yield url


def lmm_limit_exists() -> bool:
    """Whether the global concurrency limit ``lmm-api`` exists on the Prefect server in use."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(LMM_LIMIT)
        except ObjectNotFound:
            return False
    return True


# -- prepare ------------------------------------------------------------------------------------------


@task(name="discover-images", cache_policy=NO_CACHE)
def discover_images(sources: list[str], config: PrepareConfig) -> tuple[list[ImageItem], list[Skip]]:
    """The images to prepare in ``sources`` and the inputs skipped while finding them."""
    return discover(sources, config)


def _prepare_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    item: ImageItem = parameters["item"]
    config: PrepareConfig = parameters["config"]
    files = [item.image_path, *sorted(item.annotations.values())]
    return digest(
        "prepare-image",
        CACHE_VERSION,
        item.image_id,
        item.format,
        item.options,
        [file_digest(p) for p in files],
        config.digest(),
        str(Path(parameters["out_dir"]).resolve()),
    )


@task(
    name="prepare-image",
    task_run_name="prepare {item.image_id}",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_transient,
    cache_policy=TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=_prepare_key),
)
def prepare_one_image(
    item: ImageItem, config: PrepareConfig, out_dir: str
) -> ImageReport | State[ImageReport]:
    """Tile one image into ``out_dir`` (``pipeline.prepare.prepare_image``); a bad image ends ``Failed``."""
    report = prepare_image(item, config, out_dir, resume=True)
    if report.status == "failed":
        return Failed(message=report.error or f"{item.image_path}: failed", data=report)
    return report


@task(name="merge-prepared", cache_policy=NO_CACHE)
def merge_prepared(
    out_dir: str, reports: list[ImageReport], discover_skips: list[Skip], config: PrepareConfig
) -> dict[str, Any]:
    """The top-level tables and ``prepare_report.json``, as ``pipeline.prepare.prepare`` writes them."""
    out = Path(out_dir)
    merge(out, [r.image_id for r in reports if r.status in ("ok", "reused")])
    summary = summarize(out, reports, discover_skips)
    payload = {
        "summary": asdict(summary),
        "config": config.model_dump(mode="json"),
        "images": [asdict(r) for r in reports],
    }
    (out / "prepare_report.json").write_text(json.dumps(payload, indent=1, default=str))
    get_run_logger().info(summary.text())
    return {**asdict(summary), "text": summary.text()}


# -- describe -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchReceipt:
    """What one describe batch wrote: its part files and its LMM call counts.

    Attributes:
        key: content hash of the batch (tiles, marks, instance and cluster rows, settings).
        tile_ids: the tiles described, in order.
        samples_path / calls_path: the batch's ``samples.parquet`` / ``lmm_calls.parquet`` parts.
        calls, sent, failed: LMM results, requests sent (not from the response cache), failed results.
        input_tokens, output_tokens: tokens of the requests sent.
    """

    key: str
    tile_ids: list[str]
    samples_path: str
    calls_path: str
    calls: int
    sent: int
    failed: int
    input_tokens: int
    output_tokens: int


@task(name="list-tile-batches", cache_policy=NO_CACHE)
def list_tile_batches(data_dir: str, batch_tiles: int) -> list[list[str]]:
    """The prepared tile ids of ``data_dir`` in batches of ``batch_tiles``."""
    return tile_batches(data_dir, batch_tiles)


def batch_digest(data_dir: str, tile_ids: Sequence[str], config: DescribeConfig) -> str:
    """Content hash of a describe batch: its tile and marks images, instance and cluster rows, settings."""
    data = Path(data_dir)
    ids = list(tile_ids)
    tables = {}
    for name in ("tiles", "instances", "clusters"):
        rows = pq.read_table(data / f"{name}.parquet", filters=[("tile_id", "in", ids)]).to_pylist()
        tables[name] = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
    images = [file_digest(data / sub / f"{t}.png") for t in ids for sub in ("tiles", "marks")]
    # The endpoint's URL is left out: the embedded describer gets a new port every run.
    settings = config.model_dump(mode="json")
    return digest("describe-batch", CACHE_VERSION, ids, tables, images, settings, str(data.resolve()))


def _describe_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return batch_digest(parameters["data_dir"], parameters["tile_ids"], parameters["config"])


@task(
    name="describe-batch",
    task_run_name="describe {tile_ids[0]}…",
    retries=2,
    retry_delay_seconds=[10, 60],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
    cache_policy=TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=_describe_key),
)
def describe_tile_batch(
    data_dir: str, tile_ids: list[str], config: DescribeConfig, base_url: str
) -> BatchReceipt | State[BatchReceipt]:
    """Describe some tiles through ``base_url`` and write the batch's part files.

    Holds a slot of ``lmm-api`` while talking to the endpoint. Ends ``Failed`` (after its retries) when
    any LMM call failed; the receipt still comes with the state, with the failures flagged in the rows.
    """
    key = batch_digest(data_dir, tile_ids, config)
    with concurrency(LMM_LIMIT, occupy=1, lease_duration=LMM_LEASE_S):
        rows, results = describe_batch(data_dir, tile_ids, config, base_url)
    parts = Path(data_dir) / DESCRIBE_PARTS_DIR
    parts.mkdir(parents=True, exist_ok=True)
    samples_path, calls_path = parts / f"{key}.samples.parquet", parts / f"{key}.calls.parquet"
    write_table(rows, SAMPLES_SCHEMA, samples_path)
    write_calls_parquet(results, calls_path)
    sent = [r for r in results if not r.from_cache]
    receipt = BatchReceipt(
        key=key,
        tile_ids=list(tile_ids),
        samples_path=str(samples_path),
        calls_path=str(calls_path),
        calls=len(results),
        sent=len(sent),
        failed=sum(not r.ok for r in results),
        input_tokens=sum(r.input_tokens for r in sent),
        output_tokens=sum(r.output_tokens for r in sent),
    )
    if receipt.failed:
        first = next(r.error for r in results if not r.ok)
        return Failed(
            message=f"{receipt.failed} of {receipt.calls} LMM calls failed (first: {first})", data=receipt
        )
    return receipt


@task(name="write-descriptions", cache_policy=NO_CACHE)
def write_descriptions(
    data_dir: str, receipts: list[BatchReceipt], config: DescribeConfig, endpoint: str
) -> dict[str, Any]:
    """``samples.parquet``, ``lmm_calls.parquet`` and ``describe_report.json`` from the batches' parts,
    streamed part by part (:func:`pipeline.describe.merge_describe_parts`)."""
    parts = [(r.samples_path, r.calls_path) for r in receipts]
    summary = merge_describe_parts(data_dir, parts, config, endpoint)
    get_run_logger().info(summary.text())
    return {**asdict(summary), "text": summary.text()}


# -- validate -----------------------------------------------------------------------------------------


@task(name="validate-samples", cache_policy=NO_CACHE)
def validate_samples(data_dir: str) -> dict[str, Any]:
    """Flags of ``samples.parquet`` by code and severity; fails if a prepared tile has no sample
    (:func:`pipeline.flag_summary.summarize`, what ``geopixeld validate`` runs)."""
    return summarize_flags(data_dir)


# -- export and publish -------------------------------------------------------------------------------


def _export_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    data = Path(parameters["data_dir"])
    # review.sqlite: the annotation app's decisions, which the exporter reads when no file is given.
    inputs = [
        file_digest(data / name)
        for name in (
            "samples.parquet",
            "tiles.parquet",
            "instances.parquet",
            "clusters.parquet",
            "review.sqlite",
        )
    ]
    decisions = parameters.get("decisions")
    return digest(
        "export",
        CACHE_VERSION,
        inputs,
        file_digest(decisions) if decisions else None,
        parameters["formats"],
        parameters["ratios"],
        parameters["seed"],
        parameters.get("name"),
        json.dumps(parameters.get("options") or {}, sort_keys=True, default=str),
        str(Path(parameters["export_dir"]).resolve()),
    )


@task(
    name="export-dataset",
    retries=1,
    retry_delay_seconds=10,
    retry_condition_fn=retry_transient,
    cache_policy=TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=_export_key),
)
def export_dataset(
    data_dir: str,
    export_dir: str,
    formats: list[str],
    ratios: list[float],
    seed: int = 0,
    decisions: str | None = None,
    name: str | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export ``data_dir`` to ``export_dir`` in ``formats`` (``pipeline.export.export``; ``options``: its
    other arguments)."""
    try:
        from pipeline.export import export
    except ImportError as exc:
        raise ImportError(
            f"the export stage needs pipeline.export, which cannot be imported here ({exc}); "
            "install a geopixeld version that has it"
        ) from exc
    summary = export(
        data_dir,
        export_dir,
        formats=tuple(formats),
        ratios=tuple(ratios),
        seed=seed,
        decisions=decisions,
        name=name,
        **(options or {}),
    )
    get_run_logger().info(summary.text())
    return {**summary.to_dict(), "export_dir": export_dir, "text": summary.text()}


def _publish_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return digest(
        "publish",
        CACHE_VERSION,
        tree_fingerprint(parameters["export_dir"]),
        parameters["name"],
        parameters["version"],
        str(parameters["store"]),
    )


def _same_release(export_dir: str, name: str, version: str, store: str) -> dict[str, Any] | None:
    """The published ``name==version`` as a receipt if it holds exactly the files of ``export_dir``."""
    from pipeline.release import Store, show_release

    manifest = show_release(f"{name}=={version}", store)
    recorded = {f.path: f.sha256 for f in manifest.files}
    root = Path(export_dir)
    for p in root.rglob("*"):
        if p.is_file() and recorded.get(p.relative_to(root).as_posix()) != file_digest(p):
            return None
    opened = Store.from_uri(store)
    location = opened.release_path(name, version) if opened.is_local else opened.url(name, version)
    return {
        "name": name,
        "version": version,
        "location": str(location),
        "previous": manifest.previous_version,
        "bump": manifest.bump,
        "files": len(manifest.files),
        "already_published": True,
    }


@task(
    name="publish-release",
    task_run_name="publish {name}=={version}",
    retries=2,
    retry_delay_seconds=[10, 60],
    retry_condition_fn=retry_transient,
    cache_policy=TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=_publish_key),
)
def publish_release(export_dir: str, name: str, version: str, store: str) -> dict[str, Any]:
    """Publish ``export_dir`` as ``name==version`` in ``store`` (``pipeline.release.publish``).

    Publishing the same files again under the same version is a no-op that returns the existing
    release (a rerun after a crash between publish and the end of the run); other files under an
    existing version fail with the library's ``ReleaseExistsError``: bump the version.
    """
    from pipeline.release import ReleaseExistsError, publish

    try:
        result = publish(export_dir, name, version, store)
    except ReleaseExistsError:
        existing = _same_release(export_dir, name, version, store)
        if existing is None:
            raise
        get_run_logger().info(
            "%s==%s is already published with these files: %s", name, version, existing["location"]
        )
        return existing
    return {
        "name": result.name,
        "version": result.version,
        "location": result.url,
        "previous": result.previous,
        "bump": result.bump,
        "files": len(result.manifest.files) if result.manifest else 0,
        "already_published": False,
    }


def release_exists(store: str, name: str, version: str) -> bool:
    """Whether ``name==version`` is visible in ``store``."""
    from pipeline.release import Store

    return Store.from_uri(store).is_visible(name, version)


# -- outputs that a cached result points to ----------------------------------------------------------


def missing_outputs(result: Any, out_dir: str | Path) -> list[str]:
    """Files a (possibly cached) result names that are not there any more: their task must run again."""
    out = Path(out_dir)
    if isinstance(result, ImageReport):
        if result.status in ("ok", "reused"):
            part = out / "parts" / result.image_id
            paths = [part / f"{n}.parquet" for n in ("tiles", "instances", "clusters")]
            return [str(p) for p in paths if not p.exists()]
        return []
    if isinstance(result, BatchReceipt):
        return [p for p in (result.samples_path, result.calls_path) if not os.path.exists(p)]
    if isinstance(result, dict) and "export_dir" in result:
        return [] if (Path(result["export_dir"]) / "data").is_dir() else [result["export_dir"]]
    return []
