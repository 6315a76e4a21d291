"""Which code built a release: the geopixeld version and the git commit of the checkout."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
from pathlib import Path


def geopixeld_version() -> str:
    """``pipeline.__version__``; the installed distribution's version if the package is shadowed.

    (A ``tests/pipeline`` folder on ``sys.path`` can turn ``pipeline`` into a namespace package without
    ``__version__`` while its submodules still import through the editable install.)
    """
    try:
        from pipeline import __version__
    except ImportError:
        return importlib.metadata.version("geopixeld")
    return __version__


def git_commit() -> str | None:
    """Commit of the checkout the ``pipeline`` package runs from; ``None`` outside a git checkout."""
    package_dir = Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "-C", str(package_dir), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None
