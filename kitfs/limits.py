"""Bounded parsing: the size, depth and alias limits every manifest, config and Kitfile meets.

A manifest or config comes from whoever runs a registry, a Kitfile from whoever wrote the
directory being packed; neither may make kitfs recurse until Python gives up, nor expand YAML
aliases until memory runs out (eleven levels of nine aliases are 9**11 nodes). So JSON is refused
above a size and a nesting depth, and YAML above a size, a depth and an alias expansion budget,
each with one line that says which limit it met. The same limits hold in every verb (pull,
unpack, info, inspect, mount, prefetch, verify): they live here, and the parsers call them.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from kitfs.errors import KitfsError

MAX_DEPTH = 100  # nesting of arrays/objects (JSON) or sequences/mappings (YAML)
MAX_MANIFEST_SIZE = 4 * 1024 * 1024
MAX_CONFIG_SIZE = 16 * 1024 * 1024
MAX_KITFILE_SIZE = 16 * 1024 * 1024  # a Kitfile becomes the config: the same bound
ALIAS_BUDGET = 10_000  # YAML nodes that aliases may add to a document


def load_json(
    data: bytes | str,
    what: str,
    error: type[KitfsError],
    max_size: int,
    max_depth: int = MAX_DEPTH,
    **options: Any,
) -> Any:
    """``json.loads(data, **options)``, refused with ``error`` (one line naming ``what``) when
    the text is larger than ``max_size`` bytes, nested deeper than ``max_depth``, or not JSON."""
    if len(data) > max_size:
        raise error(f"{what} is {len(data)} bytes: larger than the {max_size} accepted")
    try:
        value = json.loads(data, **options)
    except RecursionError:
        raise error(f"{what} is nested deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"{what} is not valid JSON: {_one_line(exc)}") from None
    if _openings(data) > max_depth and json_depth(value) > max_depth:
        raise error(f"{what} is nested deeper than {max_depth} levels")
    return value


def _openings(data: bytes | str) -> int:
    """An upper bound of the nesting depth, counted in C: the number of ``[`` and ``{``."""
    if isinstance(data, str):
        return data.count("[") + data.count("{")
    return data.count(b"[") + data.count(b"{")


def json_depth(value: Any) -> int:
    """The nesting depth of parsed JSON (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


# -- YAML -------------------------------------------------------------------------------------


class YamlLimitError(ValueError):
    """A YAML document over a limit (the caller turns it into its own one-line error)."""


def check_yaml(
    text: str | bytes,
    max_size: int = MAX_KITFILE_SIZE,
    max_depth: int = MAX_DEPTH,
    alias_budget: int = ALIAS_BUDGET,
) -> None:
    """Walk the first YAML document's events (PyYAML's parser keeps its own stack: no recursion)
    and raise YamlLimitError when it is too large, too deep, or when its aliases would add more
    than ``alias_budget`` nodes once expanded. Syntax errors are left to the real parse."""
    if len(text) > max_size:
        raise YamlLimitError(f"it is {len(text)} bytes: larger than the {max_size} accepted")
    walk = _YamlWalk(max_depth, alias_budget)
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.DocumentEndEvent):
                return  # later documents are not read (kitfs.kitfile._first_document)
            walk.feed(event)
    except yaml.YAMLError:
        return
    finally:
        loader.dispose()


class _YamlWalk:
    """Counts nodes as written and as aliases would expand them, and the depth of each anchored
    node, so that an alias is charged its full expanded size and depth."""

    def __init__(self, max_depth: int, alias_budget: int) -> None:
        self.max_depth = max_depth
        self.alias_budget = alias_budget
        self.literal = 0  # nodes written in the text (an alias is one)
        self.expanded = 0  # nodes once every alias is replaced by what it names
        self.open: list[
            tuple[str | None, int, list[int]]
        ] = []  # anchor, expanded at start, [depth]
        self.anchors: dict[str, tuple[int, int]] = {}  # anchor -> (expanded size, depth)

    def feed(self, event: yaml.Event) -> None:
        if isinstance(event, yaml.CollectionStartEvent):
            self._node(1, 1)
            self.open.append((event.anchor, self.expanded - 1, [1]))
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, started, below = self.open.pop()
            if anchor:
                self.anchors[anchor] = (self.expanded - started, below[0])
            if self.open:
                parent = self.open[-1][2]
                parent[0] = max(parent[0], 1 + below[0])
        elif isinstance(event, yaml.AliasEvent):
            # An alias of a node still open (a recursive alias) counts as one: the Kitfile
            # reader refuses recursion itself.
            size, depth = self.anchors.get(event.anchor or "", (1, 1))
            self._node(size, depth)
        elif isinstance(event, yaml.ScalarEvent):
            self._node(1, 1)
            if event.anchor:
                self.anchors[event.anchor] = (1, 1)

    def _node(self, size: int, depth: int) -> None:
        """A node of ``size`` expanded nodes and ``depth`` levels at the current position."""
        self.literal += 1
        self.expanded += size
        level = len(self.open)
        if level + depth > self.max_depth:
            raise YamlLimitError(f"it is nested deeper than {self.max_depth} levels")
        if self.open:
            deepest = self.open[-1][2]
            deepest[0] = max(deepest[0], 1 + depth)
        if self.expanded - self.literal > self.alias_budget:
            raise YamlLimitError(
                f"its aliases expand to more than {self.alias_budget} nodes (a YAML alias bomb)"
            )


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]
