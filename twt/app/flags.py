"""Command-line flags that set the run configuration's settings, derived from the schema (as TRL's and
transformers' ``HfArgumentParser`` derive theirs from dataclasses).

    add_setting_flags(parser, "dcrs", ["quality_threshold", "max_per_question"])   # --quality-threshold ...
    args = parser.parse_args(argv)
    apply_setting_flags(config, args)   # config.dcrs with the flags given, validated by the schema

A flag's type comes from the field's annotation (``int``, ``float``, ``str``; ``Literal`` gives choices;
``bool`` gives ``--x``/``--no-x``; ``list[...]`` takes several values), its help from the field's description
and default (``twt.core.schema.setting_help``); ``null`` sets a setting that may be null to null. A flag
not given is None: the configuration keeps its value.
The flags given go through the schema's validation, so bounds and the refusal of settings that have no
effect hold as in a YAML file, and an error names the flag. The configuration's own values that a flag's
choice leaves without effect are dropped (``twt compress --method cts`` over a ``teacher`` section).
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from twt.core.schema import RunConfig, setting_help

Section = TypeVar("Section", bound=BaseModel)

SETTING_FLAGS = "setting_flags"  # the Namespace attribute: {dest: flag}; dest is "<section>.<field>"


def section_model(key: str) -> type[BaseModel]:
    """The schema section that ``RunConfig.<key>`` holds, e.g. ``DCRSConfig`` for ``dcrs``."""
    return RunConfig.model_fields[key].annotation


def add_setting_flags(
    parser: argparse.ArgumentParser,
    key: str,
    fields: Iterable[str],
    spellings: Mapping[str, str] | None = None,
    description: str | None = None,
) -> None:
    """Add a flag to ``parser`` for each of ``fields`` of the configuration's section ``key``, in a group of
    their own: ``--field-name``, or the spelling ``spellings`` gives a field (``{"reference_model":
    "--reference"}``)."""
    model = section_model(key)
    group = parser.add_argument_group(
        f"{key} settings",
        description
        or f"Each flag replaces the configuration's {key}.<field>; one not given keeps the configuration's "
        "value. The defaults shown are the schema's; the word null gives null where a setting may be null.",
    )
    known: dict[str, str] = dict(parser.get_default(SETTING_FLAGS) or {})
    for field in fields:
        flag = (spellings or {}).get(field) or "--" + field.replace("_", "-")
        dest = f"{key}.{field}"
        help_text = setting_help(model, field).replace("%", "%%")
        group.add_argument(
            flag, dest=dest, default=None, help=help_text, **_argument_kind(model, field, flag)
        )
        known[dest] = flag
    parser.set_defaults(**{SETTING_FLAGS: known})


def _argument_kind(model: type[BaseModel], field: str, flag: str) -> dict[str, Any]:
    """argparse's ``type``/``choices``/``nargs``/``action`` for a field's annotation (``X | None`` as X)."""
    annotation = model.model_fields[field].annotation
    nullable = get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)
    if nullable:
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    metavar = flag.removeprefix("--").replace("-", "_").upper()
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if get_origin(annotation) is Literal:
        choices = get_args(annotation)
        return {"type": type(choices[0]), "choices": choices}
    if get_origin(annotation) is list and get_args(annotation)[0] in (int, float, str):
        return {"type": get_args(annotation)[0], "nargs": "+", "metavar": metavar}
    if annotation in (int, float, str):
        return {"type": _or_null(annotation) if nullable else annotation, "metavar": metavar}
    raise TypeError(f"{model.__name__}.{field}: no command-line flag for a {annotation!r} setting")


class _Null:
    """What ``null`` on the command line gives a setting that may be null (a flag not given is None)."""


NULL = _Null()


def _or_null(kind: type) -> Callable[[str], Any]:
    """argparse's ``type`` for a setting that may be null: the word ``null``, or a ``kind``."""

    def convert(text: str) -> Any:
        return NULL if text == "null" else kind(text)

    convert.__name__ = kind.__name__  # argparse's message: "invalid int value: 'x'"
    return convert


def given_settings(args: argparse.Namespace, key: str) -> dict[str, Any]:
    """The settings of section ``key`` that flags gave in ``args``: {field: value}."""
    prefix = f"{key}."
    return {
        dest.removeprefix(prefix): None if getattr(args, dest) is NULL else getattr(args, dest)
        for dest in getattr(args, SETTING_FLAGS, {})
        if dest.startswith(prefix) and getattr(args, dest) is not None
    }


def section_with_flags(section: Section, args: argparse.Namespace, key: str) -> Section:
    """``section`` (the configuration's ``key`` section) with the settings the flags gave, validated; the
    configuration's values that the flags leave without effect are dropped, a flag's are refused."""
    given = given_settings(args, key)
    if not given:
        return section
    data = section.model_dump(exclude_unset=True) | given
    applies: dict[str, tuple[str, tuple[str, ...]]] = getattr(section, "applies", {})
    for field, (selector, values) in applies.items():
        chosen = data.get(selector, getattr(section, selector))
        if field not in given and chosen not in values:
            data.pop(field, None)
    with _naming_flags(args, (key,)):
        return type(section).model_validate(data)


def apply_setting_flags(config: RunConfig, args: argparse.Namespace) -> RunConfig:
    """``config`` (changed in place) with each section that flags in ``args`` set replaced by
    ``section_with_flags``; the checks across sections run too (``--teacher`` must name a teacher)."""
    keys = dict.fromkeys(dest.split(".")[0] for dest in getattr(args, SETTING_FLAGS, {}))
    for key in (key for key in keys if given_settings(args, key)):
        section = section_with_flags(getattr(config, key), args, key)
        with _naming_flags(args, ()):
            setattr(config, key, section)
    return config


@contextmanager
def _naming_flags(args: argparse.Namespace, loc: tuple[str, ...]) -> Iterator[None]:
    """Turn the schema's ``ValidationError`` into a one-line ``ValueError`` naming the flag as written (or the
    setting, when no flag gave it); ``loc`` is where the validated model sits in ``RunConfig``."""
    try:
        yield
    except ValidationError as error:
        flags: dict[str, str] = getattr(args, SETTING_FLAGS, {})
        problems = []
        for item in error.errors():
            where = (*loc, *item["loc"], *(item["ctx"]["field"] if item["type"] == "twt_config" else ()))
            dest = ".".join(map(str, where[:2]))
            value = getattr(args, dest, None) if dest in flags else None
            named = _as_written(flags[dest], value) if value is not None else ".".join(map(str, where))
            problems.append(f"{named or 'configuration'}: {item['msg'].removeprefix('Value error, ')}")
        raise ValueError("; ".join(problems)) from None


def _as_written(flag: str, value: Any) -> str:
    """A flag and its value as the command line gave them: ``--ratio 2``, ``--no-use-gold``."""
    if isinstance(value, bool):
        return flag if value else "--no-" + flag.removeprefix("--")
    if isinstance(value, list):
        return " ".join([flag, *map(str, value)])
    return f"{flag} {'null' if value is NULL else value}"
