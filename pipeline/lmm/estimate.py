"""What a describe run will cost before it is sent: calls, tokens and USD per tier (the dry run).

Input tokens of one request = text tokens of its prompt (+ the JSON schema it asks for) + the chat framing
(:data:`MESSAGE_OVERHEAD_TOKENS`) + image tokens. Output tokens = the answer-length limit (``max_tokens``),
an upper bound: answers are usually shorter, and for reasoning models the limit also covers their hidden
reasoning tokens, which are billed as output.

**Text tokens** are counted with the model's own tokenizer when the optional ``tiktoken`` package knows the
model *and* its encoding file is already on this machine (``TIKTOKEN_CACHE_DIR``, or tiktoken's default
cache): tiktoken downloads encodings from the network on first use, and this module never lets it
(no downloads at run time). Otherwise a documented estimate is used: one token per
:data:`CHARS_PER_TOKEN` characters (OpenAI's rule of thumb for English text). The estimate says which one
it used. To get exact counts, ``pip install tiktoken`` and copy the encoding file (e.g. ``o200k_base``) into
``TIKTOKEN_CACHE_DIR`` on a machine that has it.

**Image tokens** follow OpenAI's published rules for the image's size and ``detail``
(:data:`IMAGE_RULES`):

- *tiles* (GPT-4o, GPT-4.1, GPT-5, o1/o3): ``low`` costs the base tokens; ``high`` scales the image to fit
  2048 x 2048, then (only down) so its short side is at most 768 px, and costs base + per-tile tokens for
  each 512 px tile (an 800 x 800 tile: 4 tiles, 85 + 4 x 170 = 765 tokens for GPT-4o);
- *patches* (GPT-4.1-mini/nano, o4-mini, GPT-5-mini/nano): 32 px patches, at most 1536 (the image is scaled
  down to fit), times the model's multiplier; ``detail`` does not change it.

``auto`` is costed as ``high`` (an upper bound: the service picks). Models the table does not know are costed
with the GPT-4o rule; endpoints with no price entry cost 0 and the estimate says so.
"""

from __future__ import annotations

import fnmatch
import importlib
import io
import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image

from .client import effective_detail
from .pricing import ModelPrice, PriceTable
from .profiles import ModelProfile
from .types import LMMRequest, LMMSettings

logger = logging.getLogger(__name__)

#: Documented text estimate when no tokenizer is available: characters per token (English prose).
CHARS_PER_TOKEN = 4.0
#: The order tiers are listed in.
TIER_ORDER = (
    "holistic", "instance", "instance_metric", "instance_group", "cluster", "compose", "second_opinion", "category"
)
#: Chat framing per request: 3 tokens for the one user message plus 3 that prime the reply (OpenAI's
#: published counting recipe for chat models).
MESSAGE_OVERHEAD_TOKENS = 6


@dataclass(frozen=True)
class ImageRule:
    """How a model family bills one image.

    Attributes:
        kind: ``tiles`` (base + per 512 px tile) or ``patches`` (32 px patches times a multiplier).
        base, per_tile: tokens for ``tiles``.
        multiplier: billed tokens per patch for ``patches``.
    """

    kind: str
    base: int = 0
    per_tile: int = 0
    multiplier: float = 1.0

    def tokens(self, width: int, height: int, detail: str) -> int:
        """Tokens of one ``width`` x ``height`` image at ``detail`` (``auto`` counts as ``high``)."""
        if width <= 0 or height <= 0:
            return 0
        if self.kind == "patches":
            return math.ceil(_patches(width, height) * self.multiplier)
        if detail == "low":
            return self.base
        w, h = float(width), float(height)
        if max(w, h) > 2048:
            scale = 2048 / max(w, h)
            w, h = w * scale, h * scale
        if min(w, h) > 768:
            scale = 768 / min(w, h)
            w, h = w * scale, h * scale
        tiles = math.ceil(math.floor(w) / 512) * math.ceil(math.floor(h) / 512)
        return self.base + self.per_tile * tiles

    def describe(self) -> str:
        if self.kind == "patches":
            return f"32 px patches (at most 1536) x {self.multiplier:g}"
        return f"{self.base} + {self.per_tile} per 512 px tile"


