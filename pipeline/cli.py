"""geopixeld: build pixel-grounded remote-sensing conversation datasets (GeoPixelD style).

Stages: prepare (tiles, priors, set-of-marks) → describe (LMM captions) → export → release.
Run `geopixeld COMMAND --help` for each command's options.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

#: Sub-commands of the other stages, imported only when invoked (``geopixeld --help`` and ``geopixeld
#: prepare`` load none of them): name → (module, attribute, one-line help). The library never imports the
#: review app or the flows itself; only this top-level command mounts them.
LAZY_SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "lmm": ("pipeline.lmm.cli", "app", "The embedded offline describer (an OpenAI-compatible server)."),
    "release": ("pipeline.release.cli", "app", "Versioned, immutable, checksummed releases: publish, list, show, pull."),
    "review": ("annotations.cli", "app", "The annotator review app: serve, add-user, export-decisions, report."),
    # The whole job as a Prefect flow (flows/ wires this library; the library itself never imports Prefect).
    "build": ("flows.cli", "build", "Run the whole pipeline as the Prefect flow build-geopixeld."),
}


class LazyGroup(TyperGroup):
    """The top-level group: lazy sub-commands are listed from :data:`LAZY_SUBCOMMANDS` and imported only
    when click resolves one to run it (or to show its own ``--help``)."""

    _resolving = False

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in LAZY_SUBCOMMANDS if n not in self.commands)]

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        self._resolving = True
        try:
            return super().resolve_command(ctx, args)
        finally:
            self._resolving = False

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in LAZY_SUBCOMMANDS or cmd_name in self.commands:
            return super().get_command(ctx, cmd_name)
        module, attr, help_text = LAZY_SUBCOMMANDS[cmd_name]
        if not self._resolving:  # listed in a help page: name and help only, nothing imported
            return TyperCommand(name=cmd_name, help=help_text, short_help=help_text)
        target = getattr(importlib.import_module(module), attr)
        if isinstance(target, typer.Typer):
            command = typer.main.get_command(target)
        else:
            single = typer.Typer(rich_markup_mode="markdown")
            single.command(name=cmd_name)(target)
            command = typer.main.get_command(single)
        command.name = cmd_name
        if isinstance(target, typer.Typer):
            command.help = command.help or help_text
            command.short_help = help_text
        self.add_command(command, cmd_name)
        return command


app = typer.Typer(
    cls=LazyGroup, no_args_is_help=True, help=__doc__, rich_markup_mode="markdown", pretty_exceptions_enable=False
)


def _parse_categories(text: str) -> list[str]:
    """``a,b,c`` or ``@FILE`` (one name per line, ``#`` comments) → category names."""
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValueError(f"{path}: cannot read the category list ({exc.strerror or exc})") from None
        names = [line.split("#", 1)[0].strip() for line in lines]
    else:
        names = [part.strip() for part in text.split(",")]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"no category names in {text!r}")
    return names


