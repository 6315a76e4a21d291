"""Measure the METEOR reimplementation against the METEOR 1.5 jar on your own captions.

``python -m geopixel.eval.meteor_compare EXPORT/coco/captions_test.json [more caption files]`` takes the
reference captions (COCO caption files, or JSON lists of strings), makes seeded hypotheses from them by
controlled edits, and prints the corpus METEOR of: the jar as coco-caption runs it (all modules), the jar
with its exact and stem modules only, the reimplementation (METEOR 1.5 parameters) and the original METEOR
2005 parameters. Needs Java and ``pycocoevalcap`` for the jar columns. The numbers in
``geopixel/README.md`` come from this script.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.gcg import plain_text

from .captions import tokenize
from .meteor import METEOR_1_5, METEOR_2005, jar_tokens, meteor
from .meteor_jar import MeteorJar

#: Word swaps WordNet knows as synonyms (the jar's synonym stage matches them; the reimplementation cannot).
SYNONYMS = {"vehicles": "cars", "vehicle": "car", "large": "big", "small": "little", "image": "picture",
            "located": "situated", "parked": "stationed", "court": "pitch", "road": "route", "ship": "boat"}


def read_captions(paths: Sequence[str | Path]) -> list[str]:
    """Plain captions from COCO caption files (``annotations[].caption``), GeoPixel per-tile files
    (``gcg_description``) or JSON lists of strings."""
    out: list[str] = []
    for p in paths:
        data = json.loads(Path(p).read_text())
        if isinstance(data, dict):  # a COCO caption file, or one GeoPixel per-tile file
            items = data.get("annotations") or ([data] if "gcg_description" in data else [])
        else:
            items = data
        for item in items:
            text = item.get("caption") or item.get("gcg_description", "") if isinstance(item, dict) else str(item)
            if text:
                out.append(plain_text(text))
    return out


def scenarios(captions: Sequence[str], seed: int = 0) -> dict[str, list[str]]:
    """Hypotheses per edit: identical, sentences shuffled, 30 % of words dropped, synonyms swapped,
    inflections changed (plural ``s`` on longer words), and another image's caption."""
    rng = random.Random(seed)

    def sentences(c: str) -> str:
        parts = re.split(r"(?<=[.!?])\s+", c)
        rng.shuffle(parts)
        return " ".join(parts)

    def each(f: Callable[[str], str]) -> list[str]:
        return [f(c) for c in captions]

    return {
        "identical": list(captions),
        "sentences shuffled": each(sentences),
        "30% of words dropped": each(lambda c: " ".join(w for w in c.split() if rng.random() > 0.3)),
        "synonyms swapped": each(lambda c: " ".join(SYNONYMS.get(w, w) for w in c.split())),
        "inflections changed": each(lambda c: " ".join(
            w + "s" if len(w) > 4 and w.isalpha() and not w.endswith("s") else w for w in c.split())),
        "another image's caption": [captions[(i + 1) % len(captions)] for i in range(len(captions))],
    }


def compare(captions: Sequence[str], seed: int = 0) -> list[tuple[str, float, float, float, float]]:
    """``(scenario, jar, jar exact+stem, reimplementation 1.5, METEOR 2005)`` per scenario."""
    refs = {str(i): [tokenize(c)] for i, c in enumerate(captions)}
    joined_refs = {k: [" ".join(r) for r in v] for k, v in refs.items()}
    rows = []
    with MeteorJar() as full, MeteorJar(modules=("exact", "stem")) as exact_stem:
        for name, hyps in scenarios(captions, seed).items():
            hyp = {str(i): tokenize(h) for i, h in enumerate(hyps)}
            joined = {k: " ".join(v) for k, v in hyp.items()}
            jar, _ = full.score(joined, joined_refs)
            jar_es, _ = exact_stem.score(joined, joined_refs)
            ours, _ = meteor({k: jar_tokens(v) for k, v in hyp.items()},
                             {k: [jar_tokens(r) for r in v] for k, v in refs.items()}, METEOR_1_5)
            old, _ = meteor(hyp, refs, METEOR_2005)
            rows.append((name, jar, jar_es, ours, old))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("captions", nargs="+", help="COCO caption files or JSON lists of captions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    captions = read_captions(args.captions)
    words = sum(len(tokenize(c)) for c in captions) / max(1, len(captions))
    print(f"{len(captions)} captions, {words:.0f} words on average")
    print("| hypothesis | jar (coco-caption) | jar exact+stem | reimplementation | METEOR 2005 params |")
    print("|---|---|---|---|---|")
    for name, *values in compare(captions, args.seed):
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")


if __name__ == "__main__":
    main()
