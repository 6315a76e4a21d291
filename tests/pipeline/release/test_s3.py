"""An S3 store on a loopback moto server: publish, claim, visibility, pull, tamper and load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pipeline.release import (
    ChecksumError,
    ReleaseExistsError,
    Store,
    list_releases,
    load,
    publish,
    pull,
    show_release,
)
from pipeline.release.cli import app
from pipeline.release.publish import commit_release, plan_release, stage_release


def _client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def _keys(endpoint: str, bucket: str, prefix: str) -> list[str]:
    pages = _client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_publish_list_show_pull_load_on_s3(
    s3_endpoint: str, s3_bucket: str, make_export, make_rows, tmp_path: Path
) -> None:
    uri = f"s3://{s3_bucket}/releases"
    options = {"endpoint_url": s3_endpoint}
    val = make_rows(2, "val", start=100)
    first = publish(
        make_export("a", {"train": make_rows(4), "val": val}), "tiny", "1.0.0", uri, store_options=options
    )
    assert first.url == f"s3://{s3_bucket}/releases/tiny/1.0.0"
    keys = _keys(s3_endpoint, s3_bucket, "releases/tiny/1.0.0/")
    assert "releases/tiny/1.0.0/manifest.json" in keys and "releases/tiny/1.0.0/.claim" in keys
    assert {k.removeprefix("releases/tiny/1.0.0/") for k in keys} == {
        e.path for e in first.manifest.files
    } | {
        "manifest.json",
        ".claim",
    }

    second = publish(
        make_export("b", {"train": make_rows(5), "val": val}), "tiny", "1.1.0", uri, store_options=options
    )
    assert second.previous == "1.0.0" and second.bump == "MINOR"
    assert [(r.version, r.samples) for r in list_releases(uri, store_options=options)] == [
        ("1.0.0", 6),
        ("1.1.0", 7),
    ]
    assert show_release("tiny==latest", uri, store_options=options).version == "1.1.0"

    pulled = pull("tiny==1.1.0", uri, tmp_path / "to", store_options=options)
    assert len(pulled.downloaded) == len(pulled.manifest.files)
    assert (pulled.path / "CHANGELOG.md").read_text().count("## 1.") == 2
    assert pull("tiny==1.1.0", uri, tmp_path / "to", store_options=options).cached

    splits = load("tiny", "1.0.0", store=uri, cache_dir=tmp_path / "cache", store_options=options)
    assert {s: d.count_rows() for s, d in splits.items()} == {"train": 4, "val": 2}


def test_s3_endpoint_from_environment(
    s3_endpoint: str, s3_bucket: str, make_export, make_rows, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOPIXELD_S3_ENDPOINT_URL", s3_endpoint)
    store = Store.from_uri(f"s3://{s3_bucket}/r")
    assert store.storage_options["client_kwargs"] == {"endpoint_url": s3_endpoint}
    publish(make_export("a", {"train": make_rows(2)}), "tiny", "0.1.0", store)
    assert [r.version for r in list_releases(f"s3://{s3_bucket}/r")] == ["0.1.0"]


def test_conditional_claim_is_exclusive(s3_endpoint: str, s3_bucket: str) -> None:
    store = Store.from_uri(f"s3://{s3_bucket}/x", {"endpoint_url": s3_endpoint})
    path = store.path("claims", "one")
    store.create_exclusive(path, b"first")
    with pytest.raises(FileExistsError):
        store.create_exclusive(path, b"second")
    assert store.read_bytes(path) == b"first"


def test_claimed_or_published_version_is_refused(
    s3_endpoint: str, s3_bucket: str, make_export, make_rows
) -> None:
    uri, options = f"s3://{s3_bucket}/releases", {"endpoint_url": s3_endpoint}
    export = make_export("a", {"train": make_rows(3)})
    publish(export, "tiny", "1.0.0", uri, store_options=options)
    with pytest.raises(ReleaseExistsError, match="release tiny==1.0.0 already exists"):
        publish(export, "tiny", "1.0.0", uri, store_options=options)

    # A publisher that claimed 1.1.0 and is still uploading (or died): the version is invisible and blocked.
    client = _client(s3_endpoint)
    client.put_object(Bucket=s3_bucket, Key="releases/tiny/1.1.0/.claim", Body=b"{}")
    client.put_object(
        Bucket=s3_bucket, Key="releases/tiny/1.1.0/data/train-00000-of-00001.parquet", Body=b"x"
    )
    assert [r.version for r in list_releases(uri, store_options=options)] == ["1.0.0"]
    grown = make_export("b", {"train": make_rows(4)})
    with pytest.raises(
        ReleaseExistsError, match=r"claim s3://.*/tiny/1.1.0/.claim exists; if no publish is running"
    ):
        publish(grown, "tiny", "1.1.0", uri, store_options=options)
    assert _keys(s3_endpoint, s3_bucket, "releases/tiny/1.1.0/") == [
        "releases/tiny/1.1.0/.claim",
        "releases/tiny/1.1.0/data/train-00000-of-00001.parquet",
    ]


def test_tampered_s3_object_fails_pull(
    s3_endpoint: str, s3_bucket: str, make_export, make_rows, tmp_path: Path
) -> None:
    uri, options = f"s3://{s3_bucket}/releases", {"endpoint_url": s3_endpoint}
    publish(make_export("a", {"train": make_rows(3)}), "tiny", "1.0.0", uri, store_options=options)
    client = _client(s3_endpoint)
    key = "releases/tiny/1.0.0/data/train-00000-of-00001.parquet"
    body = bytearray(client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    client.put_object(Bucket=s3_bucket, Key=key, Body=bytes(body))
    with pytest.raises(ChecksumError, match=rf"checksum mismatch for s3://{s3_bucket}/{key}"):
        pull("tiny==1.0.0", uri, tmp_path / "to", store_options=options)
    assert not (tmp_path / "to" / "tiny").exists()


def test_cli_with_store_option(
    s3_endpoint: str, s3_bucket: str, make_export, make_rows, tmp_path: Path
) -> None:
    runner = CliRunner()
    common = ["--store", f"s3://{s3_bucket}/cli", "--store-option", f"endpoint_url={s3_endpoint}"]
    export = make_export("a", {"train": make_rows(2)})
    published = runner.invoke(app, ["publish", str(export), "-n", "tiny", "-V", "2.0.0", *common])
    assert published.exit_code == 0, published.output
    listed = runner.invoke(app, ["list", *common])
    assert listed.output.startswith("tiny==2.0.0\t")
    pulled = runner.invoke(app, ["pull", "tiny", *common, "--to", str(tmp_path / "to")])
    assert pulled.exit_code == 0 and (tmp_path / "to" / "tiny" / "2.0.0" / "croissant.json").exists()


def test_losing_an_s3_commit_race_fails_cleanly(
    s3_endpoint: str, s3_bucket: str, make_export, make_rows, tmp_path: Path
) -> None:
    """Both publishers pass planning; only the one whose conditional claim succeeds uploads anything."""
    store = Store.from_uri(f"s3://{s3_bucket}/race", {"endpoint_url": s3_endpoint})
    staged_a = stage_release(plan_release(make_export("a", {"train": make_rows(3)}), "tiny", "1.0.0", store))
    staged_b = stage_release(plan_release(make_export("b", {"train": make_rows(5)}), "tiny", "1.0.0", store))
    commit_release(staged_a)
    with pytest.raises(ReleaseExistsError, match="is already published or being published"):
        commit_release(staged_b)
    assert not staged_a.directory.exists() and not staged_b.directory.exists()
    manifest = show_release("tiny==1.0.0", store)
    assert manifest.counts["samples"] == 3
    assert pull("tiny==1.0.0", store, tmp_path / "to", verify="full").manifest == manifest
