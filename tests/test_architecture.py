"""Dependencies point down: the library never imports the review app, the flows or Prefect; the core never
imports torch; importing the library, or the flows, changes no environment variable."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UP = ("annotations", "flows", "prefect", "prefect_dask")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def test_library_never_imports_the_app_the_flows_or_prefect() -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / "pipeline").rglob("*.py"))
        for line, name in _imports(path)
        if name.split(".")[0] in UP
    ]
    assert not bad, "the library reaches up:\n" + "\n".join(bad)


def test_core_library_never_imports_torch() -> None:
    optional = (ROOT / "pipeline" / "sam",)
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / "pipeline").rglob("*.py"))
        if not any(path.is_relative_to(o) for o in optional)
        for line, name in _imports(path)
        if name.split(".")[0] in ("torch", "torchvision", "segment_anything")
    ]
    assert not bad, "torch is optional; the core imports it:\n" + "\n".join(bad)


def test_importing_the_library_changes_no_environment_and_loads_nothing_above_it() -> None:
    code = (
        "import json, os, sys\n"
        # Third-party packages may touch the environment on import (OpenCV sets LD_LIBRARY_PATH): import
        # them first, so only our own modules are measured.
        "import cv2, numpy, pyarrow, rasterio, shapely, typer, pydantic, openai\n"
        "before = dict(os.environ)\n"
        "import pipeline.cli, pipeline.describe, pipeline.prepare, pipeline.export, pipeline.release\n"
        "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'annotations', 'flows', 'prefect', 'torch'})\n"
        "print(json.dumps({'changed': changed, 'loaded': loaded}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"changed": [], "loaded": []}


#: ``flows`` and each of its modules, found on disk (nothing is imported to list them).
FLOWS_MODULES = ["flows", *sorted(f"flows.{m.name}" for m in pkgutil.iter_modules([str(ROOT / "flows")]))]


@pytest.mark.parametrize("module", FLOWS_MODULES)
def test_importing_the_flows_changes_no_environment(module: str, tmp_path: Path) -> None:
    """Prefect's defaults (``PREFECT_HOME``, analytics off) are set by the entry points, not on import.

    A fresh interpreter with a clean environment (no ``PREFECT_*``; its own ``HOME`` and working folder, so
    neither ``~/.prefect`` nor the repository's ``prefect.toml`` is involved) imports Prefect and the
    third-party packages the flows use first: what they change on import is the baseline, not ours.
    """
    code = (
        "import importlib, json, os, sys\n"
        "import prefect, cv2, numpy, pyarrow, rasterio, shapely, typer, pydantic, openai, matplotlib\n"
        "before = dict(os.environ)\n"
        "importlib.import_module(sys.argv[1])\n"
        "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))\n"
        "print(json.dumps({'changed': changed, 'prefect_home': 'PREFECT_HOME' in before}))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code, module],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"changed": [], "prefect_home": False}, f"importing {module} changed {result['changed']}"


def test_top_level_help_lists_every_lazy_subcommand() -> None:
    from typer.testing import CliRunner

    from pipeline.cli import LAZY_SUBCOMMANDS, app

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for name in ("prepare", "describe", "validate", "export", *LAZY_SUBCOMMANDS):
        assert name in result.output
    sub = CliRunner().invoke(app, ["release", "--help"])
    assert sub.exit_code == 0 and "publish" in sub.output
