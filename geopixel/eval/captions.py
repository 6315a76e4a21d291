"""Caption metrics for GCG: CIDEr-D and METEOR on captions with the grounding markup removed.

CIDEr is implemented here in Python following its original definition; its deviations from coco-caption's
``CiderD`` / ``Cider`` are listed below. METEOR comes from the METEOR 1.5 jar when Java is available.

Tokenisation (:func:`tokenize`): lower-case, markup (``<p>``, ``</p>``, ``[SEG]``) removed, clitics split
(``it's`` → ``it 's``, ``don't`` → ``do n't``), then the punctuation tokens coco-caption's
``PTBTokenizer`` drops (``. , ; : ! ? - -- ... ' ` ''`` and brackets) are dropped. Hyphenated words and
decimal numbers stay one token (``court-1``, ``1.5``). This is a regular-expression approximation of the
Stanford PTB tokenizer that coco-caption runs through Java; the two agree on plain English captions.

CIDEr-D (Vedantam et al. 2015, as in coco-caption's ``cider_scorer.py``):
  n-grams n = 1..4 of each caption; weights ``g = tf · (log N − log max(1, df))`` where ``N`` is the number
  of images and ``df`` the number of images whose references contain the n-gram; per n the clipped cosine
  ``Σ min(g_c, g_r) · g_r / (‖g_c‖ ‖g_r‖)`` times the Gaussian length penalty ``exp(−(l_c − l_r)² / 2σ²)``,
  σ = 6; mean over n, mean over references, × 10. The corpus score is the mean over images.
  Deviation: ``l`` is the number of words; coco-caption counts bigrams (``l − 1``), which gives the same
  difference except when a caption has fewer than two words.

METEOR: the METEOR 1.5 jar that ``pycocoevalcap`` ships, run through Java when a runtime is available
(:mod:`geopixel.eval.meteor_jar`, reported as ``METEOR 1.5 jar``), else the Python reimplementation with
METEOR 1.5's parameters (:mod:`geopixel.eval.meteor`: exact and stem matches, function-word weighting; no
WordNet synonyms or paraphrases). Both see the tokens :func:`tokenize` makes, joined by spaces.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from pipeline.gcg import plain_text

from .meteor import METEOR_1_5, MeteorStats, count_chunks, jar_tokens, meteor, meteor_stats, porter_stem
from .meteor_jar import jar_label, meteor_backend, meteor_jar_score

_CLITIC = re.compile(r"(\w)('s|'re|'ve|'ll|'d|'m)\b")
_NOT = re.compile(r"(\w)(n't)\b")
_TOKEN = re.compile(r"n't|'[a-z]+|[a-z0-9]+(?:[-./,:'&][a-z0-9]+)*|\S")
# coco-caption's PTBTokenizer.PUNCTUATIONS, plus the bracket characters PTB rewrites to -LRB- etc.
PUNCTUATION = frozenset(["''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";",
                         "(", ")", "[", "]", "{", "}", '"'])


def strip_markup(text: str) -> str:
    """The caption without ``<p>``, ``</p>`` and ``[SEG]``, whitespace collapsed, spaces before punctuation
    removed (``tennis court-1 , and`` → ``tennis court-1, and``); :func:`pipeline.gcg.plain_text`."""
    return plain_text(text)


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens of a caption, markup and punctuation removed (see the module docstring)."""
    text = strip_markup(text).lower()
    text = _NOT.sub(r"\1 \2", _CLITIC.sub(r"\1 \2", text))
    return [t for t in _TOKEN.findall(text) if t not in PUNCTUATION and (t.isalnum() or len(t) > 1 or t in "%$&#@+=")]


# ---------------------------------------------------------------------------------------------- CIDEr-D


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for k in range(1, n + 1):
        for i in range(len(tokens) - k + 1):
            counts[tuple(tokens[i : i + k])] += 1
    return counts


