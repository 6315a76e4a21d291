"""Prompt sets: the paper's wording by default, versions, user sets by folder and by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.prompts import (
    BUILTIN_PROMPTS_DIR,
    PROMPTS_ENV_VAR,
    PromptRenderError,
    PromptSet,
    PromptSetError,
    available_prompt_sets,
    load_prompt_set,
)

# Verbatim from the GeoPixel paper's annotation-pipeline figure (see REFERENCE.md).
PAPER_HOLISTIC = "Describe the image in four short sentences."
PAPER_INSTANCE = (
    "List down all the attributes of the tennis court at the top left that is marked with number 3 in one "
    "short sentence. Do not mention the marked number in output."
)
PAPER_CLUSTER = (
    "Give a brief, single-sentence description of numerous small vehicles at the left side in the given "
    "aerial image, without extra explanations."
)


def write_set(folder: Path, version: str, templates: dict[str, str], *, listed: bool = True) -> Path:
    folder.mkdir(parents=True)
    lines = [f"name: {folder.name}", f"version: {version}", "description: test set", "source: tests"]
    if listed:
        lines.append("templates:")
        lines += [f"  {tier}: {tier}.txt" for tier in templates]
    (folder / "prompt_set.yaml").write_text("\n".join(lines) + "\n")
    for tier, text in templates.items():
        (folder / f"{tier}.txt").write_text(text + "\n")
    return folder


@pytest.fixture(autouse=True)
def _no_user_prompt_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROMPTS_ENV_VAR, raising=False)


def test_default_set_is_the_papers_wording() -> None:
    prompts = load_prompt_set()
    assert prompts.name == prompts.version == "geopixeld-v1"
    assert prompts.source == "paper" and prompts.path == (BUILTIN_PROMPTS_DIR / "geopixeld-v1").resolve()
    assert set(prompts.tiers) == {"holistic", "instance", "instance_metric", "cluster", "compose", "category"}
    assert prompts.render("holistic") == PAPER_HOLISTIC
    assert (
        prompts.render("instance", category_name="tennis court", pos="top left", mark_number=3)
        == PAPER_INSTANCE
    )
    assert (
        prompts.render("cluster", cluster_info="numerous", category_name="small vehicles", pos="left side")
        == PAPER_CLUSTER
    )


def test_metric_instance_prompt_is_the_paper_prompt_plus_priors() -> None:
    prompts = load_prompt_set("geopixeld-v1")
    text = prompts.render(
        "instance_metric",
        category_name="tennis court",
        pos="top left",
        mark_number=3,
        length_m=23.8123,
        width_m=10.96,
        orientation_word="diagonal",
    )
    assert text.startswith(PAPER_INSTANCE + " ")
    assert "about 23.8 m long and 11 m wide" in text and "diagonal" in text
    assert prompts.fields("instance_metric") == [
        "category_name", "pos", "mark_number", "length_m", "width_m", "orientation_word",
    ]  # fmt: skip


def test_missing_values_are_all_named() -> None:
    prompts = load_prompt_set()
    with pytest.raises(PromptRenderError) as caught:
        prompts.render("instance", category_name="plane", pos=None)
    message = str(caught.value)
    assert "{pos}" in message and "{mark_number}" in message and "geopixeld-v1/instance" in message
    assert "{category_name}" not in message.split("(given")[0]


def test_unknown_tier_lists_the_tiers() -> None:
    with pytest.raises(PromptRenderError, match="no tier 'caption'.*holistic"):
        load_prompt_set().render("caption")


def test_extra_values_are_ignored() -> None:
    assert load_prompt_set().render("holistic", category_name="plane", anything=1) == PAPER_HOLISTIC


def test_user_set_by_folder_path(tmp_path: Path) -> None:
    folder = write_set(
        tmp_path / "terse-v1", "terse-v1", {"instance": "Describe the {category_name} ({pos})."}
    )
    prompts = load_prompt_set(folder)
    assert prompts.version == "terse-v1" and prompts.tiers == ["instance"]
    assert prompts.render("instance", category_name="ship", pos="right") == "Describe the ship (right)."
    assert load_prompt_set(str(folder)).templates == prompts.templates


def test_user_set_by_name_from_env_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_set(tmp_path / "mine" / "terse-v2", "terse-v2", {"holistic": "One sentence, please."})
    monkeypatch.setenv(PROMPTS_ENV_VAR, str(tmp_path / "mine"))
    assert load_prompt_set("terse-v2").render("holistic") == "One sentence, please."
    assert set(available_prompt_sets()) >= {"terse-v2", "geopixeld-v1"}
    assert load_prompt_set().version == "geopixeld-v1"  # the default is still found


def test_env_folders_are_searched_before_the_builtin_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_set(tmp_path / "override" / "geopixeld-v1", "geopixeld-v1-local", {"holistic": "Local wording."})
    monkeypatch.setenv(PROMPTS_ENV_VAR, f"{tmp_path / 'nowhere'}:{tmp_path / 'override'}")
    assert load_prompt_set().version == "geopixeld-v1-local"


def test_templates_default_to_every_txt_file(tmp_path: Path) -> None:
    folder = write_set(tmp_path / "s", "s-1", {"holistic": "H.", "cluster": "C {pos}."}, listed=False)
    assert sorted(PromptSet.from_folder(folder).tiers) == ["cluster", "holistic"]


def test_version_is_required(tmp_path: Path) -> None:
    folder = tmp_path / "noversion"
    folder.mkdir()
    (folder / "prompt_set.yaml").write_text("name: noversion\n")
    (folder / "holistic.txt").write_text("H.\n")
    with pytest.raises(PromptSetError, match="version"):
        load_prompt_set(folder)


def test_missing_template_file_is_reported(tmp_path: Path) -> None:
    folder = write_set(tmp_path / "broken", "b-1", {"holistic": "H."})
    (folder / "holistic.txt").unlink()
    with pytest.raises(PromptSetError, match="holistic"):
        load_prompt_set(folder)


@pytest.mark.parametrize("template", ["Size {length_m:.0f} m.", "Name {category_name!r}.", "Empty {}."])
def test_only_plain_placeholders_are_allowed(tmp_path: Path, template: str) -> None:
    folder = write_set(tmp_path / "fancy", "f-1", {"instance": template})
    with pytest.raises(PromptSetError, match="plain name"):
        load_prompt_set(folder)


def test_literal_braces_survive(tmp_path: Path) -> None:
    folder = write_set(tmp_path / "json", "j-1", {"instance": 'Answer as {{"text": "..."}} for the {pos}.'})
    assert load_prompt_set(folder).render("instance", pos="top") == 'Answer as {"text": "..."} for the top.'


def test_unknown_set_lists_what_exists() -> None:
    with pytest.raises(PromptSetError, match="not found.*geopixeld-v1"):
        load_prompt_set("no-such-set")
