"""The configuration reference (docs/configuration.md) and common/config.py cannot drift.

Keys come from the dataclasses the validator builds each section from (`config.SECTIONS`),
not from a list typed here; the page's keys from its tables. A key in one and not the other
fails, and so does a documented default that is not the dataclass's.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from common import config

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "configuration.md"
SECTION = re.compile(r"^## `\[\[?(\w+)\]?\]`")
ROW = re.compile(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \|")


def documented(text: str) -> dict[str, dict[str, str]]:
    """Section -> key -> the default column, from the page's `## [section]` key tables."""
    keys: dict[str, dict[str, str]] = {}
    section = None
    for line in text.splitlines():
        heading = SECTION.match(line)
        if heading:
            section = heading.group(1)
            keys.setdefault(section, {})
        elif line.startswith("## "):
            section = None
        row = ROW.match(line)
        if row and section is not None and row.group(1) not in config.INPUT_FORMATS:
            keys[section][row.group(1)] = row.group(3).strip()
    return keys


def validated() -> dict[str, dict[str, dataclasses.Field]]:
    """Section -> key -> dataclass field, as `parse_config` accepts them."""
    return {
        section: {field.name: field for field in dataclasses.fields(cls)}
        for section, cls in config.SECTIONS.items()
    }


def toml_default(field: dataclasses.Field) -> str | None:
    """The default as the page writes it; None where the page explains it in words."""
    if field.default is dataclasses.MISSING or field.default == "":
        return "required"  # split.key defaults to "", which the validator refuses
    value = field.default
    if value is None:
        return None
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


def drift(text: str) -> list[str]:
    """Every difference between the page and the config's dataclasses."""
    pages = documented(text)
    problems = []
    for section, fields in validated().items():
        page = pages.get(section, {})
        for key in sorted(set(fields) - set(page)):
            problems.append(f"{section}.{key} is accepted but not documented")
        for key in sorted(set(page) - set(fields)):
            problems.append(f"{section}.{key} is documented but not accepted")
        for key in sorted(set(fields) & set(page)):
            wanted = toml_default(fields[key])
            if wanted is not None and page[key] != wanted:
                problems.append(f"{section}.{key}: documented default {page[key]}, not {wanted}")
    for section in sorted(set(pages) - set(config.SECTIONS)):
        problems.append(f"[{section}] is documented but is no section")
    return problems


def test_every_config_key_is_documented_and_every_documented_key_exists():
    assert drift(REFERENCE.read_text()) == []


def test_a_key_left_out_of_the_reference_is_found():
    text = REFERENCE.read_text()
    without = "\n".join(
        line for line in text.splitlines() if not line.startswith("| `length_coverage` |")
    )
    assert drift(without) == ["sequence.length_coverage is accepted but not documented"]


def test_a_key_the_config_does_not_accept_is_found():
    text = REFERENCE.read_text().replace(
        "| `combiner` |", '| `pooling` | string | `"mean"` | gone |\n| `combiner` |', 1
    )
    assert drift(text) == ["embedding.pooling is documented but not accepted"]


def test_a_wrong_default_is_found():
    text = REFERENCE.read_text().replace(
        "| `top_k` | integer | `100000` |", "| `top_k` | integer | `1000` |"
    )
    assert drift(text) == ["vocabulary.top_k: documented default `1000`, not `100000`"]


def test_readme_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert pages
    assert [p for p in pages if f"docs/{p}" not in readme] == []
