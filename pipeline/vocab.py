"""Words for categories: readable names, plurals and the synonyms an LMM uses for them.

Used to find where a sentence names its object (to ground the phrase) and to notice when it names a
different category instead (a validation flag).
"""

from __future__ import annotations

import re
from functools import lru_cache

# Readable category name → other words an answer may use for it (lower case, singular).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "plane": ("airplane", "aeroplane", "aircraft", "airliner", "jet"),
    "ship": ("boat", "vessel", "yacht", "barge"),
    "storage tank": ("tank", "silo", "oil tank"),
    "baseball diamond": ("baseball field", "baseball ground"),
    "tennis court": ("tennis courts", "court"),
    "basketball court": ("court",),
    "ground track field": ("track field", "running track", "athletics track", "track"),
    "harbor": ("harbour", "dock", "pier", "marina", "wharf"),
    "bridge": ("overpass", "viaduct"),
    "large vehicle": ("truck", "bus", "lorry", "trailer", "vehicle"),
    "small vehicle": ("car", "vehicle", "van", "automobile"),
    "helicopter": ("chopper",),
    "roundabout": ("traffic circle", "rotary"),
    "soccer ball field": ("soccer field", "football field", "soccer pitch", "football pitch"),
    "swimming pool": ("pool",),
    "tree": ("tree crown", "canopy"),
}


def category_name(label: str) -> str:
    """Readable category: ``Small_Vehicle`` → ``small vehicle``, ``tennis-court`` → ``tennis court``."""
    return " ".join(label.replace("_", " ").replace("-", " ").split()).lower()


def plural(name: str) -> str:
    """English plural of the last word: ``small vehicle`` → ``small vehicles``, ``harbor`` → ``harbors``."""
    words = name.split()
    if not words:
        return name
    last = words[-1]
    if last.endswith(("s", "x", "ch", "sh")):
        last += "es" if not last.endswith("s") else ""
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last += "s"
    return " ".join([*words[:-1], last])


def terms(name: str) -> list[str]:
    """Every term (singular and plural) naming a category, longest first."""
    base = [name, *SYNONYMS.get(name, ())]
    out = {t for b in base for t in (b, plural(b))}
    return sorted(out, key=len, reverse=True)


@lru_cache(maxsize=512)
def _pattern(name: str) -> re.Pattern[str]:
    alts = "|".join(re.escape(t).replace(r"\ ", r"[\s\-_]+") for t in terms(name))
    return re.compile(rf"\b({alts})\b", re.IGNORECASE)


def find_mention(sentence: str, name: str) -> tuple[int, int] | None:
    """Character span of the first term naming ``name`` in ``sentence``, or ``None``."""
    m = _pattern(name).search(sentence)
    return (m.start(), m.end()) if m else None


def other_categories_named(sentence: str, name: str, known: list[str]) -> list[str]:
    """Known categories other than ``name`` that the sentence names, ignoring terms they share with it."""
    own = set(terms(name))
    found = []
    for other in known:
        if other == name:
            continue
        specific = [t for t in terms(other) if t not in own and not any(t in o for o in own)]
        if not specific:
            continue
        alts = "|".join(re.escape(t).replace(r"\ ", r"[\s\-_]+") for t in specific)
        if re.search(rf"\b({alts})\b", sentence, re.IGNORECASE):
            found.append(other)
    return found