def _patches(width: int, height: int, cap: int = 1536) -> int:
    """32 px patches of an image, scaled down to at most ``cap`` patches (OpenAI's rule)."""
    raw = math.ceil(width / 32) * math.ceil(height / 32)
    if raw <= cap:
        return raw
    shrink = math.sqrt(32 * 32 * cap / (width * height))
    w, h = width * shrink / 32, height * shrink / 32
    shrink *= min(math.floor(w) / w, math.floor(h) / h)
    return min(cap, math.ceil(width * shrink / 32) * math.ceil(height * shrink / 32))


_GPT4O = ImageRule("tiles", 85, 170)
#: Image rules by model-name pattern (most specific pattern wins; ``*``: the GPT-4o rule).
IMAGE_RULES: dict[str, ImageRule] = {
    "*": _GPT4O,
    "gpt-4o*": _GPT4O,
    "gpt-4.1*": _GPT4O,
    "gpt-4.5*": _GPT4O,
    "gpt-4o-mini*": ImageRule("tiles", 2833, 5667),
    "o1*": ImageRule("tiles", 75, 150),
    "o3*": ImageRule("tiles", 75, 150),
    "gpt-5*": ImageRule("tiles", 70, 140),
    "gpt-4.1-mini*": ImageRule("patches", multiplier=1.62),
    "gpt-4.1-nano*": ImageRule("patches", multiplier=2.46),
    "o4-mini*": ImageRule("patches", multiplier=1.72),
    "gpt-5-mini*": ImageRule("patches", multiplier=1.62),
    "gpt-5-nano*": ImageRule("patches", multiplier=2.46),
}


def image_rule(model: str) -> ImageRule:
    """The image rule of ``model`` (most specific matching pattern of :data:`IMAGE_RULES`)."""
    matches = [p for p in IMAGE_RULES if fnmatch.fnmatchcase(model, p)]
    best = max(matches, key=lambda p: len(p.replace("*", ""))) if matches else "*"
    return IMAGE_RULES[best]


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of encoded image bytes, from the header only; (0, 0) when unreadable."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.width), int(im.height)
    except Exception:  # not an image we can read: no image tokens, rather than a failed dry run
        return 0, 0


_TOKENIZERS: dict[str, tuple[Callable[[str], int] | None, str]] = {}
_TOKENIZER_LOCK = threading.Lock()


def offline_tokenizer(model: str) -> Callable[[str], int] | None:
    """A token counter from ``tiktoken`` for ``model`` when the package is installed, knows the model and
    has its encoding file locally; None otherwise. tiktoken is never allowed to download (see module doc)."""
    return tokenizer_status(model)[0]


def tokenizer_status(model: str) -> tuple[Callable[[str], int] | None, str]:
    """(:func:`offline_tokenizer`'s counter, a sentence saying which tokenizer counts text or why none)."""
    with _TOKENIZER_LOCK:
        if model in _TOKENIZERS:
            return _TOKENIZERS[model]
        status: tuple[Callable[[str], int] | None, str]
        try:
            tiktoken: Any = importlib.import_module("tiktoken")
            tiktoken_load: Any = importlib.import_module("tiktoken.load")
        except ImportError:
            status = (None, "tiktoken is not installed (pip install 'geopixeld[tokens]')")
        else:
            try:
                name = tiktoken.encoding_name_for_model(model)
            except KeyError:
                name = None
            if name is None:
                status = (None, f"tiktoken does not know {model}")
            else:
                original = tiktoken_load.read_file

                def no_download(blobpath: str) -> bytes:
                    if "://" in blobpath and not blobpath.startswith("file://"):
                        raise OSError(f"not downloading {blobpath}: tokenizer files must already be local")
                    return original(blobpath)

                tiktoken_load.read_file = no_download
                try:
                    encoding = tiktoken.get_encoding(name)
                    status = (
                        lambda text: len(encoding.encode(text, disallowed_special=())),
                        f"{model}'s tokenizer ({name}, tiktoken, local encoding file)",
                    )
                except Exception as exc:  # no local encoding file: the documented estimate
                    logger.debug("tiktoken %s not available offline: %s", name, exc)
                    status = (None, f"tiktoken has no local {name} file (TIKTOKEN_CACHE_DIR) and is not let download it")
                finally:
                    tiktoken_load.read_file = original
        _TOKENIZERS[model] = status
        return status


