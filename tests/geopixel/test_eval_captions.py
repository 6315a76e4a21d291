"""CIDEr-D and METEOR (both parameter sets) on tiny corpora computed by hand, and against pycocoevalcap / nltk."""

from __future__ import annotations

import math

import pytest

from geopixel.eval.captions import (
    caption_metrics,
    caption_scores,
    cider_d,
    count_chunks,
    meteor,
    meteor_stats,
    strip_markup,
    tokenize,
)
from geopixel.eval.meteor import METEOR_2005, jar_tokens
from geopixel.eval.meteor_jar import meteor_jar_available


def test_tokenize_and_strip_markup() -> None:
    gcg = "The <p> tennis court-1 </p> [SEG] , and <p> plane-2 </p> [SEG] are at the top (left). It's 1.5 m wide!"
    assert strip_markup(gcg) == "The tennis court-1, and plane-2 are at the top (left). It's 1.5 m wide!"
    assert tokenize(gcg) == ["the", "tennis", "court-1", "and", "plane-2", "are", "at", "the", "top", "left",
                             "it", "'s", "1.5", "m", "wide"]
    assert tokenize("Don't  stop -- ever...") == ["do", "n't", "stop", "ever"]


def test_cider_by_hand() -> None:
    # Two images, so log N = ln 2; every reference n-gram occurs in one image only (df = 1, idf = ln 2).
    refs = {"1": [["a", "b", "c"]], "2": [["d", "e"]]}
    cands = {"1": ["a", "b", "c"], "2": ["d"]}
    corpus, per = cider_d(cands, refs)
    # image 1: identical; cosines 1 for n = 1, 2, 3; no 4-grams (both norms 0 → 0); no length penalty
    assert per["1"] == pytest.approx(10 * (1 + 1 + 1 + 0) / 4)
    # image 2: unigrams {d} vs {d, e}, equal weights → cos = 1/√2; no bigrams in the candidate;
    # length penalty exp(-(1 - 2)² / (2·6²))
    expected2 = 10 * (1 / math.sqrt(2)) * math.exp(-1 / 72) / 4
    assert per["2"] == pytest.approx(expected2)
    assert corpus == pytest.approx((7.5 + expected2) / 2)
    # clipping: repeating a matched word does not raise the score above the single-use one
    clipped, _ = cider_d({"1": ["a", "a", "b", "c"], "2": ["d", "e"]}, refs)
    assert clipped < 10.0


def test_cider_ngram_in_every_reference_has_zero_weight() -> None:
    # "x" appears in both references: idf = ln 2 − ln 2 = 0, so a candidate made only of it scores 0
    refs = {"1": [["x", "a"]], "2": [["x", "b"]]}
    _, per = cider_d({"1": ["x"], "2": ["x", "b"]}, refs)
    assert per["1"] == 0.0 and per["2"] == pytest.approx(10 * (1 + 1 + 0 + 0) / 4)


def test_cider_matches_pycocoevalcap() -> None:
    cider_scorer = pytest.importorskip("pycocoevalcap.cider.cider_scorer")
    corpus = {
        "1": ("a large white plane is parked near the terminal building", ["a white plane parked at the terminal"]),
        "2": ("two tennis courts lie at the bottom right of the image", ["two tennis courts at the bottom right"]),
        "3": ("many small vehicles are parked along the road", ["numerous small vehicles parked along a road"]),
        "4": ("a ship is docked in the harbor", ["a large ship docked at the harbor next to a pier"]),
    }
    scorer = cider_scorer.CiderScorer(n=4, sigma=6.0)
    for hyp, refs in corpus.values():
        scorer += (hyp, refs)
    ref_score, ref_scores = scorer.compute_score()
    ours, per = cider_d({k: v[0].split() for k, v in corpus.items()}, {k: [r.split() for r in v[1]] for k, v in corpus.items()})
    assert ours == pytest.approx(ref_score, rel=1e-9)
    assert [per[k] for k in corpus] == pytest.approx(list(ref_scores), rel=1e-9)


def test_meteor_2005_by_hand() -> None:
    # METEOR paper style example: 6 matches, 2 chunks ("the president" | "spoke to the audience")
    hyp = ["the", "president", "spoke", "to", "the", "audience"]
    ref = ["the", "president", "then", "spoke", "to", "the", "audience"]
    s = meteor_stats(hyp, ref, METEOR_2005)
    assert (s.aligned, s.chunks) == (6, 2)
    p, r = 1.0, 6 / 7
    fmean = p * r / (0.9 * p + 0.1 * r)  # = 10PR / (R + 9P)
    assert s.score(METEOR_2005) == pytest.approx(fmean * (1 - 0.5 * (2 / 6) ** 3))
    # word order scrambled: optimal alignment has 3 chunks ("the cat" | "sat" | "on the mat")
    s2 = meteor_stats(["the", "cat", "sat", "on", "the", "mat"], ["on", "the", "mat", "sat", "the", "cat"], METEOR_2005)
    assert (s2.aligned, s2.chunks) == (6, 3)
    assert s2.score(METEOR_2005) == pytest.approx(1 - 0.5 * 0.5**3)
    # stems: cats/cat and sitting/sits align in the stem stage, one chunk
    pytest.importorskip("nltk")
    s3 = meteor_stats(["cats", "sitting"], ["cat", "sits"], METEOR_2005)
    assert (s3.aligned, s3.chunks) == (2, 1) and s3.score(METEOR_2005) == pytest.approx(1 - 0.5 * 0.5**3)
    assert meteor_stats(["cats"], ["cat"], METEOR_2005, stem=False).score(METEOR_2005) == 0.0
    assert count_chunks([(0, 0), (1, 1), (2, 5), (3, 6), (5, 7)]) == 3


