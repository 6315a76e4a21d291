"""The flows under Prefect's test harness: outputs, report and artifacts, caching across runs, failures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.usefixtures("prefect_harness")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def build_dota(root: Path, data: Path) -> dict[str, Any]:
    from flows.build import build_geopixeld

    return build_geopixeld(
        source=[str(data / "dota")],
        out=str(root / "out"),
        format="dota",
        store=str(root / "store"),
        name="dota",
        version="1.0.0",
    )


@pytest.fixture(scope="module")
def dota(tmp_path_factory: pytest.TempPathFactory, kit: Any) -> dict[str, Any]:
    """The bundled DOTA sample built once, offline, through to a release."""
    root = tmp_path_factory.mktemp("dota")
    return {"root": root, "out": root / "out", "first": build_dota(root, kit.data)}


def test_build_writes_dataset_release_and_report(dota: dict[str, Any]) -> None:
    out, result = dota["out"], dota["first"]
    tiles = pq.read_table(out / "tiles.parquet").num_rows
    samples = pq.read_table(out / "samples.parquet")
    calls = pq.read_table(out / "lmm_calls.parquet")
    assert tiles == samples.num_rows == 1
    assert calls.num_rows > 1 and set(calls.column("status").to_pylist()) == {"ok"}
    prepare_report = json.loads((out / "prepare_report.json").read_text())
    assert prepare_report["summary"]["images_ok"] == 1 and prepare_report["images"][0]["image_id"] == "P1888"
    assert json.loads((out / "describe_report.json").read_text())["summary"]["samples"] == 1

    assert sorted(p.name for p in (out / "export" / "data").glob("*.parquet"))
    release = result["release"]
    assert (release["name"], release["version"], release["already_published"]) == ("dota", "1.0.0", False)
    assert (Path(release["location"]) / "manifest.json").exists()

    assert result["this_run"] == {
        "images": 1,
        "images_cached": 0,
        "batches": 1,
        "batches_cached": 0,
        "batches_run": 1,
        "batches_failed": 0,
        "lmm_sent": calls.num_rows,
        "input_tokens": sum(calls.column("input_tokens").to_pylist()),
        "output_tokens": sum(calls.column("output_tokens").to_pylist()),
    }

    report = Path(result["report"])
    assert report == out / "report" / "summary.md"
    text = report.read_text()
    for heading in ("## Counts", "## Flags by code", "## LMM calls", "## Skipped inputs", "## Plots"):
        assert heading in text
    assert f"| dataset | {calls.num_rows} | {calls.num_rows} | 0 | 0 |" in text
    assert "`dota==1.0.0`" in text
    for png in ("instances_per_category", "instance_sizes"):
        assert (out / "report" / f"{png}.png").read_bytes().startswith(PNG_MAGIC)
        assert f"]({png}.png)" in text
    run = json.loads((out / "report" / "run.json").read_text())
    assert run["status"] == "completed" and run["prepare"]["tiles"] == 1


def test_artifacts_show_summary_plots_tables_and_progress(dota: dict[str, Any]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterType

    with get_client(sync_client=True) as client:
        markdown = client.read_latest_artifacts()
        by_key = {a.key: a for a in markdown if a.key}
        progress = client.read_artifacts(
            artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"]))
        )
    summary = by_key["geopixeld-summary"]
    assert summary.type == "markdown"
    assert "data:image/png;base64,iVBORw0KGgo" in str(summary.data)  # plots inline, as PNG
    assert "## Flags by code" in str(summary.data)
    assert by_key["geopixeld-flags"].type == "table"
    assert by_key["geopixeld-skipped"].type == "table"
    # Progress artifacts are updated as tasks finish: the last update says all done, at 100 %.
    done = [a for a in progress if (a.description or "").endswith(": 1 of 1 done")]
    assert {"images prepared: 1 of 1 done", "tile batches described: 1 of 1 done"} <= {
        a.description for a in done
    }
    assert all(a.data == 100.0 for a in done)


def test_rerun_redoes_nothing(dota: dict[str, Any], kit: Any) -> None:
    before = kit.sample_table(dota["out"])
    second = build_dota(dota["root"], kit.data)
    assert second["this_run"] == {
        "images": 1,
        "images_cached": 1,
        "batches": 1,
        "batches_cached": 1,
        "batches_run": 0,
        "batches_failed": 0,
        "lmm_sent": 0,
        "input_tokens": 0,
        "output_tokens": 0,
    }
    assert second["release"]["location"] == dota["first"]["release"]["location"]
    assert kit.sample_table(dota["out"]) == before
    text = Path(second["report"]).read_text()
    assert "0 of 1 describe batches ran (1 reused from the Prefect cache), 0 LMM requests sent" in text


def test_deleted_outputs_are_made_again(dota: dict[str, Any], kit: Any) -> None:
    out = dota["out"]
    before = kit.sample_table(out)
    shutil.rmtree(out / "export")
    shutil.rmtree(out / "describe_parts")
    third = build_dota(dota["root"], kit.data)
    # The cached batch named part files that were gone: it ran again, answered by the LMM response cache.
    assert third["this_run"]["batches_run"] == 1 and third["this_run"]["lmm_sent"] == 0
    assert list((out / "describe_parts").glob("*.samples.parquet"))
    assert list((out / "export" / "data").glob("*.parquet"))
    assert kit.sample_table(out) == before
    # The same files again under the same version: the release is reused, not refused.
    assert third["release"]["already_published"] is True


def test_failed_lmm_calls_are_flagged_then_retried_on_rerun(
    tmp_path: Path, kit: Any, offline_upstream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.stages
    from flows.stages import describe_stage, prepare_stage

    # No task-level retries here (their delays are for real endpoints), and no client retries either.
    monkeypatch.setattr(
        flows.stages, "describe_tile_batch", flows.stages.describe_tile_batch.with_options(retries=0)
    )
    out = str(tmp_path / "out")
    prepare_stage([str(kit.data / "dota")], out, format="dota")
    port = kit.free_port()
    down = describe_stage(out, base_url=f"http://127.0.0.1:{port}/v1", describe_options={"max_retries": 0})
    assert down["this_run"]["batches_failed"] == 1
    flagged = down["flags_by_code"]["lmm_failed"] + down["flags_by_code"].get("compose_failed", 0)
    assert flagged == down["lmm"]["calls"]  # every call failed, every one flagged
    assert pq.read_table(Path(out) / "samples.parquet").column("max_severity").to_pylist() == ["error"]

    # The endpoint comes up at the same address: the failed batch was not cached, so it runs again.
    proxy = kit.CountingProxy(offline_upstream, port=port)
    try:
        up = describe_stage(out, base_url=f"http://127.0.0.1:{port}/v1", describe_options={"max_retries": 0})
    finally:
        proxy.close()
    assert up["this_run"]["batches_run"] == 1 and up["this_run"]["batches_failed"] == 0
    assert "lmm_failed" not in up["flags_by_code"]
    assert len(proxy.received) == len(set(proxy.received)) == up["lmm"]["calls"]


def test_a_bad_image_is_reported_not_cached(tmp_path: Path, kit: Any) -> None:
    from flows.stages import prepare_stage

    src = tmp_path / "src"
    shutil.copytree(kit.data / "dota", src)
    shutil.copy(src / "P1888.png", src / "P0001.png")
    (src / "P0001.txt").write_text("not a DOTA label line\n")
    (src / "P0002.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (src / "P0002.txt").write_text("")
    out = str(tmp_path / "out")
    first = prepare_stage([str(src)], out, format="dota")
    assert first["images_ok"] == 2 and first["images_failed"] == 1
    assert any("P0002.png" in s["path"] for s in first["skipped"])
    again = prepare_stage([str(src)], out, format="dota")
    # The good images come from the cache; the failed one is tried again (and fails again).
    assert again["this_run"] == {"images": 3, "images_cached": 2}
    assert again["images_failed"] == 1


def test_runner_must_be_known() -> None:
    from flows.build import build_geopixeld

    with pytest.raises(ValueError, match="runner must be one of threads, dask"):
        build_geopixeld(source=["x"], out="y", runner="ray")


def test_cli_build_prints_where_dataset_release_and_summary_are(tmp_path: Path, kit: Any) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "build",
            str(kit.data / "dota"),
            "--format",
            "dota",
            "--out",
            str(out),
            "--name",
            "dota-cli",
            "--version",
            "2.0.0",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert str(out) in lines["dataset"] and str(out / "samples.parquet") in lines["dataset"]
    assert str(out / "export") in lines["export"]
    assert (
        "dota-cli==2.0.0" in lines["release"]
        and str(out / "releases" / "dota-cli" / "2.0.0") in lines["release"]
    )
    assert str(out / "report" / "summary.md") in lines["summary"]
    assert (out / "releases" / "dota-cli" / "2.0.0" / "manifest.json").exists()


def test_cli_refuses_an_unknown_runner(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, ["build", "--out", str(tmp_path), "--runner", "ray"])
    assert result.exit_code == 2 and "runner must be one of" in result.output
