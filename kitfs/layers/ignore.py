""".kitignore and layer exclusion, as kit applies them when packing.

Patterns follow Docker's ``.dockerignore`` (moby/patternmatcher): ``*`` and ``?`` stay within a path
component, ``**`` spans components, ``!`` re-includes, the last matching pattern wins, and a pattern
that matches a parent directory matches everything below it. kit always ignores its Kitfile names and
``.kitignore`` at the context root, and keeps each layer's files out of every layer that contains it
(pkg/lib/filesystem/ignore/ignore.go).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from kitfs.errors import PackError
from kitfs.kitfile import DEFAULT_NAMES

IGNORE_FILE = ".kitignore"
_ESCAPE = set(".+()|{}$")  # patternmatcher's shouldEscape; everything else keeps its regexp meaning
_SPECIAL = set("*?[]\\")


@dataclass(frozen=True)
class Pattern:
    text: str
    exclusion: bool
    regex: re.Pattern[str]


def _compile(pattern: str) -> re.Pattern[str]:
    rest = pattern[2:]
    if pattern.startswith("**") and not _SPECIAL & set(rest):
        # patternmatcher's suffixMatch: "**x" is any path ending in "x", "**/x" also "x" itself.
        if rest.startswith("/"):
            return re.compile("^(.*/)?" + re.escape(rest[1:]) + "$", re.DOTALL)
        return re.compile("^.*" + re.escape(rest) + "$", re.DOTALL)
    out = "^"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < len(pattern) and pattern[i] == "*":
                i += 1
                if i < len(pattern) and pattern[i] == "/":
                    i += 1
                out += ".*" if i >= len(pattern) else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch in _ESCAPE:
            out += "\\" + ch
        elif ch == "\\":
            if i < len(pattern):
                out += "\\" + pattern[i]  # as patternmatcher: the regexp decides what it means
                i += 1
            else:
                out += "\\\\"
        else:
            out += ch if ch in "[]-^!" else re.escape(ch)
    try:
        return re.compile(out + "$", re.DOTALL)
    except re.error as exc:
        raise PackError(
            f"invalid .kitignore file: syntax error in pattern {pattern!r}: {exc}"
        ) from None


def clean(path: str) -> str:
    """Go's filepath.Clean for relative slash paths ("" becomes ".")."""
    cleaned = posixpath.normpath(path.strip()) if path.strip() else "."
    return cleaned[2:] if cleaned.startswith("./") else cleaned


def parse_patterns(lines: list[str]) -> list[Pattern]:
    patterns = []
    for number, line in enumerate(lines):
        if number == 0:
            line = line.lstrip("\ufeff")
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
            if not line:
                raise PackError('invalid .kitignore file: illegal exclusion pattern: "!"')
        line = clean(line)
        if len(line) > 1 and line.startswith("/"):
            line = line[1:]
        patterns.append(Pattern(line, exclusion, _compile(line)))
    return patterns


class IgnoreRules:
    """Decides whether a path (relative to the context dir) stays out of the layer being packed."""

    def __init__(self, patterns: list[Pattern], layer_paths: list[str]) -> None:
        defaults = [Pattern(n, False, _compile(n)) for n in (*DEFAULT_NAMES, IGNORE_FILE)]
        self.patterns = patterns + defaults
        self.layer_paths = [clean(p) for p in layer_paths]

    @classmethod
    def from_context(cls, context: Path, layer_paths: list[str]) -> IgnoreRules:
        path = context / IGNORE_FILE
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        except (OSError, UnicodeDecodeError) as exc:
            raise PackError(f"failed to read .kitignore file: {exc}") from None
        return cls(parse_patterns(lines), layer_paths)

    @property
    def has_exclusions(self) -> bool:
        return any(p.exclusion for p in self.patterns)

    def kitignore_matches(self, path: str) -> bool:
        """patternmatcher's MatchesOrParentMatches: the last pattern matching path or a parent wins."""
        parent = posixpath.dirname(path) or "."
        parents = parent.split("/") if parent != "." else []
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            hit = bool(pattern.regex.match(path))
            if not hit:
                hit = any(
                    pattern.regex.match("/".join(parents[: i + 1])) for i in range(len(parents))
                )
            if hit:
                matched = not pattern.exclusion
        return matched

    def matches(self, path: str, layer_path: str) -> bool:
        """Whether ``path`` is excluded from the layer at ``layer_path``."""
        path, layer_path = clean(path), clean(layer_path)
        if self.kitignore_matches(path):
            return True
        for other in self.layer_paths:
            if is_within(layer_path, other):
                continue
            if is_within(path, other):
                return True
        return False


def is_within(path: str, directory: str) -> bool:
    if directory == ".":
        return True
    return path == directory or path.startswith(directory + "/")
