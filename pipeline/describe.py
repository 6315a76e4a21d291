"""Describe: prepared tiles → LMM descriptions → one grounded GCG caption per tile.

Per tile, the selection policy (:mod:`pipeline.selection`) decides which objects are described alone and
which are grounded through groups. The requests of one tile:

* one **holistic** request (clean tile);
* one **instance** request per single (the set-of-marks tile, the object's mark number);
* one **cluster** request per described group (clean tile, count word, refined position); groups past the
  policy's call budget get a measured sentence instead (count word, category, position: no call);
* one **compose** request (text only) that fuses the sentences above into one paragraph, keeping every
  ``<p> phrase </p> [SEG]`` exactly once and in order. The answer is checked (:func:`check_compose`); when it
  changes, drops or adds a phrase, the plain concatenation is kept and the sample is flagged.

Sentences are ordered category by category (singles first, then that category's groups), each object's
phrase marked ``<p> phrase </p> [SEG]`` with its mask in ``[SEG]`` order, and checked
(:mod:`pipeline.validate`). Every tile ends as a row of ``samples.parquet``, flagged when something looks
wrong — including when the LMM failed (then the object keeps a measured sentence, so it stays grounded) —
and every call is kept in ``lmm_calls.parquet``. Both files are written batch by batch (bounded memory) to
temporary names and renamed when complete.

With no ``base_url``, the embedded offline describer is started on 127.0.0.1 and spoken to over HTTP
through the same client as any remote endpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field, model_validator
from tqdm import tqdm

from . import fidelity, gcg, validate, vocab
from .agreement import agreement as agreement_score
from .agreement import disagreement_flag
from .colour import colour_shares
from .grounding import Assembled, GroundedSentence, Grounding, assemble
from .lmm.client import LMMClient
from .lmm.deferred import DeferredClient
from .lmm.grouped import Describer, describe_grouped
from .lmm.offline import decode_image, masked_pixels
from .lmm.pricing import RunTotals, load_price_table
from .lmm.records import CALLS_SCHEMA, results_to_table
from .lmm.server import running_offline_server
from .lmm.types import OFFLINE_MODEL, EndpointConfig, LMMRequest, LMMResult, LMMSettings, is_pending
from .prompts import PromptSet, load_prompt_set
from .rle import merge
from .selection import POLICIES, Group, SelectionPolicy, TileSelection, select_tile
from .tables import SAMPLES_SCHEMA, write_table


class DescribeConfig(EndpointConfig):
    """Settings of the describe stage (the CLI's options).

    Attributes:
        (endpoint): ``base_url``, ``model``, ``api_key_env``, ``concurrency``, ``timeout_s``,
            ``max_retries``, ``prompts``, ``cache_dir`` (default ``DIR/lmm_cache``), ``send_facts``: see
            :class:`~pipeline.lmm.types.EndpointConfig`.
        policy: ``geopixeld`` (GeoPixelD's shape: few singles, groups, one fused caption) or
            ``all-instances`` (every marked object and prepared cluster described, no compose).
        max_instances, max_group_calls, max_phrases, compose: override the policy's knobs
            (:class:`~pipeline.selection.SelectionPolicy`); ``None`` keeps the policy's value.
        backoff_base_s: first retry's back-off (doubling, with jitter).
        metric_priors: use the instance prompt with measured size and orientation when the GSD is known.
        phrase_naming: ``indexed`` (``tennis court-1``, as GeoPixelD) or ``noun`` (the sentence's words).
        detail: image detail level sent with images.
        temperature, max_tokens: sampling temperature and answer length limit.
        second_opinion: ask every instance and group request again of this model (same endpoint) and
            score the two answers' agreement (:mod:`pipeline.agreement`); off by default (doubles cost).
        samples: 2 asks every instance and group request twice of the same model (needs
            ``temperature`` > 0); the second answer is the second opinion.
        batch_tiles: tiles described per batch (bounds memory: images of a batch are held at once).
        prices_file: price table for cost estimates.
        instances_per_call: marked objects of one tile asked in one request (1: one per call, as the
            paper; K > 1: :mod:`pipeline.lmm.grouped`, JSON answers, bad ones asked again singly).
        batch: answer through the OpenAI Batch API (:mod:`pipeline.batchmode`; needs ``base_url``).
        batch_poll_s, batch_max_wait_s: seconds between batch status checks; longest wait (None: until done).
    """

    policy: str = "geopixeld"
    max_instances: int | None = Field(None, ge=0)
    max_group_calls: int | None = Field(None, ge=0)
    max_phrases: int | None = Field(None, ge=1)
    compose: bool | None = None
    backoff_base_s: float = Field(0.5, ge=0)
    metric_priors: bool = False
    phrase_naming: str = "indexed"
    detail: str = "auto"
    second_opinion: str | None = None
    samples: int = Field(1, ge=1, le=2)
    temperature: float = 0.2
    max_tokens: int = 300
    batch_tiles: int = Field(32, ge=1)
    prices_file: str | None = None
    instances_per_call: int = Field(1, ge=1, le=64)
    batch: bool = False
    batch_poll_s: float = Field(30.0, gt=0)
    batch_max_wait_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_second_opinion(self) -> DescribeConfig:
        if self.samples > 1 and self.second_opinion:
            raise ValueError("give either --second-opinion MODEL or --samples 2, not both")
        if self.samples > 1 and self.temperature <= 0:
            raise ValueError("--samples 2 needs a temperature above 0 (at 0 both samples are the same answer)")
        if self.batch and (self.second_opinion or self.samples > 1):
            raise ValueError("a second opinion is asked live, after the first answers: not with --batch")
        return self

    def selection(self) -> SelectionPolicy:
        """The selection policy with this config's overrides."""
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        return SelectionPolicy.preset(
            self.policy,
            max_instances=self.max_instances,
            max_group_calls=self.max_group_calls,
            max_phrases=self.max_phrases,
            compose=self.compose,
        )


@dataclass
class Subject:
    """What one sentence of a tile is about: the holistic summary, a single object, or a group."""

    kind: str  # holistic | instance | cluster
    row: dict[str, Any] | None = None  # the instance row of a single
    group: Group | None = None
    request: int | None = None  # index into the plan's requests; None for a measured sentence

    @property
    def category(self) -> str:
        if self.row is not None:
            return str(self.row["category_name"])
        return self.group.category_name if self.group is not None else ""

    @property
    def instance_ids(self) -> list[int]:
        if self.row is not None:
            return [int(self.row["instance_id"])]
        return self.group.instance_ids if self.group is not None else []

    @property
    def position(self) -> str:
        if self.row is not None:
            return str(self.row["position"])
        return self.group.position if self.group is not None else ""

    @property
    def label(self) -> str:
        if self.kind == "holistic":
            return "holistic"
        if self.row is not None:
            return f"instance {self.row['instance_id']}"
        return f"group {self.group.ref}" if self.group is not None else self.kind


@dataclass
class TilePlan:
    """The requests of one tile and what each sentence is about (holistic first, then category blocks)."""

    tile: dict[str, Any]
    selection: TileSelection
    requests: list[LMMRequest] = field(default_factory=list)
    subjects: list[Subject] = field(default_factory=list)
    # flags prepare left on the tile's instances (SAM quality, naming), carried to the sample
    instance_flags: list[dict[str, Any]] = field(default_factory=list)
    n_instances: int = 0
    # objects per readable category in the tile, and the label set (what answers are checked against)
    tile_counts: tuple[tuple[str, int], ...] = ()
    labels: frozenset[str] = frozenset()


@dataclass
class Draft:
    """A tile's sentences grounded and joined, before the compose step."""

    assembled: Assembled
    flags: list[dict[str, Any]]
    holistic: str
    sentences: list[dict[str, Any]]  # compose input: {"text", "category", "kind"}
    agreement: float | None = None  # lowest second-opinion agreement of the tile's objects (None: not asked)


def _png(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: tile image missing (was the prepare output moved or deleted?)") from None


def _ordered_subjects(selection: TileSelection) -> list[Subject]:
    """Singles and groups category by category (in order of first appearance), singles first."""
    items: list[Subject] = [Subject("instance", row=r) for r in selection.singles]
    items += [Subject("cluster", group=g) for g in selection.groups]
    order: dict[str, int] = {}
    for s in items:
        order.setdefault(s.category, len(order))
    return sorted(items, key=lambda s: (order[s.category], s.kind != "instance"))  # stable within a block


def plan_tile(
    data_dir: Path,
    tile: dict[str, Any],
    instances: list[dict[str, Any]],
    clusters: list[dict[str, Any]],
    prompts: PromptSet,
    config: DescribeConfig,
) -> TilePlan:
    """The first-round requests of one tile (holistic, singles, described groups); compose comes later."""
    selection = select_tile(instances, clusters, int(tile["width"]), int(tile["height"]), config.selection())
    plan = TilePlan(tile, selection, instance_flags=validate.instance_flags(instances), n_instances=len(instances))
    clean = _png(data_dir / tile["tile_path"])
    gsd = tile.get("gsd")
    counts: Counter[str] = Counter(r["category_name"] for r in instances)
    plan.tile_counts = tuple(sorted(counts.items()))
    holistic_facts = {
        "tier": "holistic",
        "category_counts": dict(sorted(counts.items())),
        "instances": [
            {"category": r["category_name"], "position": r["position"], "size_class": r["size_class"]}
            for r in instances[:100]
        ],
        "gsd": gsd,
        "tile_size": [tile["width"], tile["height"]],
    }
    plan.requests.append(
        LMMRequest("holistic", prompts.render("holistic"), clean, holistic_facts, f"{tile['tile_id']}|holistic")
    )
    plan.subjects.append(Subject("holistic", request=0))
    use_metric = config.metric_priors and gsd is not None and "instance_metric" in prompts.tiers
    marks = _png(data_dir / tile["marks_path"]) if selection.singles else b""
    for s in _ordered_subjects(selection):
        if s.row is not None:
            plan.requests.append(_instance_request(tile, s.row, marks, gsd, prompts, use_metric))
        elif s.group is not None and s.group.described:
            plan.requests.append(_group_request(tile, s.group, clean, gsd, prompts))
        else:
            plan.subjects.append(s)  # measured sentence: no request
            continue
        s.request = len(plan.requests) - 1
        plan.subjects.append(s)
    return plan


def _instance_request(
    tile: dict[str, Any], r: dict[str, Any], marks: bytes, gsd: float | None, prompts: PromptSet, use_metric: bool
) -> LMMRequest:
    tier = "instance_metric" if use_metric and r["length_m"] is not None else "instance"
    values: dict[str, Any] = {"category_name": r["category_name"], "pos": r["position"], "mark_number": r["mark"]}
    if tier == "instance_metric":
        values.update(
            length_m=r["length_m"], width_m=r["width_m"], orientation_word=r["orientation_word"] or "not determined"
        )
    facts = {
        "tier": "instance",
        "category": r["category_name"],
        "position": r["position"],
        "mark": r["mark"],
        "mask_rle": r["rle"],
        "mark_box": r["mark_box"],
        "gsd": gsd,
        "length_m": r["length_m"],
        "width_m": r["width_m"],
        "orientation_deg": r["orientation_deg"],
        "orientation_word": r["orientation_word"],
        "size_class": r["size_class"],
        "visible_fraction": r["visible_fraction"],
        "truncated": r["truncated"],
    }
    ref = f"{tile['tile_id']}|instance|{r['instance_id']}"
    return LMMRequest(tier, prompts.render(tier, **values), marks, facts, ref)


def _group_request(tile: dict[str, Any], g: Group, clean: bytes, gsd: float | None, prompts: PromptSet) -> LMMRequest:
    name = vocab.plural(g.category_name, g.count)
    values = {"cluster_info": g.count_word, "category_name": name, "pos": g.position}
    facts = {
        "tier": "cluster",
        "category": name,
        "count": g.count,
        "count_word": g.count_word,
        "position": g.position,
        "mask_rle": merge([m["rle"] for m in g.members]),
        "gsd": gsd,
    }
    return LMMRequest("cluster", prompts.render("cluster", **values), clean, facts, f"{tile['tile_id']}|cluster|{g.ref}")


def measured_sentence(category: str, count: int, position: str) -> str:
    """A sentence from measurements alone, for groups past the call budget and failed calls:
    ``There are a few storage tanks at the bottom.`` (nothing is said that was not measured)."""
    where = vocab.place(position) or "in the image"
    if count == 1:
        return f"There is {vocab.article(category)} {category} {where}."
    from .priors import count_word

    return f"There are {count_word(count)} {vocab.plural(category, count)} {where}."


def _flag(code: str, severity: str, detail: str, subject: Subject | None = None) -> dict[str, Any]:
    f: dict[str, Any] = validate.flag(code, severity, detail)
    if subject is not None and subject.kind != "holistic":
        f["instance_ids"] = subject.instance_ids
    return f


def _measured_flags(
    text: str, plan: TilePlan, s: Subject, images: dict[int, Any], known: list[str]
) -> list[dict[str, str]]:
    """The checks against measurements (:func:`pipeline.validate.check_measured`) of one answer: the instance
    row's size, metres and orientation, the group's count, the tile's categories, and the colour names of the
    mask's pixels in the image the request sent (the set-of-marks tile minus the mark box for an instance, as
    the offline describer measures them). Categories ``wrong_category`` reports are not reported again."""
    colours: tuple[tuple[str, float], ...] = ()
    if s.request is not None:
        req = plan.requests[s.request]
        key = id(req.image_png)
        if key not in images:
            images[key] = decode_image(req.image_png)
        pixels = masked_pixels(images[key], req.facts, exclude_mark=s.kind == "instance")
        colours = tuple(colour_shares(pixels)) if pixels is not None else ()
    r = s.row or {}
    measured = validate.Measured(
        kind=s.kind, category=s.category, count=len(s.instance_ids), size_class=r.get("size_class"),
        length_m=r.get("length_m"), width_m=r.get("width_m"), orientation_deg=r.get("orientation_deg"),
        elongation=r.get("elongation"), colours=colours, tile_counts=plan.tile_counts, labels=plan.labels,
    )
    skip = set() if vocab.find_mention(text, s.category) else set(vocab.other_categories_named(text, s.category, known))
    return validate.check_measured(text, measured, skip)


def ground_tile(
    plan: TilePlan, results: list[LMMResult], known_categories: list[str], config: DescribeConfig
) -> Draft:
    """Check each answer, ground each object's sentence and join them (the pre-compose caption)."""
    flags: list[dict[str, Any]] = list(plan.instance_flags)
    sentences: list[GroundedSentence] = []
    owners: list[Subject] = []  # the subject of each grounded sentence, in order
    holistic_text = ""
    index: Counter[str] = Counter()
    images: dict[int, Any] = {}  # decoded request images of this tile
    for s in plan.subjects:
        res = results[s.request] if s.request is not None else None
        text: str | None = None
        if res is not None:
            if not res.ok or res.text is None:
                kept = "" if s.kind == "holistic" else "; a measured sentence keeps it grounded"
                flags.append(_flag("lmm_failed", "error", f"{s.label}: {res.error or 'no answer'}{kept}", s))
            else:
                text = gcg.strip_markup(res.text)
                answer_flags = validate.check_answer(text, res.tier or s.kind)
                flags.extend(_flag(f["code"], f["severity"], f"{s.label}: {f['detail']}", s) for f in answer_flags)
                if any(f["code"] == "empty_response" for f in answer_flags):
                    text = None
        if s.kind == "holistic":
            if text:
                holistic_text = text
                holistic = validate.Measured("holistic", tile_counts=plan.tile_counts, labels=plan.labels)
                flags.extend(_flag(f["code"], f["severity"], f"holistic: {f['detail']}")
                             for f in validate.check_measured(text, holistic))
                sentences.append(GroundedSentence(text))
            continue
        measured = text is None
        if text is None:
            text = measured_sentence(s.category, len(s.instance_ids), s.position)
        extra: list[dict[str, str]] = []
        if s.row is not None:
            r = s.row
            if not measured:
                extra += validate.check_mark_leak(text, r["mark"])
                extra += validate.check_category(text, r["category_name"], known_categories)
                extra += validate.check_position(text, r["position"])
                extra += _measured_flags(text, plan, s, images, known_categories)
            if r["visible_fraction"] < validate.MOSTLY_CUT_OFF:
                extra.append(validate.flag("mostly_cut_off", "warning", f"only {r['visible_fraction']:.0%} visible"))
            grounding = Grounding("instance", s.category, s.instance_ids, r["rle"])
        else:
            assert s.group is not None
            if not measured:
                extra += validate.check_category(text, s.category, known_categories)
                extra += _measured_flags(text, plan, s, images, known_categories)
            grounding = Grounding("cluster", s.category, s.instance_ids, merge([m["rle"] for m in s.group.members]))
        index[s.category] += 1
        if vocab.find_mention(text, s.category) is None:
            extra.append(validate.flag("category_not_named", "info", "the phrase was added in front of the sentence"))
        flags.extend(_flag(f["code"], f["severity"], f"{s.label}: {f['detail']}", s) for f in extra)
        sentences.append(GroundedSentence(text, grounding, index[s.category], s.position))
        owners.append(s)
    grounded = [k for k, x in enumerate(sentences) if x.grounding is not None]
    for k, rep in enumerate(validate.check_repeats([sentences[i].text for i in grounded])):
        s = owners[k]
        flags.extend(_flag(f["code"], f["severity"], f"{s.label}: {f['detail']}", s) for f in rep)
    if plan.selection.ungrounded:
        ids = [int(r["instance_id"]) for r in plan.selection.ungrounded]
        flags.append(
            {**validate.flag("not_grounded", "warning", f"{len(ids)} object(s) have neither a mark nor a group"),
             "instance_ids": ids}
        )
    out = assemble(sentences, config.phrase_naming)
    compose_input = []
    for x in sentences:
        text, _ = _grounded_text(x, config.phrase_naming)
        compose_input.append(
            {"text": text, "category": x.grounding.category if x.grounding else None,
             "kind": x.grounding.kind if x.grounding else "holistic"}
        )
    return Draft(out, flags, holistic_text, compose_input)


def _grounded_text(s: GroundedSentence, naming: str) -> tuple[str, bool]:
    from .grounding import ground_sentence

    text, named = ground_sentence(s, naming)
    return " ".join(text.split()), named


def compose_request(plan: TilePlan, draft: Draft, prompts: PromptSet, policy: SelectionPolicy) -> LMMRequest | None:
    """The tile's compose request (text only), or None when the policy does not compose or there is
    nothing to fuse."""
    if not policy.compose or "compose" not in prompts.tiers or len(draft.sentences) < 2:
        return None
    listing = "\n".join(f"- {s['text']}" for s in draft.sentences)
    facts = {"tier": "compose", "sentences": draft.sentences, "max_words": policy.compose_max_words}
    prompt = prompts.render("compose", sentences=listing, max_words=policy.compose_max_words)
    return LMMRequest("compose", prompt, b"", facts, f"{plan.tile['tile_id']}|compose")


def check_compose(answer: str, expected: list[str]) -> tuple[gcg.ParsedCaption | None, str]:
    """The composed paragraph parsed, or ``None`` and why it is refused: it must keep every expected phrase
    exactly once, in order, with well-formed markup and nothing added."""
    text = " ".join(answer.split())
    if not text:
        return None, "empty answer"
    problems = gcg.markup_problems(text, len(expected))
    errors = [p for p in problems if p["severity"] == "error"]
    if errors:
        return None, "; ".join(p["detail"] for p in errors[:3])
    parsed = gcg.parse(text)
    got = [p.text for p in parsed.phrases]
    if got != expected:
        diff = next((k for k, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), min(len(got), len(expected)))
        return None, f"phrase {diff + 1} changed or moved ({len(got)} phrases for {len(expected)})"
    if len(parsed.caption.split()) < 2 * len(expected):
        return None, "too short to describe its phrases"
    return parsed, ""


def compose_flags(caption: str, plan: TilePlan, flags: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Categories the composed paragraph names that occur nowhere in the tile and that no answer named
    before (the compose step added them): ``absent_category`` flags of the sample. Counts are not checked
    here: a paragraph mixes group counts with the tile's."""
    seen = " ".join(f["detail"] for f in flags if f["code"] == "absent_category")
    found = validate.check_absent(caption, validate.Measured("holistic", tile_counts=plan.tile_counts,
                                                             labels=plan.labels))
    return [validate.flag(f["code"], f["severity"], f"compose: {f['detail']} (added by the compose step)")
            for f in found if f["detail"] not in seen]


def finish_sample(
    plan: TilePlan, draft: Draft, compose: LMMResult | None, model: str, prompt_version: str
) -> dict[str, Any]:
    """One ``samples.parquet`` row from the draft and the compose answer (see the module docstring)."""
    tile = plan.tile
    out = draft.assembled
    flags = list(draft.flags)
    gcg_caption, caption = out.gcg_caption, out.caption
    spans = [(p["text"], p["start"], p["end"]) for p in out.phrases]
    if compose is not None:
        if not compose.ok or compose.text is None:
            flags.append(validate.flag("compose_failed", "warning",
                                       f"compose: {compose.error or 'no answer'}; the sentences are joined as they are"))
        else:
            parsed, why = check_compose(compose.text, [p["text"] for p in out.phrases])
            if parsed is None:
                flags.append(validate.flag("compose_rejected", "warning",
                                           f"compose: {why}; the sentences are joined as they are"))
            else:
                gcg_caption, caption, spans = parsed.gcg_caption, parsed.caption, parsed.spans
                flags.extend(compose_flags(caption, plan, flags))
    phrases = [{**p, "start": a, "end": b} for p, (_, a, b) in zip(out.phrases, spans, strict=True)]
    # Flags about objects name their phrase.
    phrase_of = {i: k for k, p in enumerate(phrases) for i in p["instance_ids"]}
    for f in flags:
        ids = f.get("instance_ids")
        if ids:
            hits = {phrase_of[i] for i in ids if i in phrase_of}
            f["phrase"] = hits.pop() if len(hits) == 1 else None
    flags.extend(validate.check_markup(gcg_caption, len(out.masks)))
    if not phrases:
        flags.append(validate.flag("no_grounding", "info", "no grounded phrase in this tile"))
    return {
        "tile_id": tile["tile_id"],
        "image_id": tile["image_id"],
        "tile_path": tile["tile_path"],
        "marks_path": tile["marks_path"],
        "width": tile["width"],
        "height": tile["height"],
        "gcg_caption": gcg_caption,
        "caption": caption,
        "phrases": phrases,
        "masks": out.masks,
        "flags": flags,
        "max_severity": validate.max_severity(flags),
        "review_score": validate.review_score(flags, draft.agreement),
        "holistic": draft.holistic,
        "n_instances": plan.n_instances,
        "n_grounded_instances": len({i for p in phrases for i in p["instance_ids"]}),
        "lmm_model": model,
        "prompt_version": prompt_version,
    }


@dataclass
class DescribeSummary:
    data_dir: str
    tiles: int
    samples: int
    phrases: int
    flagged: int
    flags_by_code: dict[str, int]
    lmm: dict[str, Any]
    model: str
    prompt_version: str
    base_url: str
    policy: str = "geopixeld"
    fidelity: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        lines = [
            f"describe → {self.data_dir}/samples.parquet",
            f"  tiles {self.tiles} → samples {self.samples}, grounded phrases {self.phrases} (policy {self.policy})",
            f"  flagged samples {self.flagged}"
            + (": " + ", ".join(f"{k} {v}" for k, v in self.flags_by_code.items()) if self.flags_by_code else ""),
            f"  model {self.model} at {self.base_url}, prompts {self.prompt_version}",
            "  " + RunTotals(**self.lmm).summary().replace("\n", "\n  ") if self.lmm else "",
            fidelity.report_text(self.fidelity) if self.fidelity else "",
        ]
        return "\n".join(line for line in lines if line)


@contextlib.contextmanager
def _endpoint(config: DescribeConfig) -> Iterator[str]:
    if config.base_url:
        yield config.base_url
    else:
        with running_offline_server() as url:
            yield url


def _group(rows: list[dict[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[r[key]].append(r)
    return out


def _settings(config: DescribeConfig, data: Path, base_url: str, prompt_version: str) -> LMMSettings:
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


def tile_batches(data_dir: str | Path, batch_tiles: int = 32) -> list[list[str]]:
    """The prepared tile ids of ``data_dir`` in batches (the unit a flow maps over)."""
    data = Path(data_dir)
    if not (data / "tiles.parquet").exists():
        raise FileNotFoundError(f"{data}: no tiles.parquet — run `geopixeld prepare` first")
    ids = pq.read_table(data / "tiles.parquet", columns=["tile_id"]).column("tile_id").to_pylist()
    return [ids[i : i + batch_tiles] for i in range(0, len(ids), batch_tiles)]


@functools.lru_cache(maxsize=8)
def _label_set(path: str, mtime_ns: int) -> frozenset[str]:
    del mtime_ns  # part of the cache key: a rewritten file is read again
    found: set[str] = set()
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65536, columns=["category_name"]):
        found.update(x for x in pc.unique(batch.column(0)).to_pylist() if x)
    return frozenset(found)


def dataset_categories(data_dir: str | Path) -> frozenset[str]:
    """The readable categories of every instance of ``data_dir`` (with :func:`pipeline.vocab.label_set`, the
    label set answers are checked against), read one column batch by batch; empty without
    ``instances.parquet``."""
    path = Path(data_dir) / "instances.parquet"
    return _label_set(str(path), path.stat().st_mtime_ns) if path.exists() else frozenset()


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


def _read_rows(path: Path, tile_ids: list[str]) -> list[dict[str, Any]]:
    return pq.read_table(path, filters=[("tile_id", "in", tile_ids)]).to_pylist() if tile_ids else []


def plan_batch(data_dir: str | Path, tile_ids: list[str], config: DescribeConfig) -> tuple[list[TilePlan], list[str]]:
    """The tiles' first-round plans (in ``tile_ids`` order) and the category names answers are checked
    against."""
    data = Path(data_dir)
    order = {t: k for k, t in enumerate(tile_ids)}
    tiles = sorted(_read_rows(data / "tiles.parquet", tile_ids), key=lambda t: order[t["tile_id"]])
    instances = _group(_read_rows(data / "instances.parquet", tile_ids), "tile_id")
    clusters = _group(_read_rows(data / "clusters.parquet", tile_ids), "tile_id")
    known = sorted({r["category_name"] for rows in instances.values() for r in rows} | set(vocab.SYNONYMS))
    present = {r["category_name"] for rows in instances.values() for r in rows}
    labels = vocab.label_set(dataset_categories(data) | present)
    prompts = load_prompt_set(config.prompts)
    plans = [
        plan_tile(data, t, instances.get(t["tile_id"], []), clusters.get(t["tile_id"], []), prompts, config)
        for t in tiles
    ]
    for p in plans:
        p.labels = labels
    return plans, known


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
    from .batchmode import answered_this_run

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
    settings = _settings(config, data, base_url, prompts.version)
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


class _ParquetSink:
    """Rows appended batch by batch to ``path`` through a temporary file, renamed into place on close."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self.schema = path, schema
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.writer = pq.ParquetWriter(self.tmp, schema)
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self.writer.write_table(table.cast(self.schema) if table.schema != self.schema else table)
            self.rows += table.num_rows

    def close(self) -> None:
        self.writer.close()
        self.tmp.replace(self.path)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        self.tmp.unlink(missing_ok=True)


class DescribeWriter:
    """Writes ``samples.parquet`` and ``lmm_calls.parquet`` as batches complete, then the report; keeps only
    running counts in memory."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data = Path(data_dir)
        self.samples = _ParquetSink(self.data / "samples.parquet", SAMPLES_SCHEMA)
        self.calls = _ParquetSink(self.data / "lmm_calls.parquet", CALLS_SCHEMA)
        self.tiles = self.phrases = self.flagged = self.calls_seen = self.failed = 0
        self.flags_by_code: Counter[str] = Counter()

    def add(self, rows: list[dict[str, Any]], results: Iterable[LMMResult]) -> None:
        results = list(results)
        self.samples.write(pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA))
        self.calls.write(results_to_table(results))
        self.tiles += len(rows)
        self.phrases += sum(len(r["phrases"]) for r in rows)
        self.flagged += sum(1 for r in rows if r["max_severity"] in ("warning", "error"))
        self.flags_by_code.update(f["code"] for r in rows for f in r["flags"])
        self.calls_seen += len(results)
        self.failed += sum(not x.ok for x in results)

    def abort(self) -> None:
        self.samples.abort()
        self.calls.abort()

    def finish(self, config: DescribeConfig, endpoint: str) -> DescribeSummary:
        self.samples.close()
        self.calls.close()
        totals = RunTotals.from_results(iter_calls(self.calls.path), load_price_table(config.prices_file))
        prompts = load_prompt_set(config.prompts)
        report = fidelity.measure(self.data)
        summary = DescribeSummary(
            data_dir=str(self.data),
            tiles=self.tiles,
            samples=self.tiles,
            phrases=self.phrases,
            flagged=self.flagged,
            flags_by_code=dict(sorted(self.flags_by_code.items())),
            lmm=asdict(totals),
            model=config.model or OFFLINE_MODEL,
            prompt_version=prompts.version,
            base_url=endpoint,
            policy=config.policy,
            fidelity=report,
        )
        tmp = self.data / ".describe_report.json.tmp"
        tmp.write_text(
            json.dumps({"summary": asdict(summary), "config": config.model_dump(mode="json")}, indent=1, default=str)
        )
        tmp.replace(self.data / "describe_report.json")
        return summary


def iter_calls(path: Path, batch_rows: int = 2048) -> Iterator[LMMResult]:
    """The calls of an ``lmm_calls.parquet`` file as results, read batch by batch."""
    names = [f.name for f in fields(LMMResult)]
    pf = pq.ParquetFile(path)
    cols = [n for n in names if n in pf.schema_arrow.names]
    for batch in pf.iter_batches(batch_size=batch_rows, columns=cols):
        for row in batch.to_pylist():
            yield LMMResult(**row)


def write_describe_outputs(
    data_dir: str | Path, rows: list[dict[str, Any]], results: list[LMMResult], config: DescribeConfig, endpoint: str
) -> DescribeSummary:
    """Write ``samples.parquet``, ``lmm_calls.parquet`` and ``describe_report.json``; return the summary."""
    writer = DescribeWriter(data_dir)
    writer.add(rows, results)
    return writer.finish(config, endpoint)


def merge_describe_parts(
    data_dir: str | Path, parts: Iterable[tuple[str | Path, str | Path]], config: DescribeConfig, endpoint: str
) -> DescribeSummary:
    """The outputs from per-batch part files ``(samples part, calls part)``, streamed part by part (what a
    flow's batches wrote)."""
    writer = DescribeWriter(data_dir)
    try:
        for samples_path, calls_path in parts:
            try:
                rows = pq.read_table(samples_path, schema=SAMPLES_SCHEMA).to_pylist()
                calls = list(iter_calls(Path(calls_path)))
            except (OSError, pa.ArrowException) as exc:
                raise ValueError(f"{samples_path}: describe part file unreadable ({exc}); rerun describe") from None
            writer.add(rows, calls)
    except BaseException:
        writer.abort()
        raise
    return writer.finish(config, endpoint)


def describe(data_dir: str | Path, config: DescribeConfig | None = None, progress: bool = True) -> DescribeSummary:
    """Describe every prepared tile of ``data_dir``; writes ``samples.parquet`` and ``lmm_calls.parquet``
    batch by batch (memory holds one batch)."""
    config = config or DescribeConfig()
    config.selection()  # an unknown policy fails before anything starts
    batches = tile_batches(data_dir, config.batch_tiles)
    if config.batch:  # every request through the Batch API first; the loop below then reads the cache
        from .batchmode import fill_batches

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


__all__ = [
    "DescribeConfig",
    "DescribeSummary",
    "DescribeWriter",
    "Draft",
    "Subject",
    "TilePlan",
    "check_compose",
    "compose_request",
    "describe",
    "describe_batch",
    "finish_sample",
    "ground_tile",
    "measured_sentence",
    "merge_describe_parts",
    "plan_batch",
    "plan_tile",
    "tile_batches",
    "write_describe_outputs",
    "write_table",
]