def estimate_text_tokens(text: str) -> int:
    """The documented estimate: ``ceil(characters / CHARS_PER_TOKEN)``."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@dataclass
class TierEstimate:
    """Calls and tokens of one tier.

    Attributes:
        calls: requests the run makes for this tier (cache hits included).
        cached: of those, answered from the response cache (sent: ``calls - cached``; they cost nothing).
        text_tokens, image_tokens, output_tokens: tokens of the requests that would be sent.
        cost_usd: their price.
    """

    calls: int = 0
    cached: int = 0
    text_tokens: int = 0
    image_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def input_tokens(self) -> int:
        return self.text_tokens + self.image_tokens

    def add(self, other: TierEstimate) -> None:
        for name in ("calls", "cached", "text_tokens", "image_tokens", "output_tokens", "cost_usd"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Estimate:
    """The dry run's answer: per tier and in total, for the whole dataset and per 1,000 tiles.

    Attributes:
        model: the model priced.
        tiles: tiles in the run.
        tiers: tier -> :class:`TierEstimate` (in the order first seen).
        batch: priced at the Batch API discount.
        price: the model's price entry (None: no price known, cost counted as 0).
        text_method: how text tokens were counted (tokenizer name, or the documented estimate).
        image_method: the image rule and detail used.
        max_tokens: the answer-length limit used as output tokens per call.
        notes: sentences a reader needs (unknown price, reasoning tokens, ...).
    """

    model: str
    tiles: int = 0
    tiers: dict[str, TierEstimate] = field(default_factory=dict)
    batch: bool = False
    price: ModelPrice | None = None
    text_method: str = ""
    image_method: str = ""
    max_tokens: int = 0
    notes: list[str] = field(default_factory=list)

    def total(self) -> TierEstimate:
        out = TierEstimate()
        for tier in self.tiers.values():
            out.add(tier)
        return out

    def per_1000_tiles(self) -> TierEstimate:
        """Totals scaled to 1,000 tiles (calls and tokens rounded)."""
        total, k = self.total(), (1000.0 / self.tiles if self.tiles else 0.0)
        return TierEstimate(
            calls=round(total.calls * k),
            cached=round(total.cached * k),
            text_tokens=round(total.text_tokens * k),
            image_tokens=round(total.image_tokens * k),
            output_tokens=round(total.output_tokens * k),
            cost_usd=total.cost_usd * k,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tiers, total, per 1,000 tiles and how it was counted)."""
        return {
            "model": self.model,
            "tiles": self.tiles,
            "batch": self.batch,
            "price": asdict(self.price) if self.price else None,
            "text_method": self.text_method,
            "image_method": self.image_method,
            "max_tokens": self.max_tokens,
            "tiers": {name: asdict(t) for name, t in self.tiers.items()},
            "total": asdict(self.total()),
            "per_1000_tiles": asdict(self.per_1000_tiles()),
            "notes": list(self.notes),
        }

    def headline(self) -> str:
        """One line: calls, tokens and cost of the whole run and per 1,000 tiles."""
        t, k = self.total(), self.per_1000_tiles()
        sent = t.calls - t.cached
        return (
            f"estimate for {self.model}{' (Batch API)' if self.batch else ''}: {self.tiles:,} tiles, "
            f"{t.calls:,} calls ({sent:,} to send, {t.cached:,} cached), input {t.input_tokens:,} tokens, "
            f"output ≤ {t.output_tokens:,} tokens, ≤ ${t.cost_usd:,.2f}; per 1,000 tiles "
            f"{k.calls:,} calls, ≤ ${k.cost_usd:,.2f}"
        )

    def text(self) -> str:
        """A table for the console (see the module doc for how each number is made)."""
        price = (
            f"USD per 1M tokens: in {self.price.input_per_m:g} / out {self.price.output_per_m:g}"
            + (f", Batch API {self.price.batch_discount:.0%} off" if self.batch else "")
            if self.price
            else "no price known: cost counted as 0 (add the model to a --prices file)"
        )
        lines = [
            f"dry run: nothing sent. model {self.model}, {self.tiles:,} tiles; {price}",
            f"  text tokens: {self.text_method}; image tokens: {self.image_method}; "
            f"output: ≤ {self.max_tokens} per call (max_tokens)",
            f"  {'tier':<16}{'calls':>10}{'cached':>10}{'in text':>15}{'in image':>15}{'out ≤':>15}{'USD ≤':>13}",
        ]

        def row(name: str, t: TierEstimate) -> str:
            return (
                f"  {name:<16}{t.calls:>10,}{t.cached:>10,}{t.text_tokens:>15,}{t.image_tokens:>15,}"
                f"{t.output_tokens:>15,}{t.cost_usd:>13,.4f}"
            )

        order = {name: k for k, name in enumerate(TIER_ORDER)}
        tiers = sorted(self.tiers.items(), key=lambda kv: order.get(kv[0], len(order)))
        lines += [row(name, t) for name, t in tiers]
        lines.append(row("total", self.total()))
        lines.append(row("per 1,000 tiles", self.per_1000_tiles()))
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


