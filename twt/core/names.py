"""The one set of rules for names, versions, tags and references, shared by the library and the CLI.

Every check is a *full* match of the whole string (``re.fullmatch``): ``"student\\n"`` is not ``"student"``.

- model or pipeline name: 1-63 of ``a-z 0-9 . _ -``, a letter or digit first, no ``..``
- version: 1 to 3 dot-separated numbers without leading zeros (``3``, ``1.2``, ``1.2.3``)
- tag: 1-63 of ``a-z 0-9 -``, a letter first (``latest``, ``stable``)
- reference: ``NAME@VERSION`` or ``NAME@TAG`` (``NAME@latest`` for a model)

A check returns its argument unchanged, or raises ``error`` (``InvalidNameError`` unless the caller passes
its own subclass of ``ValueError``) with one line saying what is allowed.
"""

from __future__ import annotations

import re

MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
VERSION = re.compile(r"(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8})){0,2}")
TAG = re.compile(r"[a-z][a-z0-9-]{0,62}")


class InvalidNameError(ValueError):
    """A name, version, tag or reference that the rules do not accept."""


def is_model_name(text: object) -> bool:
    return isinstance(text, str) and MODEL_NAME.fullmatch(text) is not None and ".." not in text


def is_version(text: object) -> bool:
    return isinstance(text, str) and VERSION.fullmatch(text) is not None


def is_tag(text: object) -> bool:
    return isinstance(text, str) and TAG.fullmatch(text) is not None


def check_model_name(name: object, error: type[ValueError] = InvalidNameError) -> str:
    if not is_model_name(name):
        raise error(
            f"invalid model name {name!r}: use 1-63 of a-z 0-9 . _ - (a letter or digit first, no '..')"
        )
    return name  # type: ignore[return-value]


def check_version(version: object, error: type[ValueError] = InvalidNameError) -> str:
    if not is_version(version):
        raise error(
            f"invalid version {version!r}: use 1 to 3 dot-separated numbers without leading zeros (3, 1.2.3)"
        )
    return version  # type: ignore[return-value]


def check_tag(tag: object, error: type[ValueError] = InvalidNameError) -> str:
    if not is_tag(tag):
        raise error(f"invalid tag {tag!r}: use a-z 0-9 - (a letter first, at most 63), e.g. stable")
    return tag  # type: ignore[return-value]


def split_ref(ref: object, what: str, error: type[ValueError] = InvalidNameError) -> tuple[str, str]:
    """``"name@x"`` → (name, x) with the name checked; ``x`` is left to the caller (a version or a tag)."""
    name, sep, which = ref.partition("@") if isinstance(ref, str) else ("", "", "")
    if not sep or not name or not which or "@" in which:
        raise error(f"invalid {what} reference {ref!r}: expected NAME@VERSION or NAME@TAG")
    check_model_name(name, error)
    if not (is_version(which) or is_tag(which)):
        raise error(f"invalid {what} reference {ref!r}: {which!r} is neither a version (1.2.3) nor a tag")
    return name, which
