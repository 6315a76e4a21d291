"""Describe: prepared tiles → LMM descriptions (three GeoPixelD tiers) → grounded GCG samples.

For each tile: one holistic request (clean tile), one instance request per marked object (the
set-of-marks tile), one cluster request per group of small objects (clean tile). Answers are joined
into the GCG caption (holistic sentences first, then instances in mark order, then clusters), each
object's phrase marked ``<p> phrase </p> [SEG]`` with its mask in ``[SEG]`` order, and checked
(``pipeline.validate``). Every tile ends as a row of ``samples.parquet``, flagged when something
looks wrong — including when the LMM failed — and every call is kept in ``lmm_calls.parquet``.

With no ``base_url``, the embedded offline describer is started on 127.0.0.1 and spoken to over HTTP
through the same client as any remote endpoint.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pydantic import Field
from tqdm import tqdm

from . import validate, vocab
from .grounding import GroundedSentence, Grounding, assemble, strip_markup
from .lmm.client import LMMClient
from .lmm.pricing import RunTotals, load_price_table
from .lmm.records import write_calls_parquet
from .lmm.server import running_offline_server
from .lmm.types import OFFLINE_MODEL, EndpointConfig, LMMRequest, LMMResult, LMMSettings
from .prompts import PromptSet, load_prompt_set
from .rle import merge
from .tables import SAMPLES_SCHEMA, write_table


class DescribeConfig(EndpointConfig):
    """Settings of the describe stage (the CLI's options).

    Attributes:
        (endpoint): ``base_url``, ``model``, ``api_key_env``, ``concurrency``, ``timeout_s``,
            ``max_retries``, ``prompts``, ``cache_dir`` (default ``DIR/lmm_cache``), ``send_facts``: see
            :class:`~pipeline.lmm.types.EndpointConfig`.
        backoff_base_s: first retry's back-off (doubling, with jitter).
        metric_priors: use the instance prompt with measured size and orientation when the GSD is known.
        phrase_naming: ``indexed`` (``tennis court-1``, as GeoPixelD) or ``noun`` (the sentence's words).
        detail: image detail level sent with images.
        temperature, max_tokens: sampling temperature and answer length limit.
        batch_tiles: tiles described per batch (bounds memory: images of a batch are held at once).
        prices_file: price table for cost estimates.
    """

    backoff_base_s: float = Field(0.5, ge=0)
    metric_priors: bool = False
    phrase_naming: str = "indexed"
    detail: str = "auto"
    temperature: float = 0.2
    max_tokens: int = 300
    batch_tiles: int = Field(32, ge=1)
    prices_file: str | None = None


@dataclass
class TilePlan:
    """The requests of one tile and what each one is about."""

    tile: dict[str, Any]
    requests: list[LMMRequest] = field(default_factory=list)
    # per request: ("holistic", None) | ("instance", row) | ("cluster", (cluster row, member rows))
    subjects: list[tuple[str, Any]] = field(default_factory=list)
    # flags prepare left on the tile's instances (SAM quality, naming), carried to the sample
    instance_flags: list[dict[str, str]] = field(default_factory=list)


def _png(path: Path) -> bytes:
    return path.read_bytes()


def plan_tile(
    data_dir: Path,
    tile: dict[str, Any],
    instances: list[dict[str, Any]],
    clusters: list[dict[str, Any]],
    prompts: PromptSet,
    config: DescribeConfig,
) -> TilePlan:
    plan = TilePlan(tile, instance_flags=validate.instance_flags(instances))
    clean = _png(data_dir / tile["tile_path"])
    marks = _png(data_dir / tile["marks_path"])
    gsd = tile.get("gsd")
    counts: Counter[str] = Counter(r["category_name"] for r in instances)
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
    plan.subjects.append(("holistic", None))
    use_metric = config.metric_priors and gsd is not None and "instance_metric" in prompts.tiers
    for r in sorted((r for r in instances if r["mark"] is not None), key=lambda r: r["mark"]):
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
        plan.requests.append(LMMRequest(tier, prompts.render(tier, **values), marks, facts, ref))
        plan.subjects.append(("instance", r))
    by_id = {r["instance_id"]: r for r in instances}
    for c in clusters:
        members = [by_id[i] for i in c["instance_ids"] if i in by_id]
        name = vocab.plural(c["category_name"]) if c["count"] > 1 else c["category_name"]
        values = {"cluster_info": c["count_word"], "category_name": name, "pos": c["position"]}
        facts = {
            "tier": "cluster",
            "category": name,
            "count": c["count"],
            "count_word": c["count_word"],
            "position": c["position"],
            "mask_rle": merge([m["rle"] for m in members]) if members else None,
            "gsd": gsd,
        }
        ref = f"{tile['tile_id']}|cluster|{c['cluster_id']}"
        plan.requests.append(LMMRequest("cluster", prompts.render("cluster", **values), clean, facts, ref))
        plan.subjects.append(("cluster", (c, members)))
    return plan


def build_sample(
    plan: TilePlan,
    results: list[LMMResult],
    known_categories: list[str],
    config: DescribeConfig,
    model: str,
    prompt_version: str,
) -> dict[str, Any]:
    """One ``samples.parquet`` row from a tile's answers (see the module docstring)."""
    tile = plan.tile
    flags: list[dict[str, str]] = list(plan.instance_flags)
    sentences: list[GroundedSentence] = []
    holistic_text = ""
    index: Counter[str] = Counter()
    grounded_texts: list[str] = []
    grounded_idx: list[int] = []
    for (kind, subject), res in zip(plan.subjects, results, strict=True):
        label = "holistic" if kind == "holistic" else f"{kind} {res.ref.split('|')[-1]}"
        if not res.ok or res.text is None:
            flags.append(validate.flag("lmm_failed", "error", f"{label}: {res.error or 'no answer'}"))
            continue
        text = strip_markup(res.text)
        answer_flags = validate.check_answer(text, res.tier or kind)
        flags.extend({**f, "detail": f"{label}: {f['detail']}"} for f in answer_flags)
        if any(f["code"] == "empty_response" for f in answer_flags):
            continue
        if kind == "holistic":
            holistic_text = text
            sentences.append(GroundedSentence(text))
            continue
        if kind == "instance":
            r = subject
            extra = validate.check_mark_leak(text, r["mark"])
            extra += validate.check_category(text, r["category_name"], known_categories)
            extra += validate.check_position(text, r["position"])
            if r["visible_fraction"] < validate.MOSTLY_CUT_OFF:
                extra.append(validate.flag("mostly_cut_off", "warning", f"only {r['visible_fraction']:.0%} visible"))
            grounding = Grounding("instance", r["category_name"], [r["instance_id"]], r["rle"])
            category, position = r["category_name"], r["position"]
        else:
            c, members = subject
            extra = validate.check_category(text, c["category_name"], known_categories)
            mask = merge([m["rle"] for m in members]) if members else None
            if mask is None:
                flags.append(validate.flag("lmm_failed", "error", f"{label}: cluster has no member masks"))
                continue
            grounding = Grounding("cluster", c["category_name"], [m["instance_id"] for m in members], mask)
            category, position = c["category_name"], c["position"]
        index[category] += 1
        s = GroundedSentence(text, grounding, index[category], position)
        if vocab.find_mention(text, category) is None:
            extra.append(validate.flag("category_not_named", "info", "the phrase was added in front of the sentence"))
        flags.extend({**f, "detail": f"{label}: {f['detail']}"} for f in extra)
        grounded_texts.append(text)
        grounded_idx.append(len(sentences))
        sentences.append(s)
    for k, rep in enumerate(validate.check_repeats(grounded_texts)):
        flags.extend({**f, "detail": f"{sentences[grounded_idx[k]].grounding.kind} sentence {k + 1}: {f['detail']}"} for f in rep)  # type: ignore[union-attr]
    out = assemble(sentences, config.phrase_naming)
    flags.extend(validate.check_markup(out.gcg_caption, len(out.masks)))
    if not out.phrases:
        flags.append(validate.flag("no_grounding", "info", "no grounded phrase in this tile"))
    n_instances = sum(1 for k, _ in plan.subjects if k != "holistic")
    return {
        "tile_id": tile["tile_id"],
        "image_id": tile["image_id"],
        "tile_path": tile["tile_path"],
        "marks_path": tile["marks_path"],
        "width": tile["width"],
        "height": tile["height"],
        "gcg_caption": out.gcg_caption,
        "caption": out.caption,
        "phrases": out.phrases,
        "masks": out.masks,
        "flags": flags,
        "max_severity": validate.max_severity(flags),
        "holistic": holistic_text,
        "n_instances": n_instances,
        "n_grounded_instances": len(out.phrases),
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

    def text(self) -> str:
        lines = [
            f"describe → {self.data_dir}/samples.parquet",
            f"  tiles {self.tiles} → samples {self.samples}, grounded phrases {self.phrases}",
            f"  flagged samples {self.flagged}"
            + (": " + ", ".join(f"{k} {v}" for k, v in self.flags_by_code.items()) if self.flags_by_code else ""),
            f"  model {self.model} at {self.base_url}, prompts {self.prompt_version}",
            "  " + RunTotals(**self.lmm).summary().replace("\n", "\n  ") if self.lmm else "",
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


def _read_rows(path: Path, tile_ids: list[str]) -> list[dict[str, Any]]:
    return pq.read_table(path, filters=[("tile_id", "in", tile_ids)]).to_pylist() if tile_ids else []


def describe_batch(
    data_dir: str | Path, tile_ids: list[str], config: DescribeConfig, base_url: str
) -> tuple[list[dict[str, Any]], list[LMMResult]]:
    """Describe some tiles through the endpoint at ``base_url``: sample rows and call results, in order."""
    data = Path(data_dir)
    order = {t: k for k, t in enumerate(tile_ids)}
    tiles = sorted(_read_rows(data / "tiles.parquet", tile_ids), key=lambda t: order[t["tile_id"]])
    instances = _group(_read_rows(data / "instances.parquet", tile_ids), "tile_id")
    clusters = _group(_read_rows(data / "clusters.parquet", tile_ids), "tile_id")
    known = sorted({r["category_name"] for rows in instances.values() for r in rows} | set(vocab.SYNONYMS))
    prompts = load_prompt_set(config.prompts)
    settings = _settings(config, data, base_url, prompts.version)
    plans = [
        plan_tile(data, t, instances.get(t["tile_id"], []), clusters.get(t["tile_id"], []), prompts, config)
        for t in tiles
    ]
    results = LMMClient(settings).describe_all_sync([r for p in plans for r in p.requests], progress=False)
    rows, pos = [], 0
    for p in plans:
        n = len(p.requests)
        rows.append(build_sample(p, results[pos : pos + n], known, config, settings.model, prompts.version))
        pos += n
    return rows, results


def write_describe_outputs(
    data_dir: str | Path, rows: list[dict[str, Any]], results: list[LMMResult], config: DescribeConfig, endpoint: str
) -> DescribeSummary:
    """Write ``samples.parquet``, ``lmm_calls.parquet`` and ``describe_report.json``; return the summary."""
    data = Path(data_dir)
    write_table(rows, SAMPLES_SCHEMA, data / "samples.parquet")
    write_calls_parquet(results, data / "lmm_calls.parquet")
    totals = RunTotals.from_results(results, load_price_table(config.prices_file))
    prompts = load_prompt_set(config.prompts)
    summary = DescribeSummary(
        data_dir=str(data),
        tiles=len(rows),
        samples=len(rows),
        phrases=sum(len(r["phrases"]) for r in rows),
        flagged=sum(1 for r in rows if r["max_severity"] in ("warning", "error")),
        flags_by_code=validate.summarize_flags(rows),
        lmm=asdict(totals),
        model=config.model or OFFLINE_MODEL,
        prompt_version=prompts.version,
        base_url=endpoint,
    )
    (data / "describe_report.json").write_text(
        json.dumps({"summary": asdict(summary), "config": config.model_dump(mode="json")}, indent=1, default=str)
    )
    return summary


def describe(data_dir: str | Path, config: DescribeConfig | None = None, progress: bool = True) -> DescribeSummary:
    """Describe every prepared tile of ``data_dir``; writes ``samples.parquet`` and ``lmm_calls.parquet``."""
    config = config or DescribeConfig()
    batches = tile_batches(data_dir, config.batch_tiles)
    rows: list[dict[str, Any]] = []
    results: list[LMMResult] = []
    bar = tqdm(total=sum(len(b) for b in batches), desc="describe", unit="tile", disable=not progress)
    with _endpoint(config) as base_url:
        for batch in batches:
            r, c = describe_batch(data_dir, batch, config, base_url)
            rows.extend(r)
            results.extend(c)
            bar.update(len(batch))
            bar.set_postfix(calls=len(results), failed=sum(not x.ok for x in results))
    bar.close()
    endpoint = config.base_url or "embedded offline describer (127.0.0.1)"
    return write_describe_outputs(data_dir, rows, results, config, endpoint)
