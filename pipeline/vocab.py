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


def find_mentions(sentence: str, name: str) -> list[tuple[int, int, str]]:
    """Every term naming ``name`` in ``sentence``: ``(start, end, text)`` in order."""
    return [(m.start(), m.end(), m.group()) for m in _pattern(name).finditer(sentence)]


def own_mentions(sentence: str, name: str, others: frozenset[str] | set[str] | tuple[str, ...] = ()) -> list[tuple[int, int, str]]:
    """:func:`find_mentions` of ``name`` that are not inside a longer mention of another category among
    ``others`` and :data:`SYNONYMS` (``vehicles`` in ``large vehicles`` is no small vehicle)."""
    found = find_mentions(sentence, name)
    if not found:
        return found
    spans = [(a, b) for o in {*others, *SYNONYMS} if o != name for a, b, _ in find_mentions(sentence, o)]
    return [(a, b, t) for a, b, t in found if not any(x <= a and b <= y and (y - x) > (b - a) for x, y in spans)]


def is_plural_term(term: str, name: str) -> bool:
    """Whether ``term`` (a mention of ``name``) is a plural form: ``planes``, ``buses``; a synonym that is a
    plural word itself (``tennis courts`` for ``tennis court``) counts as plural too."""
    t = " ".join(term.lower().replace("-", " ").replace("_", " ").split())
    base = [name, *SYNONYMS.get(name, ())]
    return any(t == plural(b) != b for b in base) and t != name


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


# --------------------------------------------------------------------------------------------------------
# Words the quality checks read (pipeline.validate): counts, colours, sizes, orientation, idioms
# --------------------------------------------------------------------------------------------------------

NUMBER_VALUES = {
    **{w: k for k, w in enumerate(_NUMBER_WORDS)},
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
}  # fmt: skip


def number_value(word: str) -> int | None:
    """``"seven"`` → 7, ``"12"`` → 12 (number words up to twenty and tens to fifty, any numeral); else None."""
    w = word.lower()
    if w.isdigit():
        return int(w)
    return NUMBER_VALUES.get(w)


#: Count phrases → the counts (inclusive) they fit. Wider than prepare's count words (``a few`` 3–5,
#: ``several`` 6–10, ``many`` 11–20) because ordinary English uses them loosely; exact numbers are read by
#: :func:`number_value`. ``None`` as the upper bound: no limit.
COUNT_PHRASES: dict[str, tuple[int, int | None]] = {
    "a single": (1, 1), "a lone": (1, 1), "a solitary": (1, 1), "an isolated": (1, 1), "only one": (1, 1),
    "a pair of": (2, 2), "a couple of": (2, 3), "both": (2, 2),
    "a few": (2, 6), "a handful of": (2, 7), "some": (2, None),
    "several": (3, 12), "a dozen": (10, 14), "a few dozen": (20, 60), "dozens of": (20, None),
    "many": (5, None), "numerous": (5, None), "lots of": (5, None), "a lot of": (5, None),
    "a large number of": (5, None), "a great number of": (5, None), "hundreds of": (100, None),
}  # fmt: skip

#: Colour words an answer may use → the measured colour names (:data:`pipeline.colour.PALETTE`) that bear
#: them out. A word is read after dropping ``dark``/``light``/``pale``/``bright`` (``dark blue`` → ``blue``).
COLOUR_WORDS: dict[str, frozenset[str]] = {
    "white": frozenset({"white", "light grey"}),
    "grey": frozenset({"dark grey", "grey", "light grey"}),
    "gray": frozenset({"dark grey", "grey", "light grey"}),
    "silver": frozenset({"grey", "light grey", "white"}),
    "black": frozenset({"black", "dark grey"}),
    "red": frozenset({"red", "pink", "brown", "orange"}),
    "maroon": frozenset({"red", "brown"}),
    "pink": frozenset({"pink", "red", "purple"}),
    "brown": frozenset({"brown", "tan", "orange", "red", "olive"}),
    "tan": frozenset({"tan", "brown", "orange", "yellow", "light grey"}),
    "beige": frozenset({"tan", "brown", "orange", "yellow", "light grey", "white"}),
    "orange": frozenset({"orange", "brown", "red", "tan", "yellow"}),
    "yellow": frozenset({"yellow", "tan", "olive", "orange"}),
    "gold": frozenset({"yellow", "tan", "olive", "orange"}),
    "olive": frozenset({"olive", "green", "dark green", "yellow", "brown"}),
    "green": frozenset({"green", "dark green", "olive", "teal"}),
    "teal": frozenset({"teal", "green", "light blue", "blue"}),
    "turquoise": frozenset({"teal", "light blue", "blue", "green"}),
    "cyan": frozenset({"teal", "light blue", "blue"}),
    "blue": frozenset({"blue", "light blue", "dark blue", "teal"}),
    "navy": frozenset({"dark blue", "blue"}),
    "purple": frozenset({"purple", "pink", "dark blue"}),
    "violet": frozenset({"purple", "pink", "dark blue"}),
}

