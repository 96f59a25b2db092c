"""The configuration reference, generated from the schema (``twt.core.schema``): the README's "Settings"
section.

    python -m twt.app.settings_docs            # print it
    python -m twt.app.settings_docs --write    # replace the section in README.md

tests/test_structure.py fails when the README's section differs from what this prints, so field
descriptions and defaults are written once, in twt/core/schema.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from twt.core.load import _model_in
from twt.core.schema import RunConfig

START, END = "<!-- settings-reference:start -->", "<!-- settings-reference:end -->"
README = Path(__file__).resolve().parents[2] / "README.md"


def _default(info) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        set_fields = value.model_dump(exclude_unset=True)
        return f"`{json.dumps(set_fields)}`" if set_fields else "see below"
    return f"`{json.dumps(value)}`"


def _rows(model: type[BaseModel], prefix: str, sections: list[tuple[str, type[BaseModel]]]) -> list[str]:
    rows = []
    for name, info in model.model_fields.items():
        nested = _model_in(info.annotation)
        path = f"{prefix}{name}"
        if nested is not None and nested.__name__ == "StageOverrides":
            description = (info.description or "") + " Any field of stages.common; null = inherit."
            rows.append(f"| `{path}` | {_default(info).replace('see below', 'overrides')} | {description} |")
            continue
        if nested is not None and nested is not model:
            sections.append((path + ("[]" if "list" in str(info.annotation) else ""), nested))
            continue
        description = (info.description or "").replace("|", "\\|")
        rows.append(f"| `{path}` | {_default(info)} | {description} |")
    return rows


def reference_markdown() -> str:
    """Every setting: its dotted path, default and description, one table per section."""
    out: list[str] = []
    sections: list[tuple[str, Any]] = [("", RunConfig)]
    seen: set[str] = set()
    while sections:
        path, model = sections.pop(0)
        if path in seen:
            continue
        seen.add(path)
        title = path or "top level"
        doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
        out += [f"**{title}** — {doc}", "", "| setting | default | what |", "| --- | --- | --- |"]
        out += _rows(model, f"{path}." if path else "", sections)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def readme_section(text: str) -> str:
    """The README's current settings section (between the markers)."""
    start, end = text.index(START) + len(START), text.index(END)
    return text[start:end].strip("\n") + "\n"


def write_readme(path: Path = README) -> None:
    text = path.read_text(encoding="utf-8")
    start, end = text.index(START) + len(START), text.index(END)
    path.write_text(text[:start] + "\n" + reference_markdown() + text[end:], encoding="utf-8")


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write_readme()
    else:
        print(reference_markdown(), end="")
