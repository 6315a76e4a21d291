"""``geopixeld build``: the whole pipeline as one Prefect flow run, from the command line.

:func:`build` is a typer command (the main CLI mounts it as ``geopixeld build``); ``app`` holds it
with ``setup``, the Prefect set-up that ``flows/serve.sh`` (``make serve``) runs:
``python -m flows.cli setup``.

Where the run is recorded: the Prefect server at ``PREFECT_API_URL`` when it is set; else the local
server of ``make serve`` when it answers (its URL is in ``PREFECT_HOME/run/api_url``); else a
temporary server that Prefect starts for the run (a few seconds more) on the same SQLite database
under ``PREFECT_HOME``, so the run still shows up in the UI of a later ``make serve``. ``PREFECT_HOME``
defaults to the repository's ``.prefect/``; analytics stay off (:mod:`flows.environment`, set before
Prefect is imported).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from flows import ROOT
from flows.environment import prefect_environment
from pipeline.export import FORMATS as EXPORT_FORMATS

#: The bundled sample that ``geopixeld build`` runs on when no SOURCE is given.
BUNDLED_SAMPLE = ROOT / "tests" / "data" / "isaid"
#: Work pool and concurrency limit that ``setup`` creates (and ``prefect.yaml`` uses).
POOL = "geopixeld-process"


def build(
    sources: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Images, folders or annotation files (depends on --format). Default: the bundled "
            "iSAID sample (tests/data/isaid)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("build/geopixeld"),
    format: Annotated[
        str,
        typer.Option("--format", "-f", help="Annotation format: isaid, coco, dota, boxes, geojson, raster."),
    ] = "isaid",
    tile_size: Annotated[
        int | None,
        typer.Option(help="Tile side in px (default 800 = iSAID/GeoPixelD; 0 = whole images ≤ 4096)."),
    ] = None,
    overlap: Annotated[
        int | None, typer.Option(help="Overlap between neighbouring tiles in px (default 200 = iSAID).")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint. Default: the embedded offline describer.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model name (default: the offline describer).")] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="LMM requests in flight at once per describe batch (default 8).")
    ] = None,
    prompts: Annotated[
        str | None, typer.Option(help="Prompt set name under prompts/ or a folder (default geopixeld-v1).")
    ] = None,
    formats: Annotated[str, typer.Option(help="Export formats, comma-separated.")] = ",".join(EXPORT_FORMATS),
    store: Annotated[
        str | None, typer.Option(help="Release store: a folder or an fsspec URL (default OUT/releases).")
    ] = None,
    publish: Annotated[
        bool, typer.Option("--publish/--no-publish", help="Publish the export as a release.")
    ] = True,
    name: Annotated[str, typer.Option(help="Release name.")] = "geopixeld",
    version: Annotated[str, typer.Option(help="Release version (MAJOR.MINOR.PATCH).")] = "0.1.0",
    batch_tiles: Annotated[int | None, typer.Option(help="Tiles per describe task (default 32).")] = None,
    runner: Annotated[str, typer.Option(help="Task runner: threads or dask.")] = "threads",
    dask_address: Annotated[
        str | None, typer.Option(help="Existing Dask scheduler (default: a local cluster).")
    ] = None,
    workers: Annotated[int, typer.Option(help="Threads, or local Dask worker processes.")] = 2,
    policy: Annotated[
        str | None, typer.Option(help="Describe's selection policy: geopixeld (default) or all-instances.")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Prepare, then only print what describe would send: calls, tokens "
            "and price per tier, for the dataset and per 1,000 tiles. Sends nothing.",
        ),
    ] = False,
) -> None:
    """Run the pipeline as the Prefect flow build-geopixeld: prepare, describe, validate, export, publish.

    Everything finished is cached under OUT/.prefect-results: run the same command again after a crash
    and only the unfinished work runs. Prints where the dataset, the release and the run summary are.
    """
    prefect_environment()
    from flows.build import build_geopixeld
    from flows.runners import check_runner

    try:
        check_runner(runner)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if not sources:
        if format != "isaid":
            raise typer.BadParameter("give SOURCE: the bundled sample is iSAID")
        sources = [BUNDLED_SAMPLE]
        typer.echo(f"no SOURCE given: building the bundled iSAID sample {BUNDLED_SAMPLE}")
    target = None
    if publish:
        target = store or str(out / "releases")
    # Settings not given keep the flow's defaults, which come from the library's config models.
    given: dict[str, Any] = {
        "tile_size": tile_size,
        "overlap": overlap,
        "concurrency": concurrency,
        "batch_tiles": batch_tiles,
    }
    if policy:
        given["describe_options"] = {"policy": policy}
    result: dict[str, Any] = build_geopixeld(
        source=[str(s) for s in sources],
        out=str(out),
        format=format,
        base_url=base_url,
        model=model,
        prompts=prompts,
        **{k: v for k, v in given.items() if v is not None},
        formats=[f.strip() for f in formats.split(",") if f.strip()],
        store=target,
        name=name,
        version=version,
        runner=runner,
        dask_address=dask_address,
        workers=workers,
        dry_run=dry_run,
    )
    if dry_run:
        typer.echo("")
        typer.echo(str(result.get("text") or result))
        return
    this = result["this_run"]
    typer.echo("")
    typer.echo(f"dataset   {result['out_dir']}  (samples: {result['samples']})")
    typer.echo(f"export    {result['export_dir']}")
    release = result.get("release")
    if release:
        typer.echo(f"release   {release['name']}=={release['version']}  {release['location']}")
    typer.echo(f"summary   {result['report']}")
    typer.echo(
        f"this run  {this['images'] - this['images_cached']} of {this['images']} images prepared, "
        f"{this['batches_run']} of {this['batches']} describe batches run, "
        f"{this['lmm_sent']} LMM requests sent"
    )
    if os.environ.get("PREFECT_API_URL"):
        typer.echo(f"runs      {os.environ['PREFECT_API_URL'].removesuffix('/api')}/runs")


def setup(
    pool: Annotated[str, typer.Option(help="Process work pool to create.")] = POOL,
    lmm_limit: Annotated[
        int,
        typer.Option(
            help="Slots of the global concurrency limit lmm-api: describe "
            "batches talking to LMM endpoints at once, over all runs."
        ),
    ] = 2,
) -> None:
    """Create the work pool and the lmm-api concurrency limit on the server at PREFECT_API_URL (idempotent).

    Uses the API directly: `prefect work-pool create` would ask the server for the collection registry,
    which it fetches from the internet.
    """
    prefect_environment()
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
        WorkPoolCreate,
    )
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    from flows.tasks import LMM_LIMIT

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
            typer.echo(f"work pool {pool!r} exists")
        except ObjectNotFound:
            template = ProcessWorker.get_default_base_job_template()
            client.create_work_pool(WorkPoolCreate(name=pool, type="process", base_job_template=template))
            typer.echo(f"created process work pool {pool!r}")
        try:
            current = client.read_global_concurrency_limit_by_name(LMM_LIMIT)
            if current.limit != lmm_limit:
                client.update_global_concurrency_limit(
                    LMM_LIMIT, GlobalConcurrencyLimitUpdate(limit=lmm_limit)
                )
            typer.echo(f"concurrency limit {LMM_LIMIT!r}: {lmm_limit} slots")
        except ObjectNotFound:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=LMM_LIMIT, limit=lmm_limit)
            )
            typer.echo(f"created concurrency limit {LMM_LIMIT!r} with {lmm_limit} slots")


app = typer.Typer(
    no_args_is_help=True,
    help="GeoPixelD flows on Prefect: `build` runs the pipeline, `setup` "
    "prepares a Prefect server for the deployments.",
    pretty_exceptions_enable=False,
)
app.command()(build)
app.command()(setup)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
