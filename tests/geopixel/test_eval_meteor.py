"""METEOR: the METEOR 1.5 jar shipped in pycocoevalcap (run through Java) against the reimplementation."""

from __future__ import annotations

import json
import random
import re
import zipfile
from pathlib import Path

import pytest

from geopixel.eval.captions import caption_scores, tokenize
from geopixel.eval.meteor import ENGLISH_FUNCTION_WORDS, METEOR_1_5, jar_tokens, meteor, meteor_stats
from geopixel.eval.meteor_jar import (
    MeteorJar,
    find_meteor_jar,
    meteor_backend,
    meteor_jar_available,
    meteor_jar_score,
)
from pipeline.gcg import plain_text

DATA = Path(__file__).resolve().parents[1] / "data"
needs_jar = pytest.mark.skipif(not meteor_jar_available(), reason="needs pycocoevalcap and a Java runtime")


def test_function_words_are_the_jars() -> None:
    jar = find_meteor_jar()
    if jar is None:
        pytest.skip("pycocoevalcap is not installed")
    with zipfile.ZipFile(jar) as z:
        assert set(z.read("function/english.words").decode("utf-8").split()) == ENGLISH_FUNCTION_WORDS


def test_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert meteor_backend("python") == "python"
    monkeypatch.setenv("GEOPIXEL_METEOR", "python")
    assert meteor_backend() == "python"
    monkeypatch.delenv("GEOPIXEL_METEOR")
    assert meteor_backend() == ("jar" if meteor_jar_available() else "python")
    with pytest.raises(ValueError, match="choose from"):
        meteor_backend("bleu")
    monkeypatch.setenv("PATH", "/nonexistent")  # no Java: "jar" is an error, "auto" falls back
    from geopixel.eval import meteor_jar

    meteor_jar.java_version.cache_clear()
    try:
        assert meteor_backend("auto") == "python"
        with pytest.raises(RuntimeError, match="Java runtime"):
            meteor_backend("jar")
    finally:
        meteor_jar.java_version.cache_clear()


@needs_jar
def test_a_broken_jar_is_a_clear_error(tmp_path: Path) -> None:
    fake = tmp_path / "meteor-1.5.jar"
    fake.write_bytes(b"not a jar")
    with MeteorJar(jar=fake) as jar, pytest.raises(RuntimeError, match="stopped answering"):
        jar.stats("a plane", ["a plane"])


def _official_caption() -> str:
    return plain_text(json.loads((DATA / "geopixeld" / "P0224_0_800_0_800.json").read_text())["gcg_description"])


@needs_jar
def test_reimplementation_matches_the_jar_restricted_to_exact_and_stem() -> None:
    """Same tokens, the jar with only its exact and stem matchers: the scoring formula, parameters, function
    words, Snowball stems and the jar's -norm re-splitting are reproduced; alignments with many repeated
    words may still differ (see geopixel/README.md)."""
    pytest.importorskip("nltk")
    ref = _official_caption()
    sentences = re.split(r"(?<=[.!?])\s+", ref)
    shuffled = sentences[:]
    random.Random(1).shuffle(shuffled)
    pairs = {
        "same": (ref, ref),
        "shuffled": (" ".join(shuffled), ref),
        "stems": ("the cars are parking near two tennis courts", "a car is parked near the tennis court"),
        "hyphens": ("the tennis court-1 at the north-east corner", "tennis court-1 is in the north-east"),
        "clitics": ("it's a harbor with ships", "the harbor's ships are docked"),
        "unrelated": ("numerous small vehicles line the road", "a ship is docked in the harbor"),
    }
    hyps = {k: " ".join(tokenize(h)) for k, (h, _) in pairs.items()}
    refs = {k: [" ".join(tokenize(r))] for k, (_, r) in pairs.items()}
    with MeteorJar(modules=("exact", "stem")) as jar:
        jar_corpus, jar_per = jar.score(hyps, refs)
    ours_corpus, ours_per = meteor({k: jar_tokens(v.split()) for k, v in hyps.items()},
                                   {k: [jar_tokens(r.split()) for r in v] for k, v in refs.items()}, METEOR_1_5)
    for k in pairs:
        assert ours_per[k] == pytest.approx(jar_per[k], abs=1e-6), k
    assert ours_corpus == pytest.approx(jar_corpus, abs=1e-6)
    assert ours_per["same"] == 1.0 and 0 < ours_per["unrelated"] < ours_per["stems"] < 1


@needs_jar
def test_jar_scores_synonyms_the_reimplementation_does_not() -> None:
    hyp, ref = tokenize("many cars stand on the big lot"), tokenize("numerous vehicles stand on the large lot")
    full, _ = meteor_jar_score({"1": " ".join(hyp)}, {"1": [" ".join(ref)]})  # the shared jar
    ours = meteor_stats(jar_tokens(hyp), jar_tokens(ref)).score()
    assert full > ours > 0  # big/large (WordNet) count in the jar only


@needs_jar
def test_caption_scores_report_the_jar() -> None:
    cap = _official_caption()
    scores, label = caption_scores({"a": cap, "b": "an empty tennis court"},
                                   {"a": [cap], "b": ["four tennis courts among trees"]}, meteor_backend_name="jar")
    assert label.startswith("METEOR 1.5 jar (pycocoevalcap; ") and 0 < scores["METEOR"] < 1
    python, plabel = caption_scores({"a": cap, "b": "an empty tennis court"},
                                    {"a": [cap], "b": ["four tennis courts among trees"]}, meteor_backend_name="python")
    assert plabel.startswith("reimplementation") and python["CIDEr"] == scores["CIDEr"]
