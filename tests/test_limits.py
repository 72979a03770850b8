"""Bounded parsing (kitfs/limits.py): sizes, depths and YAML alias budgets, each one line."""

from __future__ import annotations

import json
import resource

import pytest

from kitfs.errors import KitfileError
from kitfs.kitfile import Kitfile
from kitfs.limits import MAX_DEPTH, YamlLimitError, check_yaml, json_depth, load_json
from kitfs.oci.manifest import Manifest, ManifestError


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_json_at_the_depth_limit_is_read_and_one_level_more_is_refused() -> None:
    assert json_depth(load_json(nested(MAX_DEPTH), "x", KitfileError, 1 << 20)) == MAX_DEPTH
    with pytest.raises(KitfileError, match="^x is nested deeper than 100 levels$"):
        load_json(nested(MAX_DEPTH + 1), "x", KitfileError, 1 << 20)


@pytest.mark.parametrize("depth", [500, 100_000])
def test_deep_json_is_refused_without_recursing(depth: int) -> None:
    with pytest.raises(ManifestError, match="^manifest of r is nested deeper than 100 levels$"):
        Manifest.from_bytes(nested(depth).encode(), "manifest of r")
    config = '{"manifestVersion":"1.0.0","model":{"parameters":' + nested(depth) + "}}"
    with pytest.raises(KitfileError, match="^config is nested deeper than 100 levels$"):
        Kitfile.from_config_json(config.encode())


def test_size_limits_are_checked_before_parsing() -> None:
    with pytest.raises(ManifestError, match=r"is 4194305 bytes: larger than the 4194304 accepted"):
        Manifest.from_bytes(b" " * (4 * 1024 * 1024 + 1))
    with pytest.raises(KitfileError, match=r"larger than the 16777216 accepted"):
        Kitfile.from_config_json(b" " * (16 * 1024 * 1024 + 1))


def test_wide_json_is_not_deep() -> None:
    data = json.dumps({"datasets": [{"name": str(i)} for i in range(50_000)]})
    assert json_depth(load_json(data, "x", KitfileError, 1 << 24)) == 3


def bomb(levels: int, fanout: int = 9) -> str:
    lines = ["manifestVersion: 1.0.0", "model:", "  path: m", "  parameters:", '    a0: &a0 ["x"]']
    for level in range(1, levels + 1):
        lines.append(f"    a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * fanout)}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(KitfileError) as failure:
        Kitfile.from_yaml(bomb(11))
    assert str(failure.value) == (
        "Kitfile: refused: its aliases expand to more than 10000 nodes (a YAML alias bomb)"
    )
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # KiB


def test_a_few_aliases_are_fine() -> None:
    kitfile = Kitfile.from_yaml(bomb(3))  # 9**3 = 729 nodes
    assert len(kitfile.model["parameters"]["a3"]) == 9  # type: ignore[index]


def test_aliases_that_nest_deeper_than_the_limit_once_expanded_are_refused() -> None:
    lines = ["a0: &a0 x"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 120)]
    with pytest.raises(YamlLimitError, match="nested deeper than 100 levels"):
        check_yaml("\n".join(lines))


def test_a_hundred_thousand_brackets_are_refused_as_a_kitfile_error() -> None:
    with pytest.raises(
        KitfileError, match=r"^Kitfile: refused: it is nested deeper than 100 levels$"
    ):
        Kitfile.from_yaml("manifestVersion: 1.0.0\nmodel:\n  parameters: " + "[" * 100_000)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("model\0x", r"'model\\x00x' contains a NUL byte"),
        ("m/" + "n" * 256, "a name of 256 bytes"),
        ("/".join(["d" * 200] * 21), "longer than 4095"),
        ("model\udcff", "is not valid UTF-8"),
    ],
)
def test_impossible_paths_are_kitfile_errors(path: str, message: str) -> None:
    text = f"manifestVersion: 1.0.0\ncode:\n  - path: {json.dumps(path)}\n"
    with pytest.raises(KitfileError, match=message):
        Kitfile.from_yaml(text)
    config = json.dumps({"manifestVersion": "1.0.0", "code": [{"path": path}]})
    with pytest.raises(KitfileError, match=message):
        Kitfile.from_config_json(config.encode("utf-8", "surrogatepass"))
