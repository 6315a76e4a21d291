"""The project's English, in one place: category names, number, position phrases, mentions."""

from __future__ import annotations

import pytest

from pipeline import vocab


@pytest.mark.parametrize(
    ("label", "name"),
    [("Small_Vehicle", "small vehicle"), ("tennis-court", "tennis court"), ("  Ground_Track  Field ", "ground track field")],
)
def test_category_names_are_normalised_one_way(label: str, name: str) -> None:
    assert vocab.category_name(label) == name


@pytest.mark.parametrize(
    ("singular", "plural"),
    [("small vehicle", "small vehicles"), ("bus", "buses"), ("harbor", "harbors"), ("ferry", "ferries"),
     ("box", "boxes"), ("bay", "bays"), ("tennis court", "tennis courts"), ("glass", "glasses")],
)
def test_plural_and_singular_are_inverse(singular: str, plural: str) -> None:
    assert vocab.plural(singular) == plural
    assert vocab.singular(plural) == singular
    assert vocab.plural(singular, 1) == singular
    assert vocab.plural(plural) == plural  # already plural: kept


def test_numbers_articles_and_lists() -> None:
    assert vocab.counted(3, "plane") == "three planes" and vocab.counted(1, "bus") == "one bus"
    assert vocab.number_word(12) == "12"
    assert vocab.article("orange tank") == "an" and vocab.article("plane") == "a"
    assert vocab.join_words(["a", "b", "c"]) == "a, b and c" and vocab.join_words(["a"]) == "a"


@pytest.mark.parametrize(
    ("position", "phrase"),
    [("top left", "in the top left"), ("center", "in the center"), ("centre", "in the center"),
     ("left side", "on the left side"), ("top", "at the top"), ("across the image", "across the image"), ("", "")],
)
def test_position_phrases_use_one_spelling(position: str, phrase: str) -> None:
    assert vocab.place(position) == phrase


def test_mentions_find_synonyms_and_plurals() -> None:
    assert vocab.find_mention("Two buses wait by the road.", "large vehicle") == (4, 9)
    assert vocab.find_mention("A row of tennis-courts.", "tennis court") is not None
    assert vocab.find_mention("An empty field.", "plane") is None
    assert vocab.other_categories_named("A ship next to a plane.", "ship", ["ship", "plane", "harbor"]) == ["plane"]
