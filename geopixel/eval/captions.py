"""Caption metrics for GCG: CIDEr-D and METEOR on captions with the grounding markup removed.

Both are implemented here in Python (no Java, no downloads) following their original definitions; the
deviations from the reference implementations (coco-caption's ``CiderD`` / ``Cider`` and the METEOR 1.5
jar that ``pycocoevalcap`` runs) are listed below.

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

METEOR (Banerjee & Lavie 2005; Lavie & Agarwal 2007): unigram alignment in stages, exact words first,
then Porter stems (``nltk.stem.PorterStemmer``; the stage is skipped, with a warning, when nltk is not
installed) of the words still unaligned. Within a stage the number
of aligned pairs is the largest possible; among such alignments a beam search (width ``beam``, each word
trying the chunk-continuing position and its 3 nearest candidates) picks one with the fewest chunks, then
the smallest total position distance (METEOR's aligner ranks alignments the same way; as with its beam,
the fewest chunks is not guaranteed on long repetitive captions).
``P = m / |hyp|``, ``R = m / |ref|``, ``Fmean = P·R / (α·P + (1 − α)·R)``,
``Penalty = γ · (chunks / m)^β``, ``score = Fmean · (1 − Penalty)`` with α = 0.9, β = 3, γ = 0.5.
With several references the best-scoring one is used. The corpus score is computed from the summed
statistics of all images (matches, lengths, chunks), like METEOR's final "aggregate" score.
Deviations from METEOR 1.5 (coco-caption): no WordNet synonym stage (WordNet is not available offline)
and no paraphrase stage; no function-word weighting (δ) and every match weighs 1; the 2005 parameters
above instead of 1.5's tuned ones (α 0.85, β 0.2, γ 0.6, δ 0.75); Porter instead of Snowball stems.
Absolute values are therefore not comparable with coco-caption's METEOR; use it for relative comparison,
or ``pycocoevalcap`` with Java for published-number comparisons.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pipeline.gcg import plain_text

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


# ---------------------------------------------------------------------------------------------- METEOR


@lru_cache(maxsize=65536)
def porter_stem(word: str) -> str:
    """Porter stem of a lower-case word (nltk's ``PorterStemmer``, original algorithm mode)."""
    return _stemmer().stem(word)


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()


@lru_cache(maxsize=1)
def stemming_available() -> bool:
    """Whether nltk (for Porter stems) is importable; without it METEOR runs its exact stage only."""
    try:
        import nltk.stem.porter  # noqa: F401
    except ImportError:
        warnings.warn("nltk is not installed: METEOR runs without its stem stage (pip install nltk)", stacklevel=3)
        return False
    return True


@dataclass
class MeteorStats:
    """Sufficient statistics of one hypothesis/reference pair (sums of them give the corpus score)."""

    hyp_len: int = 0
    ref_len: int = 0
    matches: float = 0.0  # weighted aligned unigrams
    aligned: int = 0  # aligned pairs (fragmentation denominator)
    chunks: int = 0
    pairs: list[tuple[int, int]] = field(default_factory=list)

    def __add__(self, other: MeteorStats) -> MeteorStats:
        return MeteorStats(self.hyp_len + other.hyp_len, self.ref_len + other.ref_len,
                           self.matches + other.matches, self.aligned + other.aligned, self.chunks + other.chunks)

    def score(self, alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5) -> float:
        """``Fmean · (1 − γ (chunks/m)^β)``; 0 when nothing is aligned."""
        if self.aligned == 0 or self.hyp_len == 0 or self.ref_len == 0:
            return 0.0
        p, r = self.matches / self.hyp_len, self.matches / self.ref_len
        fmean = p * r / (alpha * p + (1 - alpha) * r)
        return fmean * (1.0 - gamma * (self.chunks / self.aligned) ** beta)


def count_chunks(pairs: Sequence[tuple[int, int]]) -> int:
    """Chunks of an alignment: maximal runs adjacent in both the hypothesis and the reference."""
    chunks, prev = 0, None
    for i, j in sorted(pairs):
        if prev is None or i != prev[0] + 1 or j != prev[1] + 1:
            chunks += 1
        prev = (i, j)
    return chunks


def _align_stage(
    hyp_keys: Sequence[str],
    ref_keys: Sequence[str],
    fixed: dict[int, int],
    beam: int,
    options: int = 3,
) -> dict[int, int]:
    """Add the pairs of one matching stage to ``fixed`` (hyp index → ref index).

    Candidate pairs join still unaligned words with equal keys. A beam search over hypothesis positions
    keeps the partial alignments with the most pairs, then the fewest chunks of the whole alignment, then
    the smallest Σ|i − j|; each word may continue the current chunk or take one of the ``options`` free
    reference words nearest its relative position. A final pass aligns any word left with a free equal word
    (nearest first), so the stage always reaches the largest possible number of pairs
    (Σ over keys of min(unaligned count in hyp, in ref)).
    """
    used0 = set(fixed.values())
    n, m = len(hyp_keys), len(ref_keys)
    free_ref: dict[str, list[int]] = defaultdict(list)
    for j, k in enumerate(ref_keys):
        if j not in used0:
            free_ref[k].append(j)
    hyp_free: Counter[str] = Counter(k for i, k in enumerate(hyp_keys) if i not in fixed)
    if not any(free_ref.get(k) for k in hyp_free):
        return dict(fixed)
    budget_keys = sorted(k for k, c in hyp_free.items() if c > len(free_ref.get(k, [])) and free_ref.get(k))
    slot = {k: b for b, k in enumerate(budget_keys)}
    # Ref candidates of each hyp position, nearest to its relative position first (state-independent).
    ranked: dict[int, list[int]] = {}
    for i, k in enumerate(hyp_keys):
        if i not in fixed and free_ref.get(k):
            centre = i * m / max(1, n)
            ranked[i] = sorted(free_ref[k], key=lambda j, c=centre: (abs(j - c), j))  # type: ignore[misc]

    # state: (matches, chunks, distance, pairs, used bitmask, ref index of hyp i-1 (-2: none), skips left)
    # pairs as a linked list (i, j, parent) so extending a state is O(1)
    State = tuple[int, int, int, Any, int, int, tuple[int, ...]]
    skips0 = tuple(hyp_free[k] - len(free_ref[k]) for k in budget_keys)
    states: list[State] = [(0, 0, 0, None, 0, -2, skips0)]
    for i, key in enumerate(hyp_keys):
        best: dict[tuple[int, int, tuple[int, ...]], State] = {}

        def keep(st: State, best: dict = best) -> None:  # noqa: B023 - bound per iteration via default
            k = (st[4], st[5], st[6])
            old = best.get(k)
            if old is None or (-st[0], st[1], st[2]) < (-old[0], old[1], old[2]):
                best[k] = st

        for matches, chunks, dist, pairs, used, prev, left in states:
            if i in fixed:
                j = fixed[i]
                keep((matches, chunks + (j != prev + 1), dist, pairs, used, j, left))
                continue
            cands = ranked.get(i, [])
            picked: list[int] = []
            nxt = prev + 1
            if nxt >= 0 and nxt < m and ref_keys[nxt] == key and nxt not in used0 and not (used >> nxt) & 1:
                picked.append(nxt)
            for j in cands:
                if len(picked) > options:
                    break
                if j != nxt and not (used >> j) & 1:
                    picked.append(j)
            b = slot.get(key)
            if not picked:
                keep((matches, chunks, dist, pairs, used, -2, left))
            elif b is not None and left[b] > 0:
                keep((matches, chunks, dist, pairs, used, -2, (*left[:b], left[b] - 1, *left[b + 1 :])))
            for j in picked:
                keep((matches + 1, chunks + (j != prev + 1), dist + abs(i - j), (i, j, pairs), used | (1 << j), j, left))
        states = sorted(best.values(), key=lambda st: (-st[0], st[1], st[2]))[:beam]  # stable: deterministic
    out = dict(fixed)
    node = states[0][3]
    while node is not None:
        out[node[0]] = node[1]
        node = node[2]
    taken = set(out.values())
    for i in range(n):  # fill: keep the stage's match count maximal whatever the beam pruned
        if i not in out:
            for j in ranked.get(i, []):
                if j not in taken:
                    out[i] = j
                    taken.add(j)
                    break
    return out


def meteor_stats(
    hyp: Sequence[str],
    ref: Sequence[str],
    stem: bool = True,
    beam: int = 16,
    stage_weights: tuple[float, float] = (1.0, 1.0),
) -> MeteorStats:
    """METEOR statistics of one tokenised hypothesis against one tokenised reference.

    Args:
        hyp, ref: lower-cased tokens.
        stem: run the Porter-stem stage after the exact stage.
        beam: beam width of the alignment search.
        stage_weights: weight of an exact and of a stem match in P and R (1, 1 in METEOR 2005).
    """
    pairs = _align_stage(hyp, ref, {}, beam)
    exact = set(pairs)
    if stem and stemming_available():
        pairs = _align_stage([porter_stem(w) for w in hyp], [porter_stem(w) for w in ref], pairs, beam)
    matches = sum(stage_weights[0] if i in exact else stage_weights[1] for i in pairs)
    ordered = sorted(pairs.items())
    return MeteorStats(len(hyp), len(ref), float(matches), len(ordered), count_chunks(ordered), ordered)


def meteor(
    candidates: Mapping[str, Sequence[str]],
    references: Mapping[str, Sequence[Sequence[str]]],
    alpha: float = 0.9,
    beta: float = 3.0,
    gamma: float = 0.5,
    stem: bool = True,
    beam: int = 16,
) -> tuple[float, dict[str, float]]:
    """Corpus METEOR (from summed statistics) and per-image scores, inputs tokenised.

    Returns:
        ``(corpus score, {image id: score})``, both in [0, 1].
    """
    if set(candidates) != set(references):
        raise ValueError("candidates and references must cover the same image ids")
    total = MeteorStats()
    per_image: dict[str, float] = {}
    for key, hyp in candidates.items():
        scored = [(s.score(alpha, beta, gamma), s) for s in (meteor_stats(hyp, r, stem, beam) for r in references[key])]
        if not scored:
            per_image[key] = 0.0
            continue
        best_score, best = max(scored, key=lambda t: t[0])
        per_image[key] = best_score
        total = total + best
    return total.score(alpha, beta, gamma), per_image


def caption_metrics(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    tokenizer: Callable[[str], list[str]] = tokenize,
) -> dict[str, float]:
    """``{"CIDEr": …, "METEOR": …}`` of raw captions (markup allowed) keyed by image id.

    CIDEr in CIDEr units (perfect ≈ 10 on a varied corpus), METEOR in [0, 1].
    """
    cands = {k: tokenizer(v) for k, v in predictions.items()}
    refs = {k: [tokenizer(r) for r in references[k]] for k in predictions}
    cider, _ = cider_d(cands, refs)
    met, _ = meteor(cands, refs)
    return {"CIDEr": cider, "METEOR": met}


__all__ = [
    "MeteorStats",
    "caption_metrics",
    "cider_d",
    "count_chunks",
    "meteor",
    "meteor_stats",
    "porter_stem",
    "strip_markup",
    "tokenize",
]
