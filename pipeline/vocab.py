"""Words for categories and the project's English, in one place: readable names, singular and plural,
number words, position phrases, and the synonyms an LMM uses for each category.

Used to find where a sentence names its object (to ground the phrase), to notice when it names a different
category instead (a validation flag), and by every writer of sentences (the offline describer, measured
group sentences, the compose step). Spelling is American, as in GeoPixelD ("center", "harbor").
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


def plural(name: str, n: int = 2) -> str:
    """English plural of the last word when ``n != 1``: ``small vehicle`` → ``small vehicles``, ``bus`` →
    ``buses``, ``harbor`` → ``harbors``, ``ferry`` → ``ferries``; a word already ending in a plural ``s``
    (``tennis courts``) is kept."""
    words = name.split()
    if n == 1 or not words:
        return name
    last = words[-1]
    if last.endswith(("ss", "us", "is", "x", "z", "ch", "sh")):
        last += "es"
    elif last.endswith("s"):
        pass
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last += "s"
    return " ".join([*words[:-1], last])


def singular(name: str) -> str:
    """Best-effort singular of the last word: ``small vehicles`` → ``small vehicle``, ``buses`` → ``bus``."""
    words = name.split()
    if not words:
        return name
    last = words[-1]
    if last.endswith("ies") and len(last) > 4:
        last = last[:-3] + "y"
    elif re.search(r"(ches|shes|xes|zes|sses|uses)$", last):
        last = last[:-2]
    elif last.endswith("s") and not last.endswith(("ss", "us", "is")):
        last = last[:-1]
    return " ".join([*words[:-1], last])


_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def number_word(n: int) -> str:
    """``7`` → ``"seven"``: words from zero to nine, digits from 10."""
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


def counted(n: int, noun: str) -> str:
    """``counted(3, "plane") == "three planes"``."""
    return f"{number_word(n)} {plural(noun, n)}"


def article(phrase: str) -> str:
    """``"a"`` or ``"an"`` for the phrase that follows."""
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def join_words(items: list[str] | tuple[str, ...]) -> str:
    """``["a", "b", "c"]`` → ``"a, b and c"``."""
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def place(position: str | None) -> str:
    """Prepositional phrase for a position word: ``top left`` → ``in the top left``, ``left side`` → ``on the
    left side``, ``center`` → ``in the center``, ``across the image`` stays."""
    p = category_name(position) if position else ""
    if not p:
        return ""
    if p in {"center", "centre", "middle", "central"}:
        return "in the center"
    if p.startswith(("across", "throughout", "all over")):
        return p
    if p in {"left", "right"} or p.endswith(("side", "edge")):
        return f"on the {p}"
    if p in {"top", "bottom"}:
        return f"at the {p}"
    return f"in the {p}"


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
