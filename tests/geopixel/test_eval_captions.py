"""CIDEr-D and METEOR on tiny corpora computed by hand, and against pycocoevalcap / nltk where installed."""

from __future__ import annotations

import math

import pytest

from geopixel.eval.captions import (
    caption_metrics,
    cider_d,
    count_chunks,
    meteor,
    meteor_stats,
    strip_markup,
    tokenize,
)


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


def test_meteor_by_hand() -> None:
    # METEOR paper style example: 6 matches, 2 chunks ("the president" | "spoke to the audience")
    hyp = ["the", "president", "spoke", "to", "the", "audience"]
    ref = ["the", "president", "then", "spoke", "to", "the", "audience"]
    s = meteor_stats(hyp, ref)
    assert (s.aligned, s.chunks) == (6, 2)
    p, r = 1.0, 6 / 7
    fmean = p * r / (0.9 * p + 0.1 * r)  # = 10PR / (R + 9P)
    assert s.score() == pytest.approx(fmean * (1 - 0.5 * (2 / 6) ** 3))
    # word order scrambled: optimal alignment has 3 chunks ("the cat" | "sat" | "on the mat")
    s2 = meteor_stats(["the", "cat", "sat", "on", "the", "mat"], ["on", "the", "mat", "sat", "the", "cat"])
    assert (s2.aligned, s2.chunks) == (6, 3)
    assert s2.score() == pytest.approx(1 - 0.5 * 0.5**3)
    # stems: cats/cat and sitting/sits align in the stem stage, one chunk
    pytest.importorskip("nltk")
    s3 = meteor_stats(["cats", "sitting"], ["cat", "sits"])
    assert (s3.aligned, s3.chunks) == (2, 1) and s3.score() == pytest.approx(1 - 0.5 * 0.5**3)
    assert meteor_stats(["cats"], ["cat"], stem=False).score() == 0.0
    assert count_chunks([(0, 0), (1, 1), (2, 5), (3, 6), (5, 7)]) == 3


def test_meteor_corpus_score_sums_statistics() -> None:
    cands = {"a": ["the", "president", "spoke", "to", "the", "audience"], "b": ["a", "plane"]}
    refs = {"a": [["the", "president", "then", "spoke", "to", "the", "audience"]], "b": [["a", "big", "plane"]]}
    corpus, per = meteor(cands, refs)
    # image b: m = 2 ("a", "plane"), 2 chunks, P = 1, R = 2/3
    fb = (2 / 3) / (0.9 + 0.1 * 2 / 3)
    assert per["b"] == pytest.approx(fb * (1 - 0.5 * 1.0**3))
    # corpus: m = 8, |hyp| = 8, |ref| = 10, chunks = 4
    p, r = 8 / 8, 8 / 10
    assert corpus == pytest.approx(p * r / (0.9 * p + 0.1 * r) * (1 - 0.5 * (4 / 8) ** 3))


def test_meteor_agrees_with_nltk_when_alignment_is_unambiguous() -> None:
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
        ours = meteor_stats(hyp.split(), ref.split()).score()
        theirs = nltk_meteor.single_meteor_score(ref.split(), hyp.split(), wordnet=NoWordNet())
        assert ours == pytest.approx(theirs, abs=1e-12), (hyp, ref)


def test_caption_metrics_identical_corpus() -> None:
    caps = {"1": "A plane is parked near the terminal.", "2": "Two ships are docked in a small harbor.",
            "3": "Numerous small vehicles line the road at the left side."}
    m = caption_metrics(caps, {k: [v] for k, v in caps.items()})
    # identical captions: every cosine is 1 where the n-gram order exists (all have ≥ 4 words) → CIDEr 10
    assert m["CIDEr"] == pytest.approx(10.0)
    # one chunk per caption: m = 7 + 8 + 10 = 25 matches, 3 chunks
    assert m["METEOR"] == pytest.approx(1 - 0.5 * (3 / 25) ** 3)