#: Size words an answer may use about an object: ``small``-like and ``large``-like.
SMALL_WORDS = frozenset({"small", "tiny", "little", "miniature", "minuscule"})
LARGE_WORDS = frozenset({"large", "big", "huge", "massive", "giant", "enormous", "vast", "sizable", "sizeable"})

#: Orientation wording → the long-axis angles (degrees in [0, 180), counter-clockwise from the image x axis,
#: as ``instances.orientation_deg``) it fits. Each range is the word's own range widened by 7.5° on each
#: side, so an object near a boundary is never flagged whichever word it gets.
ORIENTATION_PHRASES: dict[str, tuple[tuple[float, float], ...]] = {
    r"rising\s+to\s+the\s+right|falling\s+to\s+the\s+left|from\s+(?:the\s+)?(?:bottom|lower)[\s-]+left\s+to\s+"
    r"(?:the\s+)?(?:top|upper)[\s-]+right|south[\s-]*west\s+to\s+north[\s-]*east": ((5.0, 85.0),),
    r"falling\s+to\s+the\s+right|rising\s+to\s+the\s+left|from\s+(?:the\s+)?(?:top|upper)[\s-]+left\s+to\s+"
    r"(?:the\s+)?(?:bottom|lower)[\s-]+right|north[\s-]*west\s+to\s+south[\s-]*east": ((95.0, 175.0),),
    r"horizontal(?:ly)?|east[\s-]+(?:to[\s-]+)?west|west[\s-]+(?:to[\s-]+)?east": ((0.0, 30.0), (150.0, 180.0)),
    r"vertical(?:ly)?|north[\s-]+(?:to[\s-]+)?south|south[\s-]+(?:to[\s-]+)?north": ((60.0, 120.0),),
    r"diagonal(?:ly)?|oblique(?:ly)?|at\s+an\s+angle|slanted|slanting": ((15.0, 75.0), (105.0, 165.0)),
}

#: Phrases whose ``left``/``right``/``top``/``bottom`` say nothing about where the object is in the tile:
#: intensifiers (``right next to``), the verb *to leave* (``left behind``), orientation (``rising to the
#: right``, ``from top left to bottom right``), places relative to another object (``to the left of the
#: road``, ``to its right``, ``the left side of the road``) and parts of objects (``on top of``, ``upper
#: deck``, ``its left wing``, ``the right lane``).
NON_POSITION_PATTERNS: tuple[str, ...] = (
    r"\bright\s+(?:next\s+to|beside|besides|by|alongside|at|in|on|onto|above|below|under|behind|before|after|"
    r"across|along|near|outside|inside|against|up|down|there|here|now|away|through|around|between|among|"
    r"opposite|off|over|into|within)\b",
    r"\b(?:all|just|exactly)\s+right\b|\bright[\s-]+angled?s?\b|\bright[\s-]+of[\s-]+way\b",
    r"\bleft\s+(?:behind|over|unattended|alone|empty|open|idle|parked|standing|out|untouched|vacant|"
    r"abandoned|in\s+place|as\s+is|to|by|on\s+its\s+own|there|here)\b",
    r"\b(?:rising|falling|leaning|pointing|sloping|tilted|tilting|slanting|angled|heading|facing|running|"
    r"extending|oriented|turning|curving|bending|veering|stretching|sweeping|pointed)\s+(?:up\s+|down\s+)?"
    r"(?:to(?:wards?)?|toward)\s+the\s+(?:upper\s+|lower\s+|top\s+|bottom\s+)?(?:left|right|top|bottom)\b",
    r"\bfrom\s+(?:the\s+)?(?:top|upper|bottom|lower)?[\s-]*(?:left|right)?\s+(?:to|towards?)\s+(?:the\s+)?"
    r"(?:top|upper|bottom|lower)?[\s-]*(?:left|right)?\b",
    r"\b(?:to|on)\s+the\s+(?:left|right)\s+of\s+(?!(?:the\s+)?(?:image|tile|scene|picture|frame|photo|view)\b)",
    r"\b(?:on|at)\s+(?:the\s+)?top\s+of\s+(?!(?:the\s+)?(?:image|tile|scene|picture|frame|photo|view)\b)",
    r"\btop[\s-]+(?:down|view|notch)\b|\bfrom\s+(?:the\s+)?top\b",
    r"\b(?:upper|lower)\s+(?:deck|decks|floor|floors|level|levels|part\s+of|half\s+of|end\s+of|side\s+of\s+(?:the|its)\s+"
    r"(?!image|tile|scene|picture))",
    # sides of the object or of something else, not of the tile: "its left wing", "to their right",
    # "the right lane", "the left side of the road", "the upper end of the pier"
    r"\b(?:to|on|at)?\s*(?:its|their|his|her)\s+(?:(?:upper|lower|top|bottom)[\s-]+)?(?:left|right|top|bottom|upper|lower)\b",
    r"\b(?:left|right)[\s-]+(?:hand[\s-]+)?(?:wing|wings|engine|engines|lane|lanes|bank|wheel|wheels|turn|turns)\b",
    r"\b(?:(?:top|bottom|upper|lower)[\s-]+)?(?:left|right|top|bottom|upper|lower)[\s-]+(?:hand[\s-]+)?(?:side|edge|corner|end|"
    r"half|part|portion)\s+of\s+(?:the|a|an|its|their|this|that)\s+(?!(?:image|tile|scene|picture|frame|photo|view|"
    r"area|map)\b)",
)
_NON_POSITION = re.compile("|".join(f"(?:{p})" for p in NON_POSITION_PATTERNS), re.IGNORECASE)


