"""The offline describer: honest captions written from measurements, not from looking.

This is what ``geopixeld lmm serve`` answers with, so the whole pipeline runs without a network or a GPU.
It reads the measured facts a request carries (``geopixeld_facts``: category, position word, size in metres,
orientation, mask as COCO RLE, counts) and measures colour itself from the image pixels under the mask. It
writes only what it measured: it never guesses materials, activities or surroundings. Without facts it says
so and describes only the image's colours.

Everything here is a pure function of (facts, image bytes): the same input always gives the same text, and
the wording varies between inputs through a choice seeded by a hash of the facts.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..colour import PALETTE, classify_pixels, colour_name, colour_phrase, colour_shares
from ..vocab import article, category_name, counted, join_words, number_word, place, plural, singular

Facts = Mapping[str, Any]

# --------------------------------------------------------------------------------------------------------
# Images and masks
# --------------------------------------------------------------------------------------------------------


def decode_image(image_png: bytes | None) -> np.ndarray | None:
    """RGB uint8 array (H x W x 3) of an encoded image, or None when absent or undecodable."""
    if not image_png:
        return None
    try:
        with Image.open(io.BytesIO(image_png)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception:  # any decoder failure means: no image we can measure
        return None


def decode_mask(rle: Any, shape: tuple[int, int] | None = None) -> np.ndarray | None:
    """Boolean H x W mask from a COCO RLE dict (compressed string or uncompressed list counts).

    Returns None when ``rle`` is missing or malformed, or when its size differs from ``shape`` (H, W).
    """
    from ..rle import decode

    try:
        mask = decode(rle, shape)
    except Exception:  # malformed RLE: measure nothing rather than fail the request
        return None
    return np.asarray(mask.any(axis=2), dtype=bool) if mask.ndim == 3 else mask


def _box_mask(box: Any, shape: tuple[int, int]) -> np.ndarray | None:
    """Boolean mask of an [x0, y0, x1, y1] pixel box (x1, y1 exclusive), clipped to ``shape``."""
    try:
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    except (TypeError, ValueError):
        return None
    out = np.zeros(shape, dtype=bool)
    out[max(y0, 0) : max(min(y1, shape[0]), 0), max(x0, 0) : max(min(x1, shape[1]), 0)] = True
    return out


def masked_pixels(image: np.ndarray | None, facts: Facts, *, exclude_mark: bool) -> np.ndarray | None:
    """Pixels (N x 3) of ``image`` under the facts' mask, minus the drawn mark box if asked; None if none."""
    if image is None:
        return None
    mask = decode_mask(facts.get("mask_rle"), image.shape[:2])
    if mask is None:
        return None
    if exclude_mark and facts.get("mark_box") is not None:
        box = _box_mask(facts["mark_box"], mask.shape)
        if box is not None:
            mask = mask & ~box
    return image[mask] if mask.any() else None


# --------------------------------------------------------------------------------------------------------
# Words
# --------------------------------------------------------------------------------------------------------

#: Categories whose footprint is round: sizes are diameters and orientation is meaningless.
ROUND_CATEGORIES = frozenset({"storage tank", "roundabout"})


def readable(category: Any) -> str:
    """``"Small_Vehicle"`` -> ``"small vehicle"`` (:func:`pipeline.vocab.category_name`)."""
    return category_name(str(category))


def metres(x: float) -> str:
    """A length for prose: whole metres from 10 m, one decimal below."""
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}".rstrip("0").rstrip(".")


