"""METEOR, reimplemented in Python: METEOR 1.5's scoring and parameters over exact and stem matches.

``geopixel eval`` scores METEOR with the METEOR 1.5 jar that ``pycocoevalcap`` ships whenever a Java runtime
is available (:mod:`geopixel.eval.meteor_jar`), exactly as coco-caption does. This module is the fallback
without Java, and the reference for the formulas.

Alignment: unigrams are aligned in stages, exact words first, then stems (Snowball English stems, as the jar;
``nltk``'s ``SnowballStemmer``; the stage is skipped, with a warning, when nltk is not installed). As in
METEOR 1.5, a word that has an exact candidate anywhere in the other sentence takes no part in the stem
stage. Within a stage the number of aligned pairs is the largest possible; among such alignments a beam
search (width ``beam``; each word tries the chunk-continuing position and 3 more candidates: those that start
the longest run of equal words, then the nearest) picks one with the fewest chunks, then the smallest total position distance (the jar ranks alignments the same
way; as with its beam, the fewest chunks is not guaranteed on long repetitive captions).

Scoring (METEOR 1.5, ``MeteorScorer.computeMetrics``), with function words ``F`` (METEOR 1.5's English
list, :data:`ENGLISH_FUNCTION_WORDS`) and module weights ``w`` (exact 1.0, stem 0.6)::

    P = Σ_stage w · (δ·content matches + (1 − δ)·function matches) / (δ·(|hyp| − F_hyp) + (1 − δ)·F_hyp)
    R = the same over the reference
    Fmean = P·R / (α·P + (1 − α)·R)
    frag = 0 when every word of both sides is aligned in one chunk, else chunks / matches
    score = max(0, Fmean · (1 − γ·frag^β))

with α 0.85, β 0.2, γ 0.6, δ 0.75 (the jar's defaults for English, task ``rank``, which coco-caption runs).
With several references the best-scoring one is used. The corpus score is computed from the summed
statistics of all images, like the jar's ``EVAL`` aggregate (where a perfectly matched image adds no chunks).

What the jar does and this module does not: WordNet synonyms (weight 0.8) and paraphrases (weight 0.6;
multi-word), both data sets shipped inside the jar; its own ``-norm`` tokenisation of the text it is given.
Measured differences are in ``geopixel/README.md``. :data:`METEOR_2005` keeps the original METEOR
(Banerjee & Lavie 2005: α 0.9, β 3, γ 0.5, Porter stems, every word weighs 1; ``nltk``'s
``meteor_score`` without WordNet gives the same numbers).
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

#: METEOR 1.5's English function words (``function/english.words`` inside ``meteor-1.5.jar``; a test checks
#: this copy against the jar when ``pycocoevalcap`` is installed).
_FUNCTION_WORDS_TEXT = (
    "the , . to of and a in that for \" is on 's it with was as said at he by be from have has are his but an "
    "this not i will \u2019 they ) -rrb- ( -lrb- who their had we which were been more or s its would about new "
    "one after you : also up when there than $ all out her people she year two - can if last first \u201c over "
    "other \u201d into some what so -- no time years could ? 't \u2014 '"
)
ENGLISH_FUNCTION_WORDS = frozenset(_FUNCTION_WORDS_TEXT.split())


@dataclass(frozen=True)
class MeteorParams:
    """One METEOR configuration.

    Attributes:
        name: shown in reports.
        alpha, beta, gamma, delta: METEOR's parameters (δ weighs content against function words).
        weights: weight of an exact and of a stem match.
        stemmer: ``"snowball"`` (METEOR 1.5) or ``"porter"`` (METEOR 2005, nltk).
        function_words: words weighted by ``1 − δ`` (empty: every word weighs the same).
        stem_skips_exact_candidates: METEOR 1.5's rule: words with an exact candidate stay out of the stem
            stage; otherwise (2005) every word still unaligned takes part.
        perfect_no_penalty: METEOR 1.5's rule: no fragmentation penalty when both sides align fully in one
            chunk.
    """

    name: str
    alpha: float
    beta: float
    gamma: float
    delta: float
    weights: tuple[float, float]
    stemmer: str
    function_words: frozenset[str]
    stem_skips_exact_candidates: bool
    perfect_no_penalty: bool


METEOR_1_5 = MeteorParams("METEOR 1.5 parameters", 0.85, 0.2, 0.6, 0.75, (1.0, 0.6), "snowball",
                          ENGLISH_FUNCTION_WORDS, True, True)
METEOR_2005 = MeteorParams("METEOR 2005 parameters", 0.9, 3.0, 0.5, 1.0, (1.0, 1.0), "porter",
                           frozenset(), False, False)
EXACT, STEM = 0, 1


@lru_cache(maxsize=4)
def _stemmer(kind: str) -> Any:
    if kind == "porter":
        from nltk.stem.porter import PorterStemmer

        return PorterStemmer()
    from nltk.stem.snowball import SnowballStemmer

    return SnowballStemmer("english")


@lru_cache(maxsize=131072)
def stem(word: str, kind: str = "snowball") -> str:
    """Stem of a lower-case word: ``snowball`` (nltk's English Snowball, as METEOR 1.5) or ``porter``."""
    return str(_stemmer(kind).stem(word))


def porter_stem(word: str) -> str:
    """Porter stem (nltk's ``PorterStemmer``), METEOR 2005's stemmer."""
    return stem(word, "porter")


@lru_cache(maxsize=1)
def stemming_available() -> bool:
    """Whether nltk (for stems) is importable; without it METEOR runs its exact stage only."""
    try:
        import nltk.stem.snowball  # noqa: F401
    except ImportError:
        warnings.warn("nltk is not installed: METEOR runs without its stem stage (pip install nltk)", stacklevel=3)
        return False
    return True


def jar_tokens(tokens: Sequence[str]) -> list[str]:
    """Tokens re-split the way the jar's ``-norm`` splits the tokens it is given (measured): a hyphen between
    two words or a word and a number is dropped (``court-1`` → ``court 1``), and a clitic loses its
    apostrophe as a token of its own (``'s`` → ``' s``)."""
    out: list[str] = []
    for t in tokens:
        if len(t) > 1 and t[0] == "'" and t[1:].isalpha():
            out += ["'", t[1:]]
        elif "-" in t.strip("-"):
            out += [p for p in t.split("-") if p]
        else:
            out.append(t)
    return out


def _zero2() -> list[int]:
    return [0, 0]


@dataclass
class MeteorStats:
    """Sufficient statistics of one hypothesis/reference pair (sums of them give the corpus score).

    ``*_content`` / ``*_function`` count aligned words per stage (exact, stem) on each side.
    """

    hyp_len: int = 0
    ref_len: int = 0
    hyp_function_words: int = 0
    ref_function_words: int = 0
    hyp_content: list[int] = field(default_factory=_zero2)
    hyp_function: list[int] = field(default_factory=_zero2)
    ref_content: list[int] = field(default_factory=_zero2)
    ref_function: list[int] = field(default_factory=_zero2)
    aligned: int = 0
    chunks: int = 0
    pairs: list[tuple[int, int]] = field(default_factory=list)

    def __add__(self, other: MeteorStats) -> MeteorStats:
        def add(a: list[int], b: list[int]) -> list[int]:
            return [x + y for x, y in zip(a, b, strict=True)]

        return MeteorStats(self.hyp_len + other.hyp_len, self.ref_len + other.ref_len,
                           self.hyp_function_words + other.hyp_function_words,
                           self.ref_function_words + other.ref_function_words,
                           add(self.hyp_content, other.hyp_content), add(self.hyp_function, other.hyp_function),
                           add(self.ref_content, other.ref_content), add(self.ref_function, other.ref_function),
                           self.aligned + other.aligned, self.chunks + other.chunks)

    @property
    def perfect(self) -> bool:
        """Every word of both sides aligned, in one chunk."""
        return self.aligned == self.hyp_len == self.ref_len and self.chunks == 1

    def combine(self, other: MeteorStats, params: MeteorParams) -> MeteorStats:
        """The sum for a corpus score; with METEOR 1.5's rule a perfect pair adds no chunks (the jar's
        ``MeteorStats.addStats``), so a corpus of identical captions scores 1."""
        total = self + other
        if params.perfect_no_penalty and other.perfect:
            total.chunks -= other.chunks
        return total

    def precision_recall(self, params: MeteorParams) -> tuple[float, float]:
        """Weighted precision and recall (module docstring)."""
        d, w = params.delta, params.weights

        def side(length: int, func: int, content: list[int], function: list[int]) -> float:
            denom = d * (length - func) + (1 - d) * func
            num = sum(w[s] * (d * content[s] + (1 - d) * function[s]) for s in (EXACT, STEM))
            return num / denom if denom > 0 else 0.0

        return (side(self.hyp_len, self.hyp_function_words, self.hyp_content, self.hyp_function),
                side(self.ref_len, self.ref_function_words, self.ref_content, self.ref_function))

    def score(self, params: MeteorParams | None = None) -> float:
        """METEOR score in [0, 1] (module docstring); 0 when nothing is aligned."""
        params = params or METEOR_1_5
        if self.aligned == 0 or self.hyp_len == 0 or self.ref_len == 0:
            return 0.0
        p, r = self.precision_recall(params)
        if p <= 0 or r <= 0:
            return 0.0
        fmean = p * r / (params.alpha * p + (1 - params.alpha) * r)
        frag = 0.0 if params.perfect_no_penalty and self.perfect else self.chunks / self.aligned
        return max(0.0, fmean * (1.0 - params.gamma * frag**params.beta))


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
    # Ref candidates of each hyp position (state-independent): those starting the longest run of equal free
    # words first (a moved sentence is found as one block), then nearest to its relative position.
    free_hyp = [i not in fixed for i in range(n)]
    free_r = [j not in used0 for j in range(m)]
    run = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            if free_hyp[i] and free_r[j] and hyp_keys[i] == ref_keys[j]:
                run[i][j] = run[i + 1][j + 1] + 1
    ranked: dict[int, list[int]] = {}
    for i, k in enumerate(hyp_keys):
        if i not in fixed and free_ref.get(k):
            centre = i * m / max(1, n)
            ranked[i] = sorted(free_ref[k], key=lambda j, c=centre, r=run[i]: (-r[j], abs(j - c), j))  # type: ignore[misc]

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
    params: MeteorParams | None = None,
    stem: bool = True,
    beam: int = 16,
) -> MeteorStats:
    """METEOR statistics of one tokenised hypothesis against one tokenised reference.

    Args:
        hyp, ref: lower-cased tokens.
        params: :data:`METEOR_1_5` (default) or :data:`METEOR_2005` (stemmer, function words, stem rule).
        stem: run the stem stage after the exact stage.
        beam: beam width of the alignment search.
    """
    params = params or METEOR_1_5
    pairs = _align_stage(hyp, ref, {}, beam)
    exact = set(pairs)
    if stem and stemming_available():
        hyp_keys = [_stem_key(w, params.stemmer) for w in hyp]
        ref_keys = [_stem_key(w, params.stemmer) for w in ref]
        if params.stem_skips_exact_candidates:  # words with an exact candidate never take a stem match
            in_ref, in_hyp = set(ref), set(hyp)
            hyp_keys = [k if w not in in_ref else f"\x00h{i}" for i, (w, k) in enumerate(zip(hyp, hyp_keys, strict=True))]
            ref_keys = [k if w not in in_hyp else f"\x00r{j}" for j, (w, k) in enumerate(zip(ref, ref_keys, strict=True))]
        pairs = _align_stage(hyp_keys, ref_keys, pairs, beam)
    ordered = sorted(pairs.items())
    fw = params.function_words
    s = MeteorStats(len(hyp), len(ref), sum(w in fw for w in hyp), sum(w in fw for w in ref),
                    aligned=len(ordered), chunks=count_chunks(ordered), pairs=ordered)
    for i, j in ordered:
        stage = EXACT if i in exact else STEM
        (s.hyp_function if hyp[i] in fw else s.hyp_content)[stage] += 1
        (s.ref_function if ref[j] in fw else s.ref_content)[stage] += 1
    return s


