"""Prompt sets: the GeoPixelD prompt tiers as versioned template folders.

A prompt set is a folder holding ``prompt_set.yaml`` and one text template per tier::

    prompts/geopixeld-v1/
        prompt_set.yaml      # name, version, description, source, templates: {tier: file}
        holistic.txt         # "Describe the image in four short sentences."
        instance.txt         # "... the {category_name} at the {pos} ... marked with number {mark_number} ..."
        instance_metric.txt  # the instance prompt plus {length_m}, {width_m}, {orientation_word}
        cluster.txt          # "... description of {cluster_info} {category_name} at the {pos} ..."

Templates use ``str.format`` placeholders. ``PromptSet.render(tier, **values)`` fills them and fails with a
:class:`PromptRenderError` naming every missing placeholder; values the template does not use are ignored,
so a caller may pass one dict of all known facts to every tier. The set's ``version`` is recorded with every
LMM output (and is part of the response-cache key), so changing a template means bumping the version.

Sets are found by name in, first, each folder listed in the ``GEOPIXELD_PROMPTS`` environment variable
(``os.pathsep``-separated), then the repository's ``prompts/`` folder; or given directly as a folder path.
"""

from __future__ import annotations

import os
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: The repository's own prompt folder (holds the default set).
BUILTIN_PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
#: Environment variable: extra folders of prompt sets, searched before the built-in one.
PROMPTS_ENV_VAR = "GEOPIXELD_PROMPTS"
#: The set used when none is named: the paper's wording.
DEFAULT_PROMPT_SET = "geopixeld-v1"
#: Name of the metadata file inside a prompt-set folder.
MANIFEST_NAME = "prompt_set.yaml"


class PromptSetError(ValueError):
    """A prompt set cannot be found or its folder is malformed."""


