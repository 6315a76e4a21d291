"""The environment Prefect runs with when our entry points start it: local, with analytics off.

Prefect reads its settings when it is imported, so each entry point calls :func:`prefect_defaults` (or
:func:`prefect_environment`) first, before anything imports ``prefect``: ``geopixeld build`` and
``python -m flows.cli`` (:mod:`flows.cli`), ``python -m flows.build`` and ``python -m flows.stages``.
The shell entry points set the same variables themselves (``Makefile``, ``flows/serve.sh``), and
``prefect.toml`` gives ``prefect ...`` commands run from the repository root the same home and no
analytics. Importing a module of ``flows`` changes no environment variable.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import MutableMapping
from pathlib import Path

from flows import ROOT


def prefect_defaults(environ: MutableMapping[str, str] | None = None) -> None:
    """Keep Prefect local unless told otherwise: ``PREFECT_HOME`` under the project, analytics off.

    Sets ``PREFECT_HOME`` (the repository's ``.prefect/``, or ``./.prefect`` outside a checkout),
    ``PREFECT_SERVER_ANALYTICS_ENABLED=false`` and ``DO_NOT_TRACK=1`` in ``environ`` (default
    ``os.environ``) where they are not set. Call it before ``prefect`` is imported.
    """
    env = os.environ if environ is None else environ
    home = ROOT if (ROOT / "prefect.yaml").exists() else Path.cwd()
    env.setdefault("PREFECT_HOME", str(home / ".prefect"))
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("DO_NOT_TRACK", "1")


def prefect_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Prefect's variables for the commands of :mod:`flows.cli`: :func:`prefect_defaults`, and
    ``PREFECT_API_URL`` from a running ``make serve`` when it answers. Call before ``prefect`` is imported.
    """
    env = os.environ if environ is None else environ
    prefect_defaults(env)
    if not env.get("PREFECT_API_URL"):
        url_file = Path(env["PREFECT_HOME"]) / "run" / "api_url"
        if url_file.exists():
            url = url_file.read_text().strip()
            if _answers(url):
                env["PREFECT_API_URL"] = url
    return dict(env)


def _answers(api_url: str) -> bool:
    if not api_url.startswith(("http://127.0.0.1:", "http://localhost:")):
        return False
    try:
        # Loopback only (checked above).
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False
