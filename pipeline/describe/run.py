"""Running: the endpoint, the client (direct, deferred for the Batch API), second opinions, batches."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .. import gcg, validate
from ..agreement import agreement as agreement_score
from ..agreement import disagreement_flag
from ..lmm.client import LMMClient
from ..lmm.deferred import DeferredClient
from ..lmm.grouped import Describer, describe_grouped
from ..lmm.server import running_offline_server
from ..lmm.types import LMMRequest, LMMResult, LMMSettings, is_pending
from ..prompts import load_prompt_set
from .compose import compose_request, finish_sample
from .config import DescribeConfig
from .ground import Draft, _flag, ground_tile
from .plan import (
    Subject,
    TilePlan,
    plan_batch,
    tile_batches,
)
from .write import (
    DescribeSummary,
    DescribeWriter,
)


@contextlib.contextmanager
def _endpoint(config: DescribeConfig) -> Iterator[str]:
    if config.base_url:
        yield config.base_url
    else:
        with running_offline_server() as url:
            yield url



def client_settings(config: DescribeConfig, data: Path, base_url: str, prompt_version: str) -> LMMSettings:
    return config.lmm_settings(
        base_url,
        data / "lmm_cache",
        prompt_version,
        backoff_base_s=config.backoff_base_s,
        temperature=config.temperature,
        max_tokens=config.max_tokens,
        detail=config.detail,
        prices_file=Path(config.prices_file) if config.prices_file else None,
    )



def second_opinion(
    plans: list[TilePlan], results: list[LMMResult], drafts: list[Draft], client: Any, settings: LMMSettings,
    config: DescribeConfig, known: list[str],
) -> list[LMMResult]:
    """Ask every answered instance and group request again (``config.second_opinion``'s model, or a second
    sample of the same model with ``config.samples == 2``), score each pair's agreement
    (:mod:`pipeline.agreement`), and add a ``second_opinion_disagreement`` flag (and the tile's lowest
    agreement) to the drafts. Returns the calls made (none when off)."""
    if not config.second_opinion and config.samples < 2:
        return []
    if config.second_opinion:
        if not isinstance(client, LMMClient):  # dry run / batch answers: no live second model to ask
            return []
        client = LMMClient(settings.model_copy(update={"model": config.second_opinion}))
    asks: list[tuple[int, Subject, str]] = []
    requests: list[LMMRequest] = []
    pos = 0
    for k, p in enumerate(plans):
        for s in p.subjects:
            first = results[pos + s.request] if s.request is not None and s.kind != "holistic" else None
            if first is None or not first.ok or not (first.text or "").strip():
                continue
            req = p.requests[s.request] if s.request is not None else None
            assert req is not None
            facts = req.facts if config.second_opinion else {**req.facts, "opinion": 2}  # a new cache key
            requests.append(dataclasses.replace(req, facts=facts, ref=f"{req.ref}|second"))
            asks.append((k, s, gcg.strip_markup(first.text or "")))
        pos += len(p.requests)
    answers = client.describe_all_sync(requests, progress=False) if requests else []
    model = config.second_opinion or f"a second sample of {settings.model}"
    for (k, s, first_text), answer in zip(asks, answers, strict=True):
        if not answer.ok or not (answer.text or "").strip():
            continue  # a failed second opinion is in lmm_calls; it scores nothing
        score, scores = agreement_score(first_text, gcg.strip_markup(answer.text or ""), s.category, known)
        d = drafts[k]
        d.agreement = score if d.agreement is None else min(d.agreement, score)
        f = disagreement_flag(score, scores, model)
        if f is not None:
            d.flags.append(_flag(f["code"], f["severity"], f"{s.label}: {f['detail']}", s))
    return answers



def answer_usable(request: LMMRequest, text: str) -> bool:
    """Whether an object's answer inside a grouped call is usable as a single answer would be (no
    error-severity answer flag: empty, refusal); otherwise it is asked again singly."""
    flags = validate.check_answer(gcg.strip_markup(text), request.tier)
    return not any(f["severity"] == "error" for f in flags)



def first_round(
    client: Describer, requests: list[LMMRequest], config: DescribeConfig
) -> tuple[list[LMMResult], list[LMMResult]]:
    """Answers of the first-round requests (one per request, in order) and the calls made for them:
    one object per call, or ``config.instances_per_call`` marked objects per call (grouped)."""
    if config.instances_per_call > 1:
        run = describe_grouped(client, requests, config.instances_per_call, answer_usable)
        return run.results, run.calls
    results = client.describe_all_sync(requests, progress=False)
    return results, results



def batch_client(settings: LMMSettings, data: Path) -> Describer:
    """In batch mode the batches were answered before (:mod:`pipeline.batchmode`): answers come from the
    cache, nothing is sent live (misses stay errors, flagged); answers merged in this run count as sent
    through the Batch API (discounted)."""
    from ..batchmode import answered_this_run

    return DeferredClient(
        LMMClient(settings), lambda r, k: None, reason="not answered through the Batch API (rerun describe --batch)",
        fresh=answered_this_run(data),
    )



def describe_batch(
    data_dir: str | Path, tile_ids: list[str], config: DescribeConfig, base_url: str, client: Describer | None = None
) -> tuple[list[dict[str, Any]], list[LMMResult]]:
    """Describe some tiles through the endpoint at ``base_url``: sample rows and call results, in order
    (first-round calls, then the compose calls). ``client``: who answers (default: the live client, or the
    cache alone in batch mode); a tile with a pending answer (dry run, batch filling) gets no compose."""
    data = Path(data_dir)
    prompts = load_prompt_set(config.prompts)
    policy = config.selection()
    settings = client_settings(config, data, base_url, prompts.version)
    if client is None:
        client = batch_client(settings, data) if config.batch else LMMClient(settings)
    plans, known = plan_batch(data, tile_ids, config)
    results, calls = first_round(client, [r for p in plans for r in p.requests], config)
    drafts, pending, pos = [], [], 0
    for p in plans:
        n = len(p.requests)
        drafts.append(ground_tile(p, results[pos : pos + n], known, config))
        pending.append(any(is_pending(r) for r in results[pos : pos + n]))
        pos += n
    composes = [
        None if wait else compose_request(p, d, prompts, policy)
        for p, d, wait in zip(plans, drafts, pending, strict=True)
    ]
    asked = [c for c in composes if c is not None]
    answers = iter(client.describe_all_sync(asked, progress=False) if asked else [])
    compose_results = [next(answers) if c is not None else None for c in composes]
    second_calls = second_opinion(plans, results, drafts, client, settings, config, known)
    rows = [
        finish_sample(p, d, c, settings.model, prompts.version)
        for p, d, c in zip(plans, drafts, compose_results, strict=True)
    ]
    return rows, [*calls, *(c for c in compose_results if c is not None), *second_calls]



def describe(data_dir: str | Path, config: DescribeConfig | None = None, progress: bool = True) -> DescribeSummary:
    """Describe every prepared tile of ``data_dir``; writes ``samples.parquet`` and ``lmm_calls.parquet``
    batch by batch (memory holds one batch)."""
    config = config or DescribeConfig()
    config.selection()  # an unknown policy fails before anything starts
    batches = tile_batches(data_dir, config.batch_tiles)
    if config.batch:  # every request through the Batch API first; the loop below then reads the cache
        from ..batchmode import fill_batches

        fill_batches(data_dir, config, progress=progress)
    bar = tqdm(total=sum(len(b) for b in batches), desc="describe", unit="tile", disable=not progress)
    writer = DescribeWriter(data_dir)
    try:
        with _endpoint(config) as base_url:
            for batch in batches:
                rows, results = describe_batch(data_dir, batch, config, base_url)
                writer.add(rows, results)
                bar.update(len(batch))
                bar.set_postfix(calls=writer.calls_seen, failed=writer.failed)
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    endpoint = config.base_url or "embedded offline describer (127.0.0.1)"
    return writer.finish(config, endpoint)

