"""Review app commands: ``serve`` the annotator page, ``add-user``, ``report``, ``export-decisions``,
``export-events``.

Mounted as ``geopixeld review``. Decisions live in ``DIR/review.sqlite`` unless ``--db`` names another
SQLAlchemy URL (e.g. ``postgresql+psycopg://review@db/geopixeld`` for a team).
"""

from __future__ import annotations

import ipaddress
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help=__doc__, add_completion=False)

DataOption = Annotated[
    Path,
    typer.Option(
        "--data", exists=True, file_okay=False, dir_okay=True, help="Data directory (samples.parquet)."
    ),
]
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db", help="SQLAlchemy URL of the review database (default: SQLite file DIR/review.sqlite)."
    ),
]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def serve(
    data: DataOption,
    db: DbOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8765,
    spot_check_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of unflagged samples queued as spot checks.")
    ] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed that picks the spot checks.")] = 0,
    lease_minutes: Annotated[
        int, typer.Option(min=1, help="Minutes a sample stays with an annotator without a decision.")
    ] = 240,
    secure_cookies: Annotated[
        bool, typer.Option(help="Send the session cookie only over HTTPS (use behind a TLS proxy).")
    ] = False,
    session_hours: Annotated[float, typer.Option(min=0.1, help="How long a login lasts.")] = 12.0,
    double_review_rate: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Share of queued samples reviewed by two annotators blind (0: off)."
        ),
    ] = 0.0,
) -> None:
    """Serve the review page at http://HOST:PORT/ (log in with an account from add-user)."""
    import uvicorn

    from .app import create_app
    from .queue import QueueConfig

    if not _is_loopback(host) and not secure_cookies:
        typer.echo(
            f"warning: serving on {host} without --secure-cookies; put it behind HTTPS before sharing it.",
            err=True,
        )
    config = QueueConfig(
        spot_check_rate=spot_check_rate,
        seed=seed,
        lease=timedelta(minutes=lease_minutes),
        double_review_rate=double_review_rate,
    )
    review_app = create_app(
        data,
        db,
        queue_config=config,
        secure_cookies=secure_cookies,
        session_ttl=timedelta(hours=session_hours),
    )
    typer.echo(f"review app for {data} on http://{host}:{port}/", err=True)
    uvicorn.run(review_app, host=host, port=port, log_level="warning", server_header=False)


@app.command("add-user")
def add_user_command(
    name: Annotated[str, typer.Argument(help="Annotator name (letters, digits, '.', '_', '-').")],
    data: DataOption,
    db: DbOption = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
    ] = False,
    replace: Annotated[
        bool, typer.Option(help="Set a new password (and role) for an existing user.")
    ] = False,
    role: Annotated[
        str, typer.Option(help="annotator, or lead (bulk accept, user management, reports).")
    ] = "annotator",
) -> None:
    """Create an account (prompts for the password unless --password-stdin)."""
    from .auth import add_user
    from .db import default_db_url, open_engine

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    engine = open_engine(db or default_db_url(data))
    try:
        add_user(engine, name, password, replace=replace, role=role)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    finally:
        engine.dispose()
    typer.echo(f"user {name} ({role}) {'updated' if replace else 'created'}")


def _print_agreement(data: Path, db: str | None) -> None:
    """Two-reviewer agreement (``double.agreement_report``): share of agreement and Cohen's kappa, overall
    and per flag code; nothing when no sample was reviewed twice."""
    from .db import default_db_url, open_engine
    from .double import agreement_report

    engine = open_engine(db or default_db_url(data))
    try:
        result = agreement_report(engine)
    finally:
        engine.dispose()
    if not result["pairs"] and not result["adjudication"]["open"]:
        return
    typer.echo("\n## Two-reviewer agreement\n")

    def fmt(value: float | None, percent: bool = False) -> str:
        if value is None:
            return "-"
        return f"{100 * value:.1f}%" if percent else f"{value:.3f}"

    typer.echo(f"samples reviewed twice: {result['pairs']}")
    typer.echo(f"agreement: {fmt(result['agreement'], True)}   Cohen's kappa: {fmt(result['kappa'])}")
    adjudication = result["adjudication"]
    typer.echo(f"adjudication: {adjudication['open']} open, {adjudication['decided']} decided by a lead")
    if result["by_flag_code"]:
        width = max(len("flag code"), *(len(r["flag_code"]) for r in result["by_flag_code"]))
        typer.echo(f"{'flag code':<{width}}  pairs  agreement  kappa")
        for row in result["by_flag_code"]:
            typer.echo(
                f"{row['flag_code']:<{width}}  {row['pairs']:>5}  {fmt(row['agreement'], True):>9}  {fmt(row['kappa']):>6}"
            )


@app.command("export-decisions")
def export_decisions_command(
    data: DataOption,
    out: Annotated[Path, typer.Option("--out", help="Parquet file to write.")],
    db: DbOption = None,
) -> None:
    """Write one row per tile (review_status, reviewer, decided_at, fixed caption/phrases/masks, revision)."""
    from .export import export_decisions

    table = export_decisions(data, out, db)
    counts: dict[str, int] = {}
    for status in table.column("review_status").to_pylist():
        counts[status] = counts.get(status, 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    typer.echo(f"wrote {table.num_rows} rows to {out} ({summary})")


@app.command("export-events")
def export_events_command(
    data: DataOption,
    out: Annotated[Path, typer.Option("--out", help="Parquet file, or .jsonl for JSON Lines.")],
    db: DbOption = None,
) -> None:
    """Write the append-only audit log (who, when, action, before -> after)."""
    from .export import export_events

    table = export_events(data, out, db)
    typer.echo(f"wrote {table.num_rows} events to {out}")


@app.command("report")
def report_command(
    data: DataOption,
    db: DbOption = None,
    decisions: Annotated[
        Path | None, typer.Option(help="A decisions Parquet file (export-decisions) instead of the database.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Also write the report here (.json: JSON, else Markdown).")
    ] = None,
) -> None:
    """Flag calibration from decisions: per flag code, rejected/fixed vs accepted samples, and the
    rejected-or-fixed share of unflagged spot checks (the miss estimate); with two-reviewer mode, the
    reviewers' agreement and Cohen's kappa, overall and per flag code."""
    from pipeline.calibration import calibrate, write_report
    from pipeline.export.decisions import DecisionsError

    try:
        report = calibrate(data, decisions, db)
    except (DecisionsError, ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(report.markdown())
    _print_agreement(data, db)
    if out is not None:
        write_report(report, out)
        typer.echo(f"written to {out}", err=True)


if __name__ == "__main__":
    app()