def _stem_key(word: str, kind: str) -> str:
    return stem(word, kind)


def meteor(
    candidates: Mapping[str, Sequence[str]],
    references: Mapping[str, Sequence[Sequence[str]]],
    params: MeteorParams | None = None,
    stem: bool = True,
    beam: int = 16,
) -> tuple[float, dict[str, float]]:
    """Corpus METEOR (from summed statistics) and per-image scores, inputs tokenised.

    Returns:
        ``(corpus score, {image id: score})``, both in [0, 1].
    """
    if set(candidates) != set(references):
        raise ValueError("candidates and references must cover the same image ids")
    params = params or METEOR_1_5
    total = MeteorStats()
    per_image: dict[str, float] = {}
    for key, hyp in candidates.items():
        scored = [(s.score(params), s) for s in (meteor_stats(hyp, r, params, stem, beam) for r in references[key])]
        if not scored:
            per_image[key] = 0.0
            continue
        best_score, best = max(scored, key=lambda t: t[0])
        per_image[key] = best_score
        total = total.combine(best, params)
    return total.score(params), per_image


__all__ = [
    "ENGLISH_FUNCTION_WORDS",
    "METEOR_1_5",
    "METEOR_2005",
    "MeteorParams",
    "MeteorStats",
    "count_chunks",
    "jar_tokens",
    "meteor",
    "meteor_stats",
    "porter_stem",
    "stem",
    "stemming_available",
]
