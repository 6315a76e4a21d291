"""``geopixeld describe --dry-run``: the calls, tokens and price of a describe run, with nothing sent.

It walks the dataset exactly as a run does — the same tile batches, selection policy, plans and grouping
(``--instances-per-call``) — with a :class:`~pipeline.lmm.deferred.DeferredClient`, so it counts exactly the
requests a run would send, and which of them the response cache already answers (those cost nothing). Each
request is priced by :class:`~pipeline.lmm.estimate.Estimator` (text by tokenizer or documented estimate,
images by the provider's published rule, output at ``max_tokens``).

The compose call of a tile is built from that tile's answers. When they are all cached, the real compose
request is built and counted exactly. Otherwise its prompt is counted as an upper bound: the compose
template, each measured sentence as it will be, and each LMM answer at ``max_tokens`` tokens, plus its
``<p> phrase </p> [SEG]`` markup. Second opinions (``--second-opinion``, ``--samples 2``) are counted for
every described object. The count assumes the first-round answers succeed (a failed holistic answer
on a tile with one object would skip that tile's compose), and no object of a grouped call is asked again.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from .lmm.client import LMMClient
from .lmm.deferred import DeferredClient
from .lmm.estimate import Estimate, Estimator
from .lmm.types import DEFAULT_BASE_URL, LMMRequest, LMMSettings, is_pending
from .prompts import PromptSet, load_prompt_set

if TYPE_CHECKING:
    from .describe import DescribeConfig, TilePlan
    from .selection import SelectionPolicy


def compose_upper_bound(
    plan: TilePlan, prompts: PromptSet, policy: SelectionPolicy, estimator: Estimator, max_tokens: int
) -> int | None:
    """Prompt tokens bounding the tile's compose request, or None when the run would not compose it."""
    from .describe import measured_sentence

    if not policy.compose or "compose" not in prompts.tiers or len(plan.subjects) < 2:
        return None
    tokens = estimator.text_tokens(prompts.render("compose", sentences="", max_words=policy.compose_max_words))
    for s in plan.subjects:
        markup = "" if s.kind == "holistic" else f" <p> {s.category}-1 </p> [SEG]"
        if s.request is None:
            text = measured_sentence(s.category, len(s.instance_ids), s.position)
            tokens += estimator.text_tokens(f"- {text}{markup}\n")
        else:
            tokens += max_tokens + estimator.text_tokens(f"- {markup}\n")
    return tokens


class _SecondOpinions:
    """Counts the second-opinion requests (``--second-opinion MODEL`` or ``--samples 2``) as describe builds
    them: each described object asked again singly, of the other model (priced as that model) or as a
    second sample; counted for every object, as if every first answer succeeds."""

    def __init__(self, settings: LMMSettings, config: DescribeConfig, main: Estimator) -> None:
        self.model = config.second_opinion
        self.settings = settings.model_copy(update={"model": self.model}) if self.model else settings
        client = LMMClient(self.settings)
        self.estimator = Estimator(self.settings, client.profile, client.prices, batch=main.batch) if self.model else main
        self.deferred = DeferredClient(
            client,
            lambda r, k: self.estimator.add_request(r, tier="second_opinion"),
            lambda r, k: self.estimator.add_request(r, cached=True, tier="second_opinion"),
        )

    def ask(self, request: LMMRequest) -> None:
        facts = request.facts if self.model else {**request.facts, "opinion": 2}  # as describe builds it
        self.deferred.describe_all_sync([dataclasses.replace(request, facts=facts, ref=f"{request.ref}|second")])

    def merge_into(self, estimate: Estimate) -> None:
        if self.estimator.estimate is estimate or "second_opinion" not in self.estimator.estimate.tiers:
            return
        estimate.tiers["second_opinion"] = self.estimator.estimate.tiers["second_opinion"]
        estimate.notes.append(f"second opinions are asked of {self.model} and priced at its list price")


def dry_run(data_dir: str | Path, config: DescribeConfig, progress: bool = True) -> Estimate:
    """The :class:`~pipeline.lmm.estimate.Estimate` of describing ``data_dir`` with ``config``."""
    from .describe import client_settings, compose_request, first_round, ground_tile, plan_batch, tile_batches

    data = Path(data_dir)
    config.selection()
    prompts = load_prompt_set(config.prompts)
    policy = config.selection()
    settings = client_settings(config, data, config.base_url or DEFAULT_BASE_URL, prompts.version)
    client = LMMClient(settings)  # keys, cache, profile and prices only: nothing is sent
    estimator = Estimator(settings, client.profile, client.prices, batch=config.batch)
    deferred = DeferredClient(
        client, lambda r, k: estimator.add_request(r), lambda r, k: estimator.add_request(r, cached=True)
    )
    second = _SecondOpinions(settings, config, estimator) if config.second_opinion or config.samples > 1 else None
    batches = tile_batches(data, config.batch_tiles)
    bar = tqdm(total=sum(len(b) for b in batches), desc="dry run", unit="tile", disable=not progress, leave=False)
    try:
        for tile_ids in batches:
            plans, known = plan_batch(data, tile_ids, config)
            estimator.add_tiles(len(plans))
            results, _ = first_round(deferred, [r for p in plans for r in p.requests], config)
            pos = 0
            for plan in plans:
                mine = results[pos : pos + len(plan.requests)]
                pos += len(plan.requests)
                if second is not None:
                    for subject in plan.subjects:
                        if subject.kind != "holistic" and subject.request is not None:
                            second.ask(plan.requests[subject.request])
                if any(is_pending(r) for r in mine):
                    bound = compose_upper_bound(plan, prompts, policy, estimator, settings.max_tokens)
                    if bound is not None:
                        estimator.add("compose", "", [], prompt_tokens=bound)
                    continue
                request = compose_request(plan, ground_tile(plan, mine, known, config), prompts, policy)
                if request is not None:
                    deferred.describe_all_sync([request], progress=False)
            bar.update(len(tile_ids))
    finally:
        bar.close()
    if second is not None:
        second.merge_into(estimator.estimate)
    if "compose" in estimator.estimate.tiers:
        estimator.estimate.notes.append(
            "compose prompts hold the tile's answers: counted with each answer at max_tokens (an upper bound) "
            "unless they are already cached"
        )
    if config.instances_per_call > 1:
        estimator.estimate.notes.append(
            f"{config.instances_per_call} marked objects per call; objects whose grouped answer is missing or "
            "invalid are asked again singly (not counted here)"
        )
    return estimator.estimate


__all__ = ["compose_upper_bound", "dry_run"]