def _num(value: Any) -> float | None:
    """A finite positive float, or None."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x > 0 else None


def orientation_word(deg: float) -> str:
    """``"horizontal"``, ``"vertical"`` or ``"diagonal"`` for a long-axis angle in degrees from the x axis."""
    a = deg % 180.0
    if a < 22.5 or a >= 157.5:
        return "horizontal"
    if 67.5 <= a < 112.5:
        return "vertical"
    return "diagonal"


def _first(facts: Facts, *keys: str) -> Any:
    """The first non-empty value among ``keys`` (facts may use the prompt's names, e.g. ``pos``)."""
    for key in keys:
        value = facts.get(key)
        if value not in (None, ""):
            return value
    return None


def _seeded(facts: Facts) -> random.Random:
    """A random generator seeded by the facts, so wording varies between inputs but never between runs."""
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _sentence(text: str) -> str:
    """Capitalise the first letter and end with a full stop."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


# --------------------------------------------------------------------------------------------------------
# Tiers
# --------------------------------------------------------------------------------------------------------


def _size_clause(facts: Facts, category: str, rng: random.Random) -> str:
    """``"measuring about 24 m by 11 m"``-style clause from ``length_m``/``width_m``; "" when unknown."""
    length, width = _num(facts.get("length_m")), _num(facts.get("width_m"))
    if length is None:
        return ""
    if width is not None and width > length:
        length, width = width, length
    if category in ROUND_CATEGORIES:
        diameter = (length + width) / 2 if width else length
        measure = f"about {metres(diameter)} m across"
    elif width is None:
        measure = f"about {metres(length)} m long"
    elif length / width < 1.15:
        measure = f"about {metres(length)} m by {metres(width)} m"
    else:
        long_, wide = metres(length), metres(width)
        measure = rng.choice([f"about {long_} m long and {wide} m wide", f"roughly {long_} m by {wide} m"])
    partial = bool(facts.get("truncated")) or (_num(facts.get("visible_fraction")) or 1.0) < 0.95
    if partial:  # a cut-off object's measured size is that of its visible part only
        return f"its visible part measuring {measure}"
    return measure if measure.endswith(("long", "wide")) else f"measuring {measure}"


def _orientation_clause(facts: Facts, category: str, rng: random.Random) -> str:
    """``"oriented diagonally, rising to the right"``-style clause; "" when the object has no long axis.

    ``orientation_word`` is trusted when the key is present (None there means the measurement found the
    object too compact to have an orientation); only without that key is a word derived from
    ``orientation_deg``.
    """
    if category in ROUND_CATEGORIES:
        return ""
    if "orientation_word" in facts:
        word = facts.get("orientation_word")
    else:
        length, width = _num(facts.get("length_m")), _num(facts.get("width_m"))
        if length and width and max(length, width) / min(length, width) < 1.2:
            return ""  # a compact footprint has no meaningful long axis
        try:
            word = orientation_word(float(facts["orientation_deg"]))
        except (KeyError, TypeError, ValueError):
            return ""
    if not word:
        return ""
    main, _, detail = readable(word).partition(",")
    adverbs = {"horizontal": "horizontally", "vertical": "vertically", "diagonal": "diagonally"}
    if main.strip() not in adverbs:
        return f"with a {readable(word)} orientation"
    verb = rng.choice(["oriented", "aligned"])
    return f"{verb} {adverbs[main.strip()]}" + (f", {detail.strip()}" if detail.strip() else "")


#: Size-class adjectives; skipped when the category name already carries a size ("large vehicle").
_SIZE_WORDS = {"small": "small", "medium": "medium-sized", "large": "large"}


def _truncation_clause(facts: Facts) -> str:
    """``"partly cut off by the tile edge (about 80% visible)"`` for truncated objects, else ""."""
    fraction = _num(facts.get("visible_fraction"))
    if not facts.get("truncated") and (fraction is None or fraction >= 0.95):
        return ""
    if fraction is not None and fraction < 0.95:
        return f"partly cut off by the tile edge (about {round(fraction * 100)}% visible)"
    return "partly cut off by the tile edge"


def describe_instance(facts: Facts, image: np.ndarray | None) -> str:
    """One sentence about one marked instance: colour, category, position, size, orientation, truncation.

    The colour comes from the set-of-marks tile's pixels under ``mask_rle`` minus ``mark_box`` (the drawn
    number), so the mark never colours the answer; the mark number itself is never written.
    """
    rng = _seeded(facts)
    category = singular(readable(_first(facts, "category", "category_name") or ""))
    pixels = masked_pixels(image, facts, exclude_mark=True)
    colours = colour_phrase(colour_shares(pixels)) if pixels is not None else None
    size_clause = _size_clause(facts, category, rng)
    size_word = ""
    if not size_clause and not re.search(r"\b(small|large|big)\b", category):
        size_word = _SIZE_WORDS.get(readable(facts.get("size_class") or ""), "")
    noun = category or "object of unknown category"
    head_words = " ".join(w for w in (size_word, colours, noun) if w)
    head = f"{article(head_words)} {head_words}"
    orientation = _orientation_clause(facts, category, rng)
    clauses = [c for c in (size_clause, orientation, _truncation_clause(facts)) if c]
    where = place(_first(facts, "position", "pos"))
    if not where:
        core = head
    else:
        core = rng.choice(
            [f"{head} {where}", f"{head} lies {where}", f"{head} sits {where}", f"{where}, {head}"]
        )
    return _sentence(", ".join([core, *clauses]))


def describe_cluster(facts: Facts, image: np.ndarray | None) -> str:
    """One sentence about a group: count, category, colours of the members' pixels, position, extent."""
    rng = _seeded(facts)
    noun = singular(readable(_first(facts, "category", "category_name") or "objects"))
    count = facts.get("count")
    n = int(count) if isinstance(count, (int, float)) and not isinstance(count, bool) and count > 0 else None
    if n == 1:
        subject = f"a single {noun}"
    elif n is not None:
        subject = counted(n, noun)
    else:
        subject = f"{readable(_first(facts, 'count_word', 'cluster_info') or 'several')} {plural(noun)}"

    mask = decode_mask(facts.get("mask_rle"))
    colours = None
    if image is not None and mask is not None and mask.shape == image.shape[:2] and mask.any():
        colours = colour_phrase(colour_shares(image[mask]), second_min=0.2)
    extent = ""
    gsd = _num(facts.get("gsd"))
    if gsd is not None and mask is not None and mask.any() and n != 1:
        ys, xs = np.nonzero(mask)
        span_m = max(int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)) * gsd
        extent = f"spread over about {metres(span_m)} m"
    where = place(_first(facts, "position", "pos"))
    if not where:
        where = "in the image"
    elif not where.endswith(("image", "tile")):
        where += " of the image"

    verb = "is" if n == 1 else "are"
    frame = rng.randrange(3 if n is not None and n > 1 else 2)
    if frame == 0:
        extras = join_words([c for c in (f"mostly {colours}" if colours else "", extent) if c])
        located = rng.choice(["seen", "located"])
        text = f"{subject}{', ' + extras + ',' if extras else ''} {verb} {located} {where}"
    elif frame == 1:
        extras = join_words([c for c in (f"mostly {colours}" if colours else "", extent) if c])
        text = f"{where} there {verb} {subject}" + (f", {extras}" if extras else "")
    else:
        group = "group" if n is not None and n < 10 else "cluster"
        extras = join_words([c for c in (f"{colours} in colour" if colours else "", extent) if c])
        text = f"{article(group)} {group} of {subject} {where}" + (f", {extras}" if extras else "")
    return _sentence(text)


