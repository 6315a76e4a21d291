"""Prefect 3 orchestration of the geopixeld pipeline (see flows/README.md).

* :mod:`flows.build`: ``build-geopixeld``, the whole pipeline as one flow (``geopixeld build``);
* :mod:`flows.stages`: ``prepare``, ``describe``, ``export``, ``publish``, each deployable on its own;
* :mod:`flows.tasks`: the tasks (one library call each; retries, content-keyed caching, ``lmm-api``);
* :mod:`flows.runners`: the task runner chosen by parameter (threads, or Dask through prefect-dask);
* :mod:`flows.artifacts`: the run report (Markdown summary, plots) on disk and in the Prefect UI;
* :mod:`flows.cli`: ``geopixeld build`` and the server set-up used by ``flows/serve.sh``;
* :mod:`flows.bench`: orchestration overhead against the plain command line;
* :mod:`flows.environment`: the Prefect defaults (local home, analytics off) each entry point sets.

The library (``pipeline``) never imports Prefect; everything here only wires it together. Importing
``flows`` or any of its modules changes no environment variable: the entry points set Prefect's
defaults themselves, before Prefect is imported (see :mod:`flows.environment`).
"""

from pathlib import Path

#: The repository root (``prefect.yaml`` lives there).
ROOT = Path(__file__).resolve().parent.parent