class Estimator:
    """Adds up requests (or request shapes) into an :class:`Estimate`, streaming: nothing is kept per request.

    Args:
        settings: the run's client settings (model, ``max_tokens``, ``detail``).
        profile: the model's request profile (its ``detail`` override, reasoning).
        prices: the price table.
        batch: price at the Batch API discount.
    """

    def __init__(
        self, settings: LMMSettings, profile: ModelProfile, prices: PriceTable, *, batch: bool = False
    ) -> None:
        self.settings = settings
        self.detail = effective_detail(settings, profile)
        self.rule = image_rule(settings.model)
        self.price = prices.lookup(settings.model)
        self.batch = batch
        self._count, why = tokenizer_status(settings.model)
        text_method = why if self._count is not None else f"estimate, 1 token per {CHARS_PER_TOKEN:g} characters ({why})"
        detail = "auto, costed as high" if self.detail == "auto" else self.detail
        notes = []
        if self.price is None:
            notes.append(f"no price known for {settings.model}: its cost is counted as 0")
        if profile.reasoning:
            notes.append(
                "a reasoning model: its hidden reasoning tokens are billed as output and count against "
                "max_tokens, so the output bound is also its reasoning budget"
            )
        self.estimate = Estimate(
            model=settings.model,
            batch=batch,
            price=self.price,
            text_method=text_method,
            image_method=f"{self.rule.describe()}, detail {detail}",
            max_tokens=settings.max_tokens,
            notes=notes,
        )

    def text_tokens(self, text: str) -> int:
        """Tokens of ``text`` (tokenizer when available, else the documented estimate)."""
        return self._count(text) if self._count is not None else estimate_text_tokens(text)

    def add_tiles(self, n: int) -> None:
        """Count ``n`` more tiles (for the per-1,000-tiles figures)."""
        self.estimate.tiles += n

    def add(
        self,
        tier: str,
        prompt: str,
        image_sizes: list[tuple[int, int]],
        *,
        response_format: Any = None,
        cached: bool = False,
        prompt_tokens: int | None = None,
    ) -> None:
        """Count one request of ``tier``: its prompt text (or ``prompt_tokens`` already estimated), the images
        of the given sizes and the JSON schema it asks for; a ``cached`` request costs nothing."""
        tier_est = self.estimate.tiers.setdefault(tier, TierEstimate())
        tier_est.calls += 1
        if cached:
            tier_est.cached += 1
            return
        text = self.text_tokens(prompt) if prompt_tokens is None else prompt_tokens
        text += MESSAGE_OVERHEAD_TOKENS
        if response_format is not None:
            text += self.text_tokens(json.dumps(response_format, separators=(",", ":")))
        image = sum(self.rule.tokens(w, h, self.detail) for w, h in image_sizes)
        out = self.settings.max_tokens
        tier_est.text_tokens += text
        tier_est.image_tokens += image
        tier_est.output_tokens += out
        if self.price is not None:
            tier_est.cost_usd += self.price.cost(text + image, out, self.batch)

    def add_request(self, request: LMMRequest, *, cached: bool = False, tier: str | None = None) -> None:
        """Count one request as it would be sent (under ``tier`` when given, else its own tier)."""
        self.add(
            tier or request.tier,
            request.prompt,
            [image_size(request.image_png)] if request.image_png else [],
            response_format=request.response_format,
            cached=cached,
        )


__all__ = [
    "CHARS_PER_TOKEN",
    "IMAGE_RULES",
    "MESSAGE_OVERHEAD_TOKENS",
    "Estimate",
    "Estimator",
    "ImageRule",
    "TierEstimate",
    "estimate_text_tokens",
    "image_rule",
    "image_size",
    "offline_tokenizer",
    "tokenizer_status",
]