def strip_non_positions(text: str) -> str:
    """``text`` with every :data:`NON_POSITION_PATTERNS` phrase blanked out (what is left of
    ``left``/``right``/``top``/``bottom`` then speaks of the object's place in the tile)."""
    return _NON_POSITION.sub(" ", text)


#: Terms too generic to say that a category is present (``vehicle`` may be a small or a large vehicle,
#: ``court`` any court, ``track`` a railway): an answer using them never names an absent category.
GENERIC_TERMS = frozenset({"vehicle", "vehicles", "court", "courts", "track", "tracks", "tank", "tanks", "canopy"})


def categories_named(sentence: str, names: list[str] | tuple[str, ...] | frozenset[str],
                     exclude: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Categories among ``names`` that ``sentence`` names through a term of their own: terms shared with a
    category in ``exclude`` (those present, say) and :data:`GENERIC_TERMS` do not count."""
    found = []
    for name, pattern in _specific_patterns(frozenset(names), frozenset(exclude)):
        if pattern.search(sentence):
            found.append(name)
    return found


@lru_cache(maxsize=256)
def _specific_patterns(names: frozenset[str], exclude: frozenset[str]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    shared = {t for e in exclude for t in terms(e)}
    out = []
    for name in sorted(names - exclude):
        specific = [t for t in terms(name) if t not in GENERIC_TERMS and not any(t in s for s in shared)]
        if specific:
            alts = "|".join(re.escape(t).replace(r"\ ", r"[\s\-_]+") for t in specific)
            out.append((name, re.compile(rf"\b({alts})\b", re.IGNORECASE)))
    return tuple(out)


#: Known label sets (readable names). A dataset whose categories all belong to one of them is checked
#: against the whole set (an answer naming a helicopter in an iSAID tile without one is naming an absent
#: category); otherwise its own categories are its label set.
LABEL_SETS: dict[str, frozenset[str]] = {
    "isaid": frozenset({
        "plane", "ship", "storage tank", "baseball diamond", "tennis court", "basketball court",
        "ground track field", "harbor", "bridge", "large vehicle", "small vehicle", "helicopter", "roundabout",
        "soccer ball field", "swimming pool",
    }),
    "dota-v2": frozenset({
        "plane", "ship", "storage tank", "baseball diamond", "tennis court", "basketball court",
        "ground track field", "harbor", "bridge", "large vehicle", "small vehicle", "helicopter", "roundabout",
        "soccer ball field", "swimming pool", "container crane", "airport", "helipad",
    }),
}  # fmt: skip


def label_set(categories: set[str] | frozenset[str]) -> frozenset[str]:
    """The label set of a dataset with these readable ``categories``: them, plus every known label set
    (:data:`LABEL_SETS`) that holds all of them."""
    cats = frozenset(categories)
    out = set(cats)
    for names in LABEL_SETS.values():
        if cats and cats <= names:
            out |= names
    return frozenset(out)
