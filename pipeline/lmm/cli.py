"""``geopixeld lmm``: tools around the LMM layer (the offline describer server)."""

from __future__ import annotations

import logging

import typer

from .types import OFFLINE_MODEL

app = typer.Typer(
    no_args_is_help=True,
    help=(
        "LMM tools. `serve` runs the offline describer: an OpenAI-compatible server that writes captions "
        "from measured facts, so the pipeline needs no network or GPU."
    ),
)

SERVE_HELP = "\n\n".join(
    [
        f"Serve the offline describer ({OFFLINE_MODEL}) at http://HOST:PORT/v1.",
        "Endpoints: GET /v1/models and POST /v1/chat/completions (text and base64 image_url parts; the "
        "measured facts travel in the extra body field geopixeld_facts).",
        "Answers are written from measurements only (category, position, size in metres, orientation, the "
        "colour of the mask's pixels, counts) and never claim more; the reported model name says it is "
        "offline. Any API key is accepted and ignored.",
        "Point the describe stage at it with base_url http://127.0.0.1:PORT/v1. Stop it with Ctrl-C.",
    ]
)


@app.callback()
def _lmm() -> None:
    """Keep `serve` a subcommand even while it is the only command."""


@app.command(help=SERVE_HELP)
def serve(
    host: str = typer.Option(
        "127.0.0.1", help="Interface to bind. Keep it on loopback: the server has no authentication."
    ),
    port: int = typer.Option(8765, min=0, max=65535, help="TCP port (0 picks a free one)."),
    latency_ms: float = typer.Option(
        0.0, min=0.0, help="Artificial delay before each answer, in milliseconds (for benchmarks)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every request."),
) -> None:
    """Run the offline describer in the foreground."""
    from .server import main

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s")
    main(host=host, port=port, latency_s=latency_ms / 1000.0)


if __name__ == "__main__":
    app()
