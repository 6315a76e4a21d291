"""Describe through the OpenAI Batch API (``geopixeld describe --batch``): every request at the batch price.

A describe run's requests depend on earlier answers (grouped objects asked again singly, the compose call
built from a tile's sentences), so the dataset is filled in passes, each a walk over all tiles with a
:class:`~pipeline.lmm.deferred.DeferredClient` that answers from the cache and queues what is missing into
a :class:`~pipeline.lmm.batch.BatchRunner` (input files written and submitted as they fill, so memory holds
one tile batch), then one wait for the batches to end:

1. the first round (holistic, instance — or grouped instance — and group requests);
2. objects of grouped calls whose answers were missing or invalid, asked singly;
3. the compose calls, now that every tile's sentences are known.

A pass that queues nothing ends the filling. When ``batch_max_wait_s`` runs out first,
:class:`BatchesStillRunning` is raised and nothing is written. Describe then runs as usual, reading every answer from the
cache and sending nothing live (a request the batches could not answer is flagged ``lmm_failed``; a rerun
of ``describe --batch`` tries it again). Batch ids live in ``DIR/lmm_batches/batches.json``: a rerun after a
crash or Ctrl-C resumes polling them. Keys answered in this run are listed in
``DIR/lmm_batches/answered_this_run.txt`` so the run's totals count them as sent (at the batch discount).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from .lmm.batch import STATE_FILENAME, BatchRunner
from .lmm.deferred import DeferredClient
from .prompts import load_prompt_set

if TYPE_CHECKING:
    from .describe import DescribeConfig

class BatchesStillRunning(RuntimeError):
    """Batches were still running when ``batch_max_wait_s`` ran out: nothing is written; a rerun resumes."""


STATE_DIR = "lmm_batches"
ANSWERED = "answered_this_run.txt"
#: Passes over the dataset: first round, single re-asks of grouped objects, compose; one spare.
PASSES = 4


def answered_this_run(data_dir: str | Path) -> frozenset[str]:
    """Keys the last ``fill_batches`` run merged from the Batch API (empty when none)."""
    path = Path(data_dir) / STATE_DIR / ANSWERED
    try:
        return frozenset(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    except FileNotFoundError:
        return frozenset()


def _write_answered(path: Path, keys: set[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".answered.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.writelines(f"{k}\n" for k in sorted(keys))
    os.replace(tmp, path)


def fill_batches(data_dir: str | Path, config: DescribeConfig, progress: bool = True) -> dict[str, Any]:
    """Answer every request of a describe run through the Batch API into the cache (see the module doc).

    Returns counts: passes, batches submitted, requests queued, answered, failed, still running.

    Raises:
        ValueError: no ``base_url`` (the embedded offline describer has no Batch API).
        BatchesStillRunning: ``batch_max_wait_s`` ran out with batches still running (their ids are kept;
            the next run resumes polling them).
    """
    from .describe import client_settings, describe_batch, tile_batches

    if not config.base_url:
        raise ValueError(
            "--batch needs --base-url of a service with the Batch API (/v1/files, /v1/batches), "
            "e.g. https://api.openai.com/v1; the embedded offline describer answers live only"
        )
    data = Path(data_dir)
    prompts = load_prompt_set(config.prompts)
    settings = client_settings(config, data, config.base_url, prompts.version)
    runner = BatchRunner(
        settings, data / STATE_DIR, poll_interval_s=config.batch_poll_s, max_wait_s=config.batch_max_wait_s
    )
    answered: set[str] = set()
    _write_answered(data / STATE_DIR / ANSWERED, answered)
    batches = tile_batches(data, config.batch_tiles)
    counts = {"answered": 0, "failed": 0, "running": 0}
    passes = 0
    try:
        for passes in range(1, PASSES + 1):
            before = runner.queued
            deferred = DeferredClient(
                runner.client, lambda r, k: runner.enqueue(r, k), reason="queued for the Batch API"
            )
            for tile_ids in tqdm(batches, desc=f"batch pass {passes}", unit="tile batch", disable=not progress):
                describe_batch(data, tile_ids, config, config.base_url, client=deferred)
            if runner.queued == before and not runner.state.open_batches():
                break
            counts = runner.wait(progress)
            answered |= {k for k, o in runner.outcomes.items() if o.ok}
            _write_answered(data / STATE_DIR / ANSWERED, answered)
            if counts["running"]:
                break  # max wait reached: the next run resumes polling
    finally:
        runner.close()
    if counts["running"]:
        raise BatchesStillRunning(
            f"{counts['running']} requests are still in Batch API batches after {config.batch_max_wait_s:g} s "
            f"(ids in {data / STATE_DIR / STATE_FILENAME}); nothing was written: run the same describe --batch "
            "again later to resume polling them"
        )
    return {"passes": passes, "batches": runner.submitted, "queued": runner.queued, **counts,
            "answered": len(answered)}  # fmt: skip


__all__ = ["ANSWERED", "STATE_DIR", "BatchesStillRunning", "answered_this_run", "fill_batches"]