class PromptRenderError(KeyError):
    """A template needs a value the caller did not give (or the tier does not exist)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


def _format_value(value: Any) -> str:
    """Text for one placeholder: floats get at most one decimal (23.81 -> "23.8", 24.0 -> "24").

    Integers and strings are written with ``str``.
    """
    if isinstance(value, float):
        text = f"{value:.1f}"
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def template_fields(template: str) -> list[str]:
    """Placeholder names of a ``str.format`` template, in order of first appearance, without duplicates."""
    names: list[str] = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise PromptSetError(
                f"placeholder {{{name}}} is not a plain name; use {{name}} only (values are formatted for us)"
            )
        if name not in names:
            names.append(name)
    return names


@dataclass(frozen=True)
class PromptSet:
    """One versioned prompt set: a template per tier.

    Attributes:
        name: the set's name (its folder name unless the manifest says otherwise).
        version: recorded on every LMM output and part of the response-cache key.
        templates: tier name -> template text (trailing newline removed).
        description: free text from the manifest.
        source: where the wording comes from (``paper`` for the default set).
        path: the folder it was loaded from.
    """

    name: str
    version: str
    templates: Mapping[str, str]
    description: str = ""
    source: str = ""
    path: Path | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_folder(cls, folder: str | Path) -> PromptSet:
        """Load a set from ``folder``: ``prompt_set.yaml`` plus the template files it lists.

        Without a ``templates`` mapping in the manifest, every ``*.txt`` file in the folder is a tier named
        after the file's stem.
        """
        folder = Path(folder)
        manifest_path = folder / MANIFEST_NAME
        if not manifest_path.is_file():
            raise PromptSetError(f"{folder} is not a prompt set: it has no {MANIFEST_NAME}")
        manifest = yaml.safe_load(manifest_path.read_text(encoding="utf-8")) or {}
        if not isinstance(manifest, dict):
            raise PromptSetError(f"{manifest_path}: expected a mapping at the top level")
        version = manifest.get("version")
        if not version or not isinstance(version, str):
            raise PromptSetError(
                f"{manifest_path}: a string 'version' is required (it is recorded on outputs)"
            )
        files = manifest.get("templates")
        if files is None:
            files = {p.stem: p.name for p in sorted(folder.glob("*.txt"))}
        if not isinstance(files, dict) or not files:
            raise PromptSetError(f"{manifest_path}: 'templates' must map tier names to files; none found")
        templates: dict[str, str] = {}
        for tier, filename in files.items():
            template_path = folder / str(filename)
            if not template_path.is_file():
                raise PromptSetError(
                    f"{manifest_path}: template for tier {tier!r} not found: {template_path}"
                )
            text = template_path.read_text(encoding="utf-8").rstrip("\n")
            template_fields(text)  # validate placeholders early
            templates[str(tier)] = text
        known = {"name", "version", "description", "source", "templates"}
        return cls(
            name=str(manifest.get("name") or folder.name),
            version=version,
            templates=templates,
            description=str(manifest.get("description") or "").strip(),
            source=str(manifest.get("source") or ""),
            path=folder.resolve(),
            metadata={k: v for k, v in manifest.items() if k not in known},
        )

    @property
    def tiers(self) -> list[str]:
        """The tier names this set has templates for."""
        return list(self.templates)

    def template(self, tier: str) -> str:
        """The raw template text of ``tier``."""
        try:
            return self.templates[tier]
        except KeyError:
            raise PromptRenderError(
                f"prompt set {self.version!r} has no tier {tier!r}; it has: {', '.join(self.templates)}"
            ) from None

    def fields(self, tier: str) -> list[str]:
        """Placeholder names the ``tier`` template needs."""
        return template_fields(self.template(tier))

    def render(self, tier: str, **values: Any) -> str:
        """Fill the ``tier`` template with ``values``.

        Floats are written with at most one decimal (sizes are in metres, orientations in degrees); other
        values with ``str``. Values a template does not use are ignored.

        Raises:
            PromptRenderError: the tier does not exist, or placeholders are missing (all are named).
        """
        template = self.template(tier)
        needed = template_fields(template)
        missing = [name for name in needed if values.get(name) is None]
        if missing:
            raise PromptRenderError(
                f"prompt {self.version}/{tier} needs {', '.join('{' + m + '}' for m in missing)} "
                f"(given: {', '.join(sorted(values)) or 'nothing'})"
            )
        return template.format(**{name: _format_value(values[name]) for name in needed})


def prompt_search_path() -> list[Path]:
    """Folders searched for prompt sets by name: ``$GEOPIXELD_PROMPTS`` entries first, then the built-in."""
    extra = [Path(p) for p in os.environ.get(PROMPTS_ENV_VAR, "").split(os.pathsep) if p.strip()]
    return [*extra, BUILTIN_PROMPTS_DIR]


def available_prompt_sets() -> dict[str, Path]:
    """Prompt-set name -> folder for every set on the search path (earlier folders win)."""
    found: dict[str, Path] = {}
    for root in prompt_search_path():
        if not root.is_dir():
            continue
        for manifest in sorted(root.glob(f"*/{MANIFEST_NAME}")):
            found.setdefault(manifest.parent.name, manifest.parent)
    return found


def load_prompt_set(name_or_path: str | Path | None = None) -> PromptSet:
    """Load a prompt set by name (searched as described in the module doc) or by folder path.

    Args:
        name_or_path: a set name such as ``"geopixeld-v1"``, a folder path, or None for the default set.

    Raises:
        PromptSetError: no such set; the message lists the sets that exist.
    """
    target = str(name_or_path) if name_or_path is not None else DEFAULT_PROMPT_SET
    as_path = Path(target).expanduser()
    if (as_path / MANIFEST_NAME).is_file():
        return PromptSet.from_folder(as_path)
    if os.sep not in target and "/" not in target:
        for root in prompt_search_path():
            if (root / target / MANIFEST_NAME).is_file():
                return PromptSet.from_folder(root / target)
    known = ", ".join(available_prompt_sets()) or "none"
    raise PromptSetError(
        f"prompt set {target!r} not found (searched {', '.join(str(p) for p in prompt_search_path())}); "
        f"available: {known}"
    )


__all__ = [
    "BUILTIN_PROMPTS_DIR",
    "DEFAULT_PROMPT_SET",
    "PROMPTS_ENV_VAR",
    "PromptRenderError",
    "PromptSet",
    "PromptSetError",
    "available_prompt_sets",
    "load_prompt_set",
    "prompt_search_path",
    "template_fields",
]
