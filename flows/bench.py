"""Orchestration overhead: the bundled iSAID sample through the Prefect deployment vs the plain CLI.

Both paths do the same work from empty output folders: prepare, describe (embedded offline describer),
export and publish to a local store. The plain path is four ``geopixeld`` commands; the orchestrated
path is ``prefect deployment run 'build-geopixeld/local' --watch`` against a stack that
``flows/serve.sh`` started on a free loopback port with a temporary PREFECT_HOME (its start-up is
timed apart). Each path then runs again on its finished outputs: the CLI reuses prepared images and
cached LMM answers, the flow reuses its cached task results.

``run_bench()`` returns the timings and the ratios, deployment / CLI: ``overhead_ratio`` (wall clock
of ``prefect deployment run --watch``, worker pick-up included), ``flow_run_ratio`` (the flow run's own
start-to-end, as the server recorded it) and ``rerun_ratio``. ``python -m flows.bench`` prints them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.loopback import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SAMPLE = ROOT / "tests" / "data" / "isaid"


def _timed(cmd: list[str], env: dict[str, str], timeout: float = 900) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return time.perf_counter() - start


def _cli(out: Path, store: Path, env: dict[str, str]) -> float:
    gp = str(BIN / "geopixeld")
    steps = [
        [gp, "prepare", str(SAMPLE), "--format", "isaid", "--out", str(out), "--no-progress"],
        [gp, "describe", str(out), "--no-progress"],
        [gp, "export", str(out), "--out", str(out / "export")],
    ]
    seconds = sum(_timed(s, env) for s in steps)
    if not (store / "isaid" / "0.1.0").exists():
        seconds += _timed(
            [
                gp,
                "release",
                "publish",
                str(out / "export"),
                "--name",
                "isaid",
                "--version",
                "0.1.0",
                "--store",
                str(store),
            ],
            env,
        )
    return seconds


def _latest_flow_run_seconds(api_url: str) -> float:
    body = json.dumps(
        {"flow_runs": {"parent_task_run_id": {"is_null_": True}}, "sort": "START_TIME_DESC", "limit": 1}
    )
    req = urllib.request.Request(
        api_url + "/flow_runs/filter",
        data=body.encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        run = json.loads(r.read())[0]
    start, end = (datetime.fromisoformat(run[k].replace("Z", "+00:00")) for k in ("start_time", "end_time"))
    return (end - start).total_seconds()


def _stop(pid_file: Path) -> None:
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def run_bench(keep: bool = False) -> dict[str, Any]:
    """Time the bundled sample through the deployment and through the CLI; see the module docstring."""
    work = Path(tempfile.mkdtemp(prefix="geopixeld-flows-bench-"))
    home = work / "prefect-home"
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "VENV": str(BIN.parent),
        "PREFECT_PORT": str(port),
        "PREFECT_UI": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    env.pop("PREFECT_API_URL", None)
    result: dict[str, Any] = {"sample": str(SAMPLE.relative_to(ROOT)), "work": str(work)}
    try:
        result["cli_s"] = _cli(work / "cli", work / "cli-store", env)
        result["cli_rerun_s"] = _cli(work / "cli", work / "cli-store", env)

        result["setup_s"] = _timed(["bash", str(ROOT / "flows" / "serve.sh")], env)
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
        params = {
            "source": [str(SAMPLE)],
            "format": "isaid",
            "out": str(work / "flow"),
            "store": str(work / "flow-store"),
            "name": "isaid",
        }
        run = [str(BIN / "prefect"), "deployment", "run", "build-geopixeld/local", "--watch"]
        for k, v in params.items():
            run += ["--param", f"{k}={json.dumps(v)}"]
        result["deployment_s"] = _timed(run, env)
        result["flow_run_s"] = _latest_flow_run_seconds(env["PREFECT_API_URL"])
        result["deployment_rerun_s"] = _timed(run, env)
        result["flow_rerun_s"] = _latest_flow_run_seconds(env["PREFECT_API_URL"])
    finally:
        subprocess.run(
            ["bash", str(ROOT / "flows" / "down.sh")], cwd=ROOT, env=env, capture_output=True, timeout=120
        )
        for name in ("worker", "server"):
            _stop(home / "run" / f"{name}.pid")
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    result["overhead_ratio"] = result["deployment_s"] / result["cli_s"]
    result["flow_run_ratio"] = result["flow_run_s"] / result["cli_s"]
    result["rerun_ratio"] = result["deployment_rerun_s"] / result["cli_rerun_s"]
    return result


def main() -> int:
    r = run_bench()
    print(json.dumps(r, indent=1))
    print(
        "\nflows: bundled iSAID sample, deployment vs plain CLI: "
        f"{r['deployment_s']:.1f} s vs {r['cli_s']:.1f} s "
        f"= {r['overhead_ratio']:.2f}x (flow run alone {r['flow_run_s']:.1f} s = {r['flow_run_ratio']:.2f}x; "
        f"rerun {r['deployment_rerun_s']:.1f} s vs {r['cli_rerun_s']:.1f} s = {r['rerun_ratio']:.2f}x); "
        f"stack start-up {r['setup_s']:.1f} s, not counted"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
