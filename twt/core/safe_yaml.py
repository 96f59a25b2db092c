"""Bounded YAML: a hostile document is refused quickly with one line, never a RecursionError or a hang.

    data, root = load_yaml(text, "configs/x.yaml")   # plain Python data and the composed node tree

Limits (a run configuration is a few kilobytes and a few levels deep):
- ``MAX_BYTES`` of text;
- ``MAX_DEPTH`` levels of nesting, aliases followed;
- ``MAX_NODES`` nodes once every alias is expanded (an "alias bomb" of nested anchors explodes here);
- an alias that contains itself is refused.
Duplicate keys are refused too (PyYAML would keep the last one silently). Errors are ``YAMLLimitError``
(a ``ValueError``) whose message starts with ``source`` and, where known, the line.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 10_000


class YAMLLimitError(ValueError):
    """YAML that is invalid, too big, too deep, expands too far or repeats a key."""


class _Limit(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


try:  # libyaml's parser (C) for the events; composing stays in Python, where it can be bounded
    from yaml._yaml import CParser as _Parser

    _PARSER_BASES: tuple[type, ...] = (_Parser,)
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _PARSER_BASES = (yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser)


class _BoundedLoader(
    yaml.composer.Composer, yaml.constructor.SafeConstructor, yaml.resolver.Resolver, *_PARSER_BASES
):
    """Safe loading whose composer stops at ``MAX_DEPTH`` levels and ``MAX_NODES`` nodes, before Python's
    recursion limit or the clock does."""

    def __init__(self, stream: str) -> None:
        if _PARSER_BASES[0] is yaml.reader.Reader:  # pragma: no cover
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
        else:
            _PARSER_BASES[0].__init__(self, stream)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_DEPTH or self._nodes > MAX_NODES:
                mark = self.peek_event().start_mark
                what = f"nested deeper than {MAX_DEPTH} levels" if self._depth > MAX_DEPTH else None
                raise _Limit(mark.line + 1, what or f"more than {MAX_NODES} nodes")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _check_tree(root: yaml.Node) -> None:
    """Expanded size, depth, cycles and duplicate keys of the composed tree, each node visited once."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, depth)
    active: set[int] = set()

    def visit(node: yaml.Node) -> tuple[int, int]:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _Limit(_line(node), "an alias refers to a node that contains it")
        active.add(key)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for k, _ in node.value:
                if isinstance(k, yaml.ScalarNode):
                    if k.value in seen:
                        raise _Limit(_line(k), f"duplicate key {k.value!r}")
                    seen.add(k.value)
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        total, depth = 1, 0
        for child in children:
            size, child_depth = visit(child)
            total, depth = total + size, max(depth, child_depth)
            if total > MAX_NODES:
                raise _Limit(_line(node), f"expands to more than {MAX_NODES} nodes (aliases followed)")
        if depth + 1 > MAX_DEPTH:
            raise _Limit(_line(node), f"nested deeper than {MAX_DEPTH} levels (aliases followed)")
        active.discard(key)
        sizes[key] = (total, depth + 1)
        return sizes[key]

    visit(root)


def read_bounded(path: str | os.PathLike) -> str:
    """The text of a YAML file, refused unread when it is larger than ``MAX_BYTES`` (``OSError`` and
    ``UnicodeDecodeError`` are the caller's to report)."""
    with open(path, "rb") as handle:
        data = handle.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise YAMLLimitError(f"{path}: larger than {MAX_BYTES} bytes; not a configuration")
    return data.decode("utf-8")


def load_yaml(text: str, source: str = "<yaml>") -> tuple[Any, yaml.Node | None]:
    """Parse one YAML document within the limits; returns (data, composed root node)."""
    if len(text.encode("utf-8", errors="replace")) > MAX_BYTES:
        raise YAMLLimitError(f"{source}: larger than {MAX_BYTES} bytes; not a configuration")
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _check_tree(root)
        return loader.construct_document(root), root
    except _Limit as err:
        raise YAMLLimitError(f"{source}:{err.line}: {err}") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise YAMLLimitError(f"{where}: invalid YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise YAMLLimitError(
            f"{source}: invalid YAML: {str(err).splitlines()[0] if str(err) else err}"
        ) from None
    except RecursionError:
        raise YAMLLimitError(f"{source}: nested too deeply") from None
    finally:
        if hasattr(loader, "dispose"):
            loader.dispose()