def _parse_bands(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise typer.BadParameter(f"bands must be comma-separated integers, got {value!r}") from None


def _parse_clusters(values: list[str]) -> dict[str, str] | None:
    if not values:
        return None
    out = {}
    for v in values:
        name, _, mode = v.partition("=")
        out[name] = mode or "only"
    return out


@app.command()
def prepare(
    sources: Annotated[list[Path], typer.Argument(help="Images, folders or annotation files (depends on --format).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="Annotation format: isaid (folders of P.png + P_instance_id_RGB.png + P_instance_color_RGB.png), "
            "coco (instance JSON files), dota (folders with images/ + labelTxt/), boxes (CSV "
            "image_path,xmin,ymin,xmax,ymax,label), geojson (rasters with sidecar .geojson), raster (imagery only).",
        ),
    ] = "isaid",
    tile_size: Annotated[int, typer.Option(help="Tile side in px (800 = iSAID/GeoPixelD; 0 = whole images ≤ 4096).")] = 800,
    overlap: Annotated[int, typer.Option(help="Overlap between neighbouring tiles in px (200 = iSAID).")] = 200,
    min_area: Annotated[int, typer.Option(help="Drop visible pieces smaller than this many px.")] = 10,
    min_visible_fraction: Annotated[float, typer.Option(help="Drop pieces showing less than this share of the object.")] = 0.0,
    bands: Annotated[str | None, typer.Option(help="1-based bands to render as RGB, e.g. 4,3,2 (default 1,2,3).")] = None,
    stretch: Annotated[str, typer.Option(help="auto (uint8 as is, else 2–98 % stretch), percentile or none.")] = "auto",
    gsd: Annotated[float | None, typer.Option(help="Metres per pixel when the source does not say.")] = None,
    cluster: Annotated[
        list[str],
        typer.Option(
            help="Cluster category as NAME=only|dense (repeatable). Default: 'small vehicle=only' as in GeoPixelD."
        ),
    ] = [],  # noqa: B006 - typer needs a literal default
    images: Annotated[Path | None, typer.Option(help="COCO: folder holding the images.")] = None,
    annotations: Annotated[Path | None, typer.Option(help="GeoJSON: the features file for all SOURCE rasters.")] = None,
    geojson_crs: Annotated[str, typer.Option(help="GeoJSON coordinates' CRS: auto, or e.g. EPSG:4326.")] = "auto",
    marks_grid: Annotated[bool, typer.Option(help="Draw the 3×3 position grid on set-of-marks images.")] = False,
    marks_contours: Annotated[bool, typer.Option(help="Outline marked instances on set-of-marks images.")] = False,
    masks: Annotated[str, typer.Option(help="annotation (the labels' outlines) or sam (boxes → SAM masks; "
                                           "imagery alone → SAM automatic masks).")] = "annotation",
    sam_checkpoint: Annotated[Path | None, typer.Option(help="Your SAM weights (.pth); nothing is downloaded.")] = None,
    sam_model: Annotated[str, typer.Option(help="auto (from the checkpoint), vit_h, vit_l or vit_b.")] = "auto",
    device: Annotated[str, typer.Option(help="SAM device: auto, cpu, cuda, cuda:N.")] = "auto",
    sam_batch_size: Annotated[int, typer.Option(help="Tiles per SAM image-encoder batch.")] = 4,
    name_categories: Annotated[
        str | None,
        typer.Option(help="Name SAM automatic masks (--format raster --masks sam) with an LMM, choosing from "
                     "these categories: comma-separated, or @FILE with one per line. Unnamed masks stay "
                     "'object' and are flagged; calls go to OUT/naming_calls.parquet."),
    ] = None,
    name_base_url: Annotated[
        str | None,
        typer.Option(help="OpenAI-compatible endpoint for naming (default: the embedded offline describer on "
                     "127.0.0.1, which sees no appearance and answers 'unknown')."),
    ] = None,
    name_model: Annotated[str | None, typer.Option(help="Model name for naming.")] = None,
    name_api_key_env: Annotated[
        str, typer.Option(help="Environment variable holding the naming endpoint's API key.")
    ] = "OPENAI_API_KEY",
    workers: Annotated[
        str,
        typer.Option(help="Images prepared in parallel, in processes: auto (one per CPU core, at most one per "
                     "image; 1 with SAM) or a number. Each process also encodes PNGs on its share of the cores."),
    ] = "auto",
    resume: Annotated[bool, typer.Option(help="Reuse images already prepared with the same inputs and settings.")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Tile imagery, clip instances, compute spatial priors and draw set-of-marks images.

    Writes OUT/tiles/*.png, OUT/marks/*.png, OUT/tiles.parquet, OUT/instances.parquet,
    OUT/clusters.parquet and OUT/prepare_report.json (every skipped input with its reason).
    Exits with status 1 when no image could be prepared.
    """
    from .prepare import prepare as run_prepare

    options: dict[str, str] = {}
    if images:
        options["images"] = str(images)
    if annotations:
        options["annotations"] = str(annotations)
    if geojson_crs != "auto":
        options["geojson_crs"] = geojson_crs
    kwargs: dict[str, object] = {}
    clusters = _parse_clusters(cluster)
    if clusters is not None:
        kwargs["cluster_categories"] = clusters
    try:
        if name_categories is not None and masks != "sam":
            raise ValueError("--name-categories names SAM automatic masks: it needs --masks sam and --format raster")
        if masks == "sam" and sam_checkpoint is not None:
            from .sam.config import SamConfig, SamNamingConfig

            naming = None
            if name_categories is not None:
                naming = SamNamingConfig(
                    categories=_parse_categories(name_categories),
                    base_url=name_base_url,
                    model=name_model,
                    api_key_env=name_api_key_env,
                )
            kwargs["sam"] = SamConfig(
                checkpoint=sam_checkpoint, model_type=sam_model, device=device, batch_size=sam_batch_size, naming=naming
            )
        from .config import PrepareConfig
        from .workers import resolve_workers, without_pandas_integration

        without_pandas_integration()  # this process only prepares: pyarrow need not import pandas

        resolve_workers(workers, 1, PrepareConfig())  # a bad --workers fails here, as a usage error
        config = PrepareConfig(
            format=format,
            tile_size=tile_size,
            overlap=overlap,
            min_area=min_area,
            min_visible_fraction=min_visible_fraction,
            bands=_parse_bands(bands),
            stretch=stretch,
            gsd=gsd,
            marks_grid=marks_grid,
            marks_contours=marks_contours,
            options=options,
            masks=masks,
            **kwargs,
        )
        from .ingest import get_adapter

        get_adapter(format)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    from .sam.errors import SamError
    from .tables import PartFileError

    try:
        summary = run_prepare(sources, config, out, workers=workers, resume=resume, progress=progress)
    except SamError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except PartFileError as exc:
        typer.echo(f"error: {exc}\nRun the same command again: images whose parts are intact are reused, "
                   "this one is prepared again.", err=True)
        raise typer.Exit(2) from None
    typer.echo(summary.text())
    if summary.images_ok + summary.images_reused == 0:
        raise typer.Exit(1)


@app.command()
def describe(
    data: Annotated[Path, typer.Argument(help="A folder made by `geopixeld prepare`.")],
    base_url: Annotated[
        str | None,
        typer.Option(help="OpenAI-compatible endpoint, e.g. https://api.openai.com/v1 or a local vLLM server. "
                     "Default: start the embedded offline describer on 127.0.0.1."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model name (default: the offline describer).")] = None,
    api_key_env: Annotated[str, typer.Option(help="Environment variable holding the API key (never logged).")] = "OPENAI_API_KEY",
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once.")] = 8,
    timeout: Annotated[float, typer.Option(help="Per-request timeout in seconds.")] = 60.0,
    retries: Annotated[int, typer.Option(help="Retries on 429/5xx/timeouts (exponential back-off, Retry-After).")] = 5,
    prompts: Annotated[str | None, typer.Option(help="Prompt set name under prompts/ or a folder (default geopixeld-v1).")] = None,
    metric_priors: Annotated[bool, typer.Option(help="Add measured size (m) and orientation to instance prompts.")] = False,
    phrase_naming: Annotated[str, typer.Option(help="indexed ('tennis court-1', GeoPixelD) or noun (words of the sentence).")] = "indexed",
    detail: Annotated[str, typer.Option(help="Image detail sent to the LMM: auto, low or high.")] = "auto",
    cache_dir: Annotated[Path | None, typer.Option(help="Response cache folder (default DATA/lmm_cache).")] = None,
    prices: Annotated[Path | None, typer.Option(help="Price table (YAML/JSON) for cost estimates.")] = None,
    facts: Annotated[
        bool | None,
        typer.Option("--facts/--no-facts", help="Send measured facts as an extra request field (the offline "
                     "describer needs them; the OpenAI API rejects unknown fields). Default: only to 127.0.0.1."),
    ] = None,
    policy: Annotated[
        str,
        typer.Option(help="Which objects get a sentence: geopixeld (GeoPixelD's shape: a few objects described "
                     "alone, the rest grounded through groups, one fused caption; ≤ 6 calls per tile) or "
                     "all-instances (one call per marked object and per cluster; dense and costly)."),
    ] = "geopixeld",
    max_instances: Annotated[int | None, typer.Option(help="Objects described alone per tile (default 2).")] = None,
    max_group_calls: Annotated[int | None, typer.Option(help="Groups described by the LMM per tile; the rest get a "
                                                         "measured sentence (default 2).")] = None,
    max_phrases: Annotated[int | None, typer.Option(help="Grounded phrases per tile the grouping aims at (default 4).")] = None,
    compose: Annotated[
        bool | None,
        typer.Option("--compose/--no-compose", help="Fuse each tile's sentences into one paragraph with one more "
                     "call (default: on for geopixeld, off for all-instances)."),
    ] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Answer length limit in tokens (reasoning models spend "
                                            "part of it on hidden reasoning).")] = 300,
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0, help="Sampling temperature (not sent to models "
                                               "whose profile refuses it).")] = 0.2,
    lmm_profiles: Annotated[Path | None, typer.Option(help="Model request profiles (YAML/JSON): token-limit field, "
                                                      "temperature, image detail, structured outputs per model.")] = None,
    instances_per_call: Annotated[int, typer.Option(min=1, max=64, help="Marked objects of one tile asked in one "
                                                    "request (JSON answers; bad ones asked again singly). 1 = one "
                                                    "object per call, as the paper.")] = 1,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Send nothing: print calls, tokens and price per tier, "
                                          "for the whole dataset and per 1,000 tiles.")] = False,
    estimate: Annotated[bool, typer.Option("--estimate/--no-estimate", help="Print the estimate as the first line "
                                           "of a run (costs one planning pass over the tiles).")] = True,
    batch: Annotated[bool, typer.Option("--batch", help="Send every request through the OpenAI Batch API (/v1/files, "
                                        "/v1/batches; half price, within 24 h). Batch ids are kept in "
                                        "DATA/lmm_batches: a rerun resumes polling.")] = False,
    batch_poll: Annotated[float, typer.Option(min=0.1, help="Seconds between batch status checks.")] = 30.0,
    batch_max_wait: Annotated[float | None, typer.Option(help="Stop waiting for batches after this many seconds "
                                                         "(a rerun resumes them).")] = None,
    second_opinion: Annotated[str | None, typer.Option(metavar="MODEL", help="Ask every instance and group "
                                                       "request again of MODEL (same endpoint) and flag objects whose "
                                                       "two answers disagree (doubles those calls).")] = None,
    samples: Annotated[int, typer.Option(min=1, max=2, help="2: ask every instance and group request twice of the "
                                         "same model (needs --temperature > 0) and flag disagreement.")] = 1,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Describe prepared tiles with an LMM and ground the captions (GeoPixelD's tiers: holistic, instance,
    cluster; plus compose, which fuses them into one paragraph).

    The policy picks per tile a few objects to describe alone and grounds every other object through group
    phrases (see README, "Selection policy"). Writes DATA/samples.parquet (one row per tile: gcg_caption with `<p> phrase </p> [SEG]`, caption,
    phrases with character spans, masks in [SEG] order, flags) and DATA/lmm_calls.parquet (every call:
    status, attempts, latency, tokens, raw answer). Answers are cached: a rerun sends no request for
    what already succeeded.

    Cost: `--dry-run` prints calls, tokens (images by the provider's published rule) and price per tier
    before anything is sent; `--instances-per-call 4` asks four marked objects per request; `--batch` uses
    the Batch API at its discount (see README, "LMM cost and compatibility").
    """
    from .batchmode import BatchesStillRunning
    from .describe import DescribeConfig
    from .describe import describe as run_describe
    from .dryrun import dry_run as run_dry_run

    try:
        config = DescribeConfig(
            base_url=base_url, model=model, api_key_env=api_key_env, concurrency=concurrency, timeout_s=timeout,
            max_retries=retries, prompts=prompts, metric_priors=metric_priors, phrase_naming=phrase_naming,
            detail=detail, cache_dir=str(cache_dir) if cache_dir else None, prices_file=str(prices) if prices else None,
            send_facts=facts, policy=policy, max_instances=max_instances, max_group_calls=max_group_calls,
            max_phrases=max_phrases, compose=compose, max_tokens=max_tokens, temperature=temperature,
            profiles_file=str(lmm_profiles) if lmm_profiles else None, instances_per_call=instances_per_call,
            batch=batch, batch_poll_s=batch_poll, batch_max_wait_s=batch_max_wait,
            second_opinion=second_opinion, samples=samples,
        )
        if dry_run or estimate:
            planned = run_dry_run(data, config, progress=progress)
            typer.echo(planned.text() if dry_run else planned.headline())
            if dry_run:
                return
        summary = run_describe(data, config, progress=progress)
    except BatchesStillRunning as exc:
        typer.echo(f"not finished: {exc}", err=True)
        raise typer.Exit(3) from None
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(summary.text())


@app.command()
def validate(data: Annotated[Path, typer.Argument(help="A folder made by `geopixeld describe`.")]) -> None:
    """Check that every prepared tile has a sample and count the flags by code and severity.

    Flags are for review, never a reason to drop a sample; exits 1 when a tile has no sample.
    """
    from .flag_summary import summarize, summary_text

    try:
        typer.echo(summary_text(summarize(data)))
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def export(
    data: Annotated[Path, typer.Argument(help="A folder made by `geopixeld describe` (samples.parquet).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The EXPORT folder to write (replaced if it exists).")],
    formats: Annotated[str, typer.Option(help="Comma-separated: gcg-parquet, coco, geopixel, glamm, geo (GeoParquet "
                                         "layers geo/instances.parquet, geo/tiles.parquet).")] = "gcg-parquet,coco,geopixel,glamm,geo",
    split_by: Annotated[str, typer.Option(help="image (seeded hash of the source image) or block (geographic cells).")] = "image",
    ratios: Annotated[str, typer.Option(help="Split shares, train,val,test.")] = "0.8,0.1,0.1",
    seed: Annotated[int, typer.Option(help="Seed of the split hash.")] = 0,
    block_size: Annotated[float | None, typer.Option(help="Cell side in CRS units for --split-by block.")] = None,
    split_file: Annotated[Path | None, typer.Option(help="Explicit splits: CSV image_id,split or JSON {image_id: split}.")] = None,
    decisions: Annotated[Path | None, typer.Option(help="Review decisions Parquet (default: the review database).")] = None,
    db: Annotated[str | None, typer.Option("--db", help="Review database, an SQLAlchemy URL (default: DATA/review.sqlite when present).")] = None,
    shard_mb: Annotated[float, typer.Option(help="Target Parquet shard size in MB.")] = 256.0,
    name: Annotated[str | None, typer.Option(help="Dataset name for the card (default: DATA's folder name).")] = None,
    geo_crs: Annotated[str | None, typer.Option(help="geo format: reproject every georeferenced source into this CRS "
                                                "(e.g. EPSG:4326); default one GeoParquet file per source CRS.")] = None,
    max_severity: Annotated[str | None, typer.Option(
        help="Leave out samples with a flag more severe than this (info, warning, error), from every format.")] = None,
    exclude_flags: Annotated[str | None, typer.Option(
        help="Leave out samples carrying any of these flag codes, comma-separated (e.g. sam_empty,refusal).")] = None,
    geopixel_prefix: Annotated[str, typer.Option(
        help="geopixel format: folder GeoPixel's image/polygons paths start with, relative to the GeoPixel "
             "repository root; copy EXPORT/geopixel/ there.")] = "data/GeoPixelD",
) -> None:
    """Export samples as GCG Parquet shards (Hugging Face layout), COCO, GeoPixel and GLaMM formats.

    Rejected samples are left out, fixed ones use the reviewed text and masks; splits are assigned by
    source image, so tiles of one image never land in two splits. Streams (memory stays flat as the
    dataset grows) and writes OUT only when complete: an error leaves the previous export untouched.
    """
    from .export import export as run_export

    try:
        ratio_values = [float(v) for v in ratios.split(",")]
        summary = run_export(
            data, out, formats=[f.strip() for f in formats.split(",") if f.strip()], ratios=ratio_values,
            seed=seed, split_by=split_by, block_size=block_size, split_file=split_file, decisions=decisions,
            shard_mb=shard_mb, name=name, db_url=db, geo_crs=geo_crs, max_severity=max_severity,
            exclude_flags=exclude_flags, geopixel_prefix=geopixel_prefix,
        )
    except (ValueError, OSError) as exc:  # bad settings or inputs, a missing tile, a full disk: all name the file
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(summary.text())


@app.command()
def version() -> None:
    """Print the geopixeld version."""
    from . import __version__

    typer.echo(__version__)


@app.command()
def formats() -> None:
    """List the annotation formats prepare reads."""
    from .ingest import ADAPTERS

    for name, adapter in ADAPTERS.items():
        typer.echo(f"{name:8s} {adapter.help}")


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
