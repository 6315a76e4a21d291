"""geopixeld release: publish, list, show and pull versioned dataset releases.

A store is a local folder or any fsspec URL (s3://bucket/prefix); --store defaults to $GEOPIXELD_STORE.
S3-compatible endpoints: --store-option endpoint_url=http://host:9000 or $GEOPIXELD_S3_ENDPOINT_URL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from pipeline.release.errors import ReleaseError
from pipeline.release.publish import publish as publish_release
from pipeline.release.pull import list_releases, show_release
from pipeline.release.pull import pull as pull_release
from pipeline.release.store import STORE_ENV, parse_store_options

app = typer.Typer(no_args_is_help=True, help=__doc__)

StoreOpt = Annotated[
    str,
    typer.Option(
        "--store", "-s", envvar=STORE_ENV, help="Store URI: a local folder or an fsspec URL (s3://...)."
    ),
]
StoreOptionsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--store-option",
        "-o",
        help="fsspec storage option key=value, repeatable (e.g. endpoint_url=http://127.0.0.1:9000).",
    ),
]
SpecArg = Annotated[str, typer.Argument(help="NAME==X.Y.Z, NAME==latest or NAME (latest).")]


@contextmanager
def _user_errors() -> Iterator[None]:
    """Print release errors as one plain line and exit 1 instead of a traceback."""
    try:
        yield
    except ReleaseError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from exc


@app.command("publish")
def publish_cmd(
    export: Annotated[Path, typer.Argument(help="EXPORT folder written by the exporter.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Release name (letters, digits, '._-').")],
    version: Annotated[
        str,
        typer.Option(
            "--version", "-V", help="MAJOR.MINOR.PATCH; must be a large enough bump over the latest."
        ),
    ],
    store: StoreOpt,
    store_option: StoreOptionsOpt = None,
    license: Annotated[
        str | None, typer.Option(help="License (SPDX id or URL); default from the card.")
    ] = None,
    description: Annotated[
        str | None, typer.Option(help="Dataset description; default from the card.")
    ] = None,
    url: Annotated[str | None, typer.Option(help="Dataset homepage for croissant.json.")] = None,
    cite_as: Annotated[str | None, typer.Option(help="Citation (BibTeX or DOI URL).")] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Check the version bump and print the changelog entry only.")
    ] = False,
) -> None:
    """Publish EXPORT as an immutable release NAME==VERSION.

    The release holds the export plus manifest.json (sha256 of every file), croissant.json, the dataset
    card and CHANGELOG.md. The version bump is checked against the latest published version: MAJOR when
    samples or columns were removed (or a column changed type), MINOR when samples were added or changed,
    PATCH when only metadata/docs changed. An existing version is never overwritten.
    """
    with _user_errors():
        result = publish_release(
            export,
            name,
            version,
            store,
            store_options=parse_store_options(store_option),
            description=description,
            license=license,
            url=url,
            cite_as=cite_as,
            dry_run=dry_run,
        )
    over = f", {result.bump} bump over {result.previous}" if result.previous else ", first release"
    verb = "Would publish" if dry_run else "Published"
    typer.echo(f"{verb} {result.name}=={result.version} to {result.url}{over}")
    typer.echo("")
    typer.echo(result.entry.rstrip())


@app.command("list")
def list_cmd(
    store: StoreOpt,
    name: Annotated[str | None, typer.Argument(help="Only list versions of this release name.")] = None,
    store_option: StoreOptionsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the published releases in a store (oldest version first)."""
    with _user_errors():
        infos = list_releases(store, name, store_options=parse_store_options(store_option))
    if as_json:
        typer.echo(json.dumps([info.__dict__ for info in infos], indent=2))
        return
    if not infos:
        typer.echo(f"no releases in {store}")
        return
    for info in infos:
        splits = ", ".join(f"{s}={n}" for s, n in info.splits.items())
        typer.echo(f"{info.name}=={info.version}\t{info.created}\t{info.samples} samples ({splits})")


@app.command("show")
def show_cmd(
    spec: SpecArg,
    store: StoreOpt,
    store_option: StoreOptionsOpt = None,
    files: Annotated[bool, typer.Option(help="Also list every file with its sha256.")] = False,
    stats: Annotated[
        bool,
        typer.Option(help="Pull the release into the cache and print per-category and per-flag tables instead."),
    ] = False,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache for --stats (default $GEOPIXELD_CACHE or ~/.cache/geopixeld/releases).")
    ] = None,
) -> None:
    """Show the manifest of one release as JSON (files summarised unless --files), or --stats tables."""
    if stats:
        from pipeline.geo.frames import stats_text
        from pipeline.release.pull import ReleaseSpec, load

        with _user_errors():
            parsed = ReleaseSpec.parse(spec)
            release = load(parsed.name, parsed.version, store, cache_dir,
                           store_options=parse_store_options(store_option))
        typer.echo(stats_text(release, f"{parsed.name}=={release.path.name}"))
        return
    with _user_errors():
        manifest = show_release(spec, store, store_options=parse_store_options(store_option))
    data = manifest.model_dump(mode="json")
    if not files:
        data["files"] = f"{len(manifest.files)} files (use --files to list them)"
    typer.echo(json.dumps(data, indent=2))


@app.command("pull")
def pull_cmd(
    spec: SpecArg,
    store: StoreOpt,
    to: Annotated[
        Path, typer.Option("--to", "-t", help="Local folder; the release lands in TO/NAME/VERSION.")
    ],
    store_option: StoreOptionsOpt = None,
    full_verify: Annotated[
        bool, typer.Option(help="Re-hash every cached file instead of changed ones.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Replace a local copy that fails verification.")] = False,
) -> None:
    """Download a release, verifying every sha256; resumes interrupted pulls, no-op when cached."""
    with _user_errors():
        result = pull_release(
            spec,
            store,
            to,
            store_options=parse_store_options(store_option),
            verify="full" if full_verify else "fast",
            force=force,
        )
    if result.cached:
        typer.echo(f"{result.name}=={result.version} already at {result.path} (verified)")
    else:
        resumed = f", {len(result.reused)} resumed" if result.reused else ""
        typer.echo(
            f"Pulled {result.name}=={result.version} to {result.path} "
            f"({len(result.downloaded)} files downloaded{resumed}, all verified)"
        )
