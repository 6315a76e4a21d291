"""Prefect 3 orchestration of the geopixeld pipeline (see flows/README.md).

* :mod:`flows.build`: ``build-geopixeld``, the whole pipeline as one flow (``geopixeld build``);
* :mod:`flows.stages`: ``prepare``, ``describe``, ``export``, ``publish``, each deployable on its own;
* :mod:`flows.tasks`: the tasks (one library call each; retries, content-keyed caching, ``lmm-api``);
* :mod:`flows.runners`: the task runner chosen by parameter (threads, or Dask through prefect-dask);
* :mod:`flows.artifacts`: the run report (Markdown summary, plots) on disk and in the Prefect UI;
* :mod:`flows.cli`: ``geopixeld build`` and the server set-up used by ``flows/serve.sh``;
* :mod:`flows.bench`: orchestration overhead against the plain command line.

The library (``pipeline``) never imports Prefect; everything here only wires it together.
"""

import os
from collections.abc import MutableMapping
from pathlib import Path

#: The repository root (``prefect.yaml`` lives there).
ROOT = Path(__file__).resolve().parent.parent


def prefect_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
    """Keep Prefect local unless told otherwise: ``PREFECT_HOME`` under the project, analytics off.

    Sets ``PREFECT_HOME`` (the repository's ``.prefect/``, or ``./.prefect`` outside a checkout),
    ``PREFECT_SERVER_ANALYTICS_ENABLED=false`` and ``DO_NOT_TRACK=1`` where they are not set. Prefect
    reads them when it is imported, so this runs when ``flows`` is imported, before any flow module.
    """
    home = ROOT if (ROOT / "prefect.yaml").exists() else Path.cwd()
    environ.setdefault("PREFECT_HOME", str(home / ".prefect"))
    environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    environ.setdefault("DO_NOT_TRACK", "1")


prefect_defaults()