#: Row-major names of the 3x3 grid cells (the pipeline's position words).
_GRID_NAMES = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)


def _brightness_sentence(image: np.ndarray) -> str:
    """Where the tile is brightest and darkest, from mean luminance of 3x3 cells."""
    h, w = image.shape[:2]
    lum = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    cells = [
        float(lum[r * h // 3 : (r + 1) * h // 3, c * w // 3 : (c + 1) * w // 3].mean())
        for r in range(3)
        for c in range(3)
    ]
    names = _GRID_NAMES
    bright, dark = int(np.argmax(cells)), int(np.argmin(cells))
    if max(cells) - min(cells) < 12:
        return "Its brightness is fairly even across the tile"
    return f"Its brightest part is {place(names[bright])} and its darkest {place(names[dark])}"


def describe_holistic(facts: Facts, image: np.ndarray | None) -> str:
    """Four short sentences: dominant colours, categories with counts, where they lie, scale."""
    rng = _seeded(facts)
    sentences: list[str] = []

    shares = colour_shares(image) if image is not None else []
    names = [name for name, share in shares[:3] if share >= 0.1] or [name for name, _ in shares[:1]]
    if names:
        sentences.append(
            rng.choice(
                [
                    f"This aerial tile is dominated by {join_words(names)} tones",
                    f"The scene is mostly {join_words(names)} in colour",
                ]
            )
        )
    else:
        sentences.append("No image pixels could be measured for this tile")

    counts: Counter[str] = Counter()
    for name, n in dict(facts.get("category_counts") or {}).items():
        if isinstance(n, (int, float)) and n > 0:
            counts[singular(readable(name))] += int(n)
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if ordered:
        listing = join_words([counted(n, name) for name, n in ordered])
        sentences.append(rng.choice([f"It contains {listing}", f"The annotated objects are {listing}"]))
    else:
        sentences.append("No annotated objects were measured in this tile")

    positions: dict[str, Counter[str]] = {}
    for inst in facts.get("instances") or []:
        if not isinstance(inst, Mapping):
            continue
        cat, pos = _first(inst, "category", "category_name"), _first(inst, "position", "pos")
        if cat and pos:
            positions.setdefault(singular(readable(cat)), Counter())[readable(pos)] += 1
    # Categories sharing the same layout are named together: "the planes and ships lie in the top left".
    layouts: dict[str, list[tuple[str, int]]] = {}
    for name, n in ordered[:3]:
        where = positions.get(name)
        if not where:
            continue
        spots = [p for p, _ in where.most_common()]
        phrase = "across the tile" if len(spots) >= 3 else " and ".join(place(p) for p in spots)
        layouts.setdefault(phrase, []).append((name, n))
    layout: list[str] = []
    for phrase, members in layouts.items():
        subject = "the " + join_words([plural(name, n) for name, n in members])
        single = len(members) == 1 and members[0][1] == 1
        if phrase == "across the tile":
            layout.append(f"{subject} {'is' if single else 'are'} spread across the tile")
        else:
            layout.append(f"{subject} {'lies' if single else 'lie'} {phrase}")
    if layout:
        sentences.append(", while ".join(layout) if len(layout) <= 2 else join_words(layout))
    elif ordered:
        single = sum(counts.values()) == 1
        sentences.append("Its position was not measured" if single else "Their positions were not measured")
    elif image is not None:
        sentences.append(_brightness_sentence(image))
    else:
        sentences.append("Nothing was measured about the layout")

    gsd = _num(facts.get("gsd"))
    size = facts.get("tile_size")
    if (not isinstance(size, (list, tuple)) or len(size) != 2) and image is not None:
        size = [image.shape[1], image.shape[0]]
    if gsd is not None and isinstance(size, (list, tuple)) and len(size) == 2:
        w_m, h_m = float(size[0]) * gsd, float(size[1]) * gsd
        sentences.append(
            f"At about {gsd:.2g} m per pixel, the tile covers roughly {metres(w_m)} m by {metres(h_m)} m"
        )
    else:
        sentences.append("Its ground sample distance is unknown, so no real-world scale is given")
    return " ".join(_sentence(s) for s in sentences)


def _split_sentences(text: str) -> list[str]:
    """Sentences of a plain paragraph (split after ``.``/``!``/``?`` followed by a space and a capital)."""
    return [t for t in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text.strip()) if t]


def _merge_block(texts: Sequence[str]) -> str:
    """Sentences about one category as one: ``A; b; and c.`` (first letters of the followers lowered)."""
    parts = [t.strip().rstrip(".") for t in texts]
    rest = [p[:1].lower() + p[1:] if p[:1].isupper() and not p[1:2].isupper() else p for p in parts[1:]]
    if len(rest) >= 2:
        rest[-1] = "and " + rest[-1]
    return "; ".join([parts[0], *rest]) + "."


def describe_compose(facts: Facts, image: np.ndarray | None) -> str:
    """One paragraph from a tile's sentences, deterministically (the compose tier).

    ``facts["sentences"]``: ``{"text", "category", "kind"}`` in order, grounded phrases already marked up.
    Neighbouring sentences about one category are merged into one; grounded sentences are kept whole and in
    order (so every ``<p> phrase </p> [SEG]`` stays, once, in place). Holistic sentences are dropped from the
    end (never the first) while the paragraph is longer than ``max_words``.
    """
    del image
    items = [s for s in facts.get("sentences") or [] if isinstance(s, Mapping) and str(s.get("text") or "").strip()]
    budget = int(facts.get("max_words") or 130)
    holistic = [t for s in items if s.get("kind") == "holistic" for t in _split_sentences(str(s["text"]))]
    grounded = [s for s in items if s.get("kind") != "holistic"]
    blocks: list[str] = []
    k = 0
    while k < len(grounded):
        cat = grounded[k].get("category")
        j = k + 1
        while j < len(grounded) and cat and grounded[j].get("category") == cat:
            j += 1
        texts = [str(s["text"]) for s in grounded[k:j]]
        blocks.append(texts[0] if len(texts) == 1 else _merge_block(texts))
        k = j

    def words(parts: Sequence[str]) -> int:
        return sum(len(p.split()) for p in parts)

    while len(holistic) > 1 and words(holistic) + words(blocks) > budget:
        holistic.pop()
    return " ".join(_sentence(t) for t in [*holistic, *blocks])


def describe_category(facts: Facts, image: np.ndarray | None) -> str:
    """The given ``category`` when it is among ``candidates``, else ``"unknown"``.

    The describer measures no appearance cues that could tell categories apart, so it never guesses.
    """
    del image
    candidates = [readable(c) for c in facts.get("candidates") or []]
    category = readable(facts.get("category") or "")
    if category and (not candidates or category in candidates):
        return category
    return "unknown"


def describe_without_facts(image: np.ndarray | None, tier: str | None = None) -> str:
    """What can be said from the image alone: its dominant colours, and that nothing else was measured."""
    lead = (
        f"No measured facts for the {tier!r} tier came with this request"
        if tier
        else "No measured facts came with this request"
    )
    if image is None:
        return _sentence(f"{lead}, and no image could be decoded, so nothing can be described")
    shares = colour_shares(image)
    names = [name for name, share in shares[:3] if share >= 0.1] or [shares[0][0]]
    return _sentence(f"{lead}, so only colour is described: the image is mostly {join_words(names)}")


def describe_instance_group(facts: Facts, image: np.ndarray | None) -> str:
    """A grouped instance request (``--instances-per-call``, tier ``instance_group``): the JSON answer
    ``{"objects": [{"mark": m, "description": ...}]}`` with, for each object of ``facts["objects"]``, exactly
    the sentence its own instance request would get."""
    objects = [o for o in facts.get("objects") or [] if isinstance(o, Mapping)]
    answers = [{"mark": o.get("mark"), "description": describe_instance(o, image)} for o in objects]
    return json.dumps({"objects": answers}, ensure_ascii=False)


#: tier -> describer(facts, image) -> text.
DESCRIBERS: dict[str, Callable[[Facts, np.ndarray | None], str]] = {
    "instance": describe_instance,
    "instance_metric": describe_instance,
    "instance_group": describe_instance_group,
    "cluster": describe_cluster,
    "holistic": describe_holistic,
    "category": describe_category,
    "compose": describe_compose,
}


def describe(facts: Facts | None, image_png: bytes | None) -> str:
    """The offline answer for one request.

    Args:
        facts: the request's ``geopixeld_facts`` (``tier`` selects the describer), or None.
        image_png: the first image of the request, encoded bytes, or None.

    Returns:
        The answer text; with no facts or an unknown tier, a colour-only description that says so.
    """
    image = decode_image(image_png)
    tier = str(facts.get("tier") or "") if facts else ""
    describer = DESCRIBERS.get(tier)
    if not facts or describer is None:
        return describe_without_facts(image, tier or None)
    return describer(facts, image)


def estimate_tokens(text: str, n_images: int = 0) -> int:
    """Deterministic token estimate: 1.3 per word plus 85 per image (OpenAI's low-detail image cost)."""
    return math.ceil(len(text.split()) * 1.3) + 85 * n_images


__all__ = [
    "DESCRIBERS",
    "PALETTE",
    "ROUND_CATEGORIES",
    "classify_pixels",
    "colour_name",
    "colour_phrase",
    "colour_shares",
    "decode_image",
    "decode_mask",
    "describe",
    "describe_category",
    "describe_cluster",
    "describe_holistic",
    "describe_instance",
    "describe_instance_group",
    "describe_without_facts",
    "estimate_tokens",
    "masked_pixels",
    "number_word",
    "orientation_word",
    "place",
    "plural",
    "singular",
]