def cider_d(
    candidates: Mapping[str, Sequence[str]],
    references: Mapping[str, Sequence[Sequence[str]]],
    n: int = 4,
    sigma: float = 6.0,
) -> tuple[float, dict[str, float]]:
    """CIDEr-D of tokenised candidates against tokenised references (module docstring for the formula).

    Args:
        candidates: image id → candidate tokens.
        references: image id → list of reference token lists (the document frequencies are computed over
            all images of this mapping, so score the whole test set at once).
        n: longest n-gram.
        sigma: standard deviation of the Gaussian length penalty, in words.

    Returns:
        ``(corpus score, {image id: score})``; scores are in CIDEr units (× 10 scale, 0 … ≈10).
    """
    if set(candidates) != set(references):
        raise ValueError("candidates and references must cover the same image ids")
    if not references:
        return 0.0, {}
    ref_counts = {k: [_ngrams(r, n) for r in refs] for k, refs in references.items()}
    df: Counter[tuple[str, ...]] = Counter()
    for refs in ref_counts.values():
        df.update({g for r in refs for g in r})
    log_n = math.log(float(len(references)))

    def vectorise(counts: Counter[tuple[str, ...]]) -> tuple[list[dict[tuple[str, ...], float]], list[float]]:
        vec: list[dict[tuple[str, ...], float]] = [{} for _ in range(n)]
        for g, tf in counts.items():
            vec[len(g) - 1][g] = tf * (log_n - math.log(max(1.0, df[g])))
        return vec, [math.sqrt(sum(v * v for v in d.values())) for d in vec]

    per_image: dict[str, float] = {}
    for key, cand in candidates.items():
        vec_c, norm_c = vectorise(_ngrams(cand, n))
        total = 0.0
        for ref_tokens, rc in zip(references[key], ref_counts[key], strict=True):
            vec_r, norm_r = vectorise(rc)
            penalty = math.exp(-((len(cand) - len(ref_tokens)) ** 2) / (2 * sigma**2))
            for k in range(n):
                val = sum(min(w, vec_r[k].get(g, 0.0)) * vec_r[k].get(g, 0.0) for g, w in vec_c[k].items())
                if norm_c[k] != 0 and norm_r[k] != 0:
                    val /= norm_c[k] * norm_r[k]
                total += val * penalty / n
        per_image[key] = 10.0 * total / max(1, len(references[key]))
    return sum(per_image.values()) / len(per_image), per_image


def caption_scores(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    tokenizer: Callable[[str], list[str]] = tokenize,
    meteor_backend_name: str | None = None,
) -> tuple[dict[str, float], str]:
    """``({"CIDEr": …, "METEOR": …}, how METEOR was scored)`` of raw captions (markup allowed) by image id.

    CIDEr in CIDEr units (perfect ≈ 10 on a varied corpus), METEOR in [0, 1]. ``meteor_backend_name``:
    ``auto`` (jar when Java is available), ``jar`` or ``python``; ``None`` reads ``$GEOPIXEL_METEOR``.
    When ``auto`` picked the jar and it fails, the reimplementation is used and the failure is reported.
    """
    cands = {k: tokenizer(v) for k, v in predictions.items()}
    refs = {k: [tokenizer(r) for r in references[k]] for k in predictions}
    cider, _ = cider_d(cands, refs)
    chosen = meteor_backend(meteor_backend_name)
    label = f"reimplementation, {METEOR_1_5.name} (exact + stem; no synonyms, no paraphrases)"
    if chosen == "jar":
        try:
            met, _ = meteor_jar_score({k: " ".join(v) for k, v in cands.items()},
                                      {k: [" ".join(r) for r in v] for k, v in refs.items()})
            return {"CIDEr": cider, "METEOR": met}, jar_label()
        except (OSError, RuntimeError, ValueError) as exc:
            if (meteor_backend_name or "").lower() == "jar":
                raise
            warnings.warn(f"METEOR jar failed ({exc}); using the reimplementation", stacklevel=2)
            label += f"; the jar failed: {exc}"
    met, _ = meteor({k: jar_tokens(v) for k, v in cands.items()},
                    {k: [jar_tokens(r) for r in v] for k, v in refs.items()}, METEOR_1_5)
    return {"CIDEr": cider, "METEOR": met}, label


def caption_metrics(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    tokenizer: Callable[[str], list[str]] = tokenize,
    meteor_backend_name: str | None = None,
) -> dict[str, float]:
    """``{"CIDEr": …, "METEOR": …}`` of raw captions (see :func:`caption_scores`)."""
    return caption_scores(predictions, references, tokenizer, meteor_backend_name)[0]


__all__ = [
    "MeteorStats",
    "caption_metrics",
    "caption_scores",
    "cider_d",
    "count_chunks",
    "meteor",
    "meteor_stats",
    "porter_stem",
    "strip_markup",
    "tokenize",
]