def test_meteor_1_5_by_hand() -> None:
    pytest.importorskip("nltk")
    # "the" and "are"/"is" are function words (weight 1 − δ = 0.25); cars/car and parking/parked match by
    # stem (weight 0.6); "the" exactly (weight 1); "are"/"is" stay unaligned. 3 pairs, 2 chunks.
    s = meteor_stats(["the", "cars", "are", "parking"], ["the", "car", "is", "parked"])
    assert (s.hyp_function_words, s.ref_function_words, s.aligned, s.chunks) == (2, 2, 3, 2)
    assert (s.hyp_content, s.hyp_function) == ([0, 2], [1, 0])
    d = 0.75
    p = (1.0 * (1 - d) * 1 + 0.6 * d * 2) / (d * 2 + (1 - d) * 2)  # same on both sides: P = R
    fmean = p * p / (0.85 * p + 0.15 * p)
    assert s.score() == pytest.approx(fmean * (1 - 0.6 * (2 / 3) ** 0.2))
    # a perfect match (every word, one chunk) has no fragmentation penalty in METEOR 1.5
    assert meteor_stats(["a", "plane"], ["a", "plane"]).score() == 1.0
    # a word with an exact candidate takes no stem match: both reference words have the exact candidate
    # "park", so "parks" stays unaligned (METEOR 2005 aligns it to the second "park" by stem)
    assert meteor_stats(["park", "parks"], ["park", "park"]).aligned == 1
    assert meteor_stats(["park", "parks"], ["park", "park"], METEOR_2005).aligned == 2
    assert meteor_stats(["parks"], ["parked"]).aligned == 1  # stem match when no exact candidate


def test_meteor_corpus_score_sums_statistics() -> None:
    cands = {"a": ["the", "president", "spoke", "to", "the", "audience"], "b": ["a", "plane"]}
    refs = {"a": [["the", "president", "then", "spoke", "to", "the", "audience"]], "b": [["a", "big", "plane"]]}
    corpus, per = meteor(cands, refs, METEOR_2005)
    # image b: m = 2 ("a", "plane"), 2 chunks, P = 1, R = 2/3
    fb = (2 / 3) / (0.9 + 0.1 * 2 / 3)
    assert per["b"] == pytest.approx(fb * (1 - 0.5 * 1.0**3))
    # corpus: m = 8, |hyp| = 8, |ref| = 10, chunks = 4
    p, r = 8 / 8, 8 / 10
    assert corpus == pytest.approx(p * r / (0.9 * p + 0.1 * r) * (1 - 0.5 * (4 / 8) ** 3))
    # METEOR 1.5: perfect images add no chunks to the corpus, so identical captions score 1 overall
    same = {"a": cands["a"], "b": ["a", "big", "plane"]}
    assert meteor(same, {k: [v] for k, v in same.items()})[0] == 1.0


def test_meteor_2005_agrees_with_nltk_when_alignment_is_unambiguous() -> None:
    nltk_meteor = pytest.importorskip("nltk.translate.meteor_score")

    class NoWordNet:  # WordNet data is not available offline; disable the synonym stage in nltk too
        @staticmethod
        def synsets(_word: str) -> list:
            return []

    pairs = [
        ("a small boat moored beside the long pier", "the long pier has a small boat moored beside it"),
        ("planes parked near terminals", "a plane is parked near the terminal building"),
        ("green trees surround empty courts", "empty tennis courts surrounded by green trees"),
    ]
    for hyp, ref in pairs:
        ours = meteor_stats(hyp.split(), ref.split(), METEOR_2005).score(METEOR_2005)
        theirs = nltk_meteor.single_meteor_score(ref.split(), hyp.split(), wordnet=NoWordNet())
        assert ours == pytest.approx(theirs, abs=1e-12), (hyp, ref)


def test_jar_tokens_resplit_like_the_jar() -> None:
    assert jar_tokens(["tennis", "court-1", "it", "'s", "north-east", "-", "1.5"]) == [
        "tennis", "court", "1", "it", "'", "s", "north", "east", "-", "1.5"]


@pytest.mark.parametrize("backend", ["python", "jar"])
def test_caption_metrics_identical_corpus(backend: str) -> None:
    if backend == "jar" and not meteor_jar_available():
        pytest.skip("no Java runtime / pycocoevalcap: the METEOR jar cannot run here")
    caps = {"1": "A plane is parked near the terminal.", "2": "Two ships are docked in a small harbor.",
            "3": "Numerous small vehicles line the road at the left side."}
    m, label = caption_scores(caps, {k: [v] for k, v in caps.items()}, meteor_backend_name=backend)
    # identical captions: every cosine is 1 where the n-gram order exists (all have ≥ 4 words) → CIDEr 10
    assert m["CIDEr"] == pytest.approx(10.0)
    # METEOR 1.5: every caption matches fully in one chunk → no fragmentation penalty → 1
    assert m["METEOR"] == pytest.approx(1.0)
    assert label.startswith("METEOR 1.5 jar" if backend == "jar" else "reimplementation, METEOR 1.5 parameters")
    assert caption_metrics(caps, {k: [v] for k, v in caps.items()}, meteor_backend_name="python") == pytest.approx(m)
