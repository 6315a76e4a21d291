"""End to end on a real Prefect server: ``flows/serve.sh``, ``deployment run --watch``, a crash, a resume.

The module's stack (see ``prefect_stack`` in conftest) is what ``make serve`` starts, on a free loopback
port with a temporary PREFECT_HOME: server, process work pool, ``lmm-api`` limit, the deployments of the
repository's ``prefect.yaml``, and a worker; ``flows/down.sh`` stops it after the module.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

DEPLOYMENTS = {"build-geopixeld/local", "prepare/local", "describe/local", "export/local", "publish/local"}


def test_serve_sets_up_pool_limit_deployments_and_worker(prefect_stack: Any, kit: Any) -> None:
    flows = {f["id"]: f["name"] for f in prefect_stack.api("POST", "/flows/filter", {})}
    deployments = {
        f"{flows[d['flow_id']]}/{d['name']}": d for d in prefect_stack.api("POST", "/deployments/filter", {})
    }
    assert set(deployments) == DEPLOYMENTS
    for d in deployments.values():
        assert d["work_pool_name"] == "geopixeld-process"
        assert d["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(kit.root)}}
        ]
    build = deployments["build-geopixeld/local"]
    assert build["parameters"]["source"] == ["tests/data/isaid"] and build["parameters"]["store"]
    assert "out" in build["parameter_openapi_schema"]["properties"]
    assert prefect_stack.api("GET", "/work_pools/geopixeld-process")["type"] == "process"
    assert prefect_stack.api("GET", "/v2/concurrency_limits/lmm-api")["limit"] == 4
    for name in ("server", "worker"):
        os.kill(prefect_stack.pid(name), 0)  # running
    assert (prefect_stack.run_dir / "api_url").read_text().strip() == prefect_stack.api_url


def test_deployment_run_builds_and_a_stage_reruns_alone(prefect_stack: Any, tmp_path: Path, kit: Any) -> None:
    out, store = tmp_path / "out", tmp_path / "store"
    done = prefect_stack.run_deployment(
        "build-geopixeld/local",
        {
            "source": [str(kit.data / "dota")],
            "format": "dota",
            "out": str(out),
            "store": str(store),
            "name": "dota",
        },
    )
    assert "Completed" in done.stdout
    assert pq.read_table(out / "samples.parquet").num_rows == 1
    assert list((out / "export" / "data").glob("*.parquet"))
    assert (store / "dota" / "0.1.0" / "manifest.json").exists()
    summary = (out / "report" / "summary.md").read_text()
    assert "`dota==0.1.0`" in summary and (out / "report" / "instances_per_category.png").exists()
    artifacts = prefect_stack.api(
        "POST", "/artifacts/filter", {"artifacts": {"key": {"any_": ["geopixeld-summary"]}}}
    )
    assert artifacts and "data:image/png;base64," in artifacts[0]["data"]

    # One stage on its own, from its own deployment: everything it would do is cached.
    again = prefect_stack.run_deployment("describe/local", {"out": str(out)})
    assert "Completed" in again.stdout
    runs = prefect_stack.api(
        "POST", "/task_runs/filter", {"task_runs": {"name": {"like_": "describe P1888"}}}
    )
    assert [r["state"]["name"] for r in sorted(runs, key=lambda r: r["created"])] == ["Completed", "Cached"]


def test_killed_worker_then_rerun_completes_without_repeating_finished_work(
    prefect_stack: Any, counting_lmm: Any, isaid_threads_build: dict[str, Any], tmp_path: Path, kit: Any
) -> None:
    out = tmp_path / "out"
    params = {
        "source": [str(kit.data / "isaid")],
        "format": "isaid",
        "out": str(out),
        "base_url": counting_lmm.url,
        "concurrency": 4,
        "batch_tiles": 2,
        "store": str(tmp_path / "store"),
        "name": "isaid",
    }
    # Once a describe batch has written its part files, hold every new LMM request unanswered.
    counting_lmm.hold_when = lambda: any((out / "describe_parts").glob("*.calls.parquet"))
    prefect_stack.run_deployment("build-geopixeld/local", params, watch=False)
    kit.wait_for(lambda: counting_lmm.holding > 0, 300, "a finished describe batch and held requests")
    # Let the requests already past the gate be answered, and their answers reach the response cache:
    # an answer still on its way when the process dies is not finished work.
    kit.wait_for(lambda: counting_lmm.busy == 0, 60, "the answers in flight")
    time.sleep(2)

    answered = set(counting_lmm.answered)  # work that finished before the crash
    sent_before = len(counting_lmm.received)
    killed = kit.kill_tree(prefect_stack.pid("worker"))
    assert killed, "the worker had no flow run process"
    assert not (out / "samples.parquet").exists()
    counting_lmm.release()

    prefect_stack.serve()  # starts a new worker; server, pool, limit and deployments stay
    done = prefect_stack.run_deployment("build-geopixeld/local", params)
    assert "Completed" in done.stdout

    resent = counting_lmm.received[sent_before:]
    assert resent, "the unfinished batches sent nothing"
    assert not set(resent) & answered, "a request answered before the crash was sent again"
    assert len(resent) == len(set(resent))

    # Nothing lost: the same dataset as an uninterrupted build, every call answered once.
    assert kit.sample_table(out) == kit.sample_table(isaid_threads_build["out_dir"])
    calls = pq.read_table(out / "lmm_calls.parquet")
    assert set(calls.column("status").to_pylist()) == {"ok"}
    assert calls.num_rows == len(set(counting_lmm.received))
    run = json.loads((out / "report" / "run.json").read_text())
    assert run["status"] == "completed"
    assert run["this_run"]["images_cached"] == 2 and run["this_run"]["batches_cached"] >= 1
    assert run["publish"]["location"] == str(tmp_path / "store" / "isaid" / "0.1.0")
