"""The new mount settings reach the options record: transfer bounds, the request bound and the
shared cache, from flags, ``-o`` options (fstab) and the environment."""

from __future__ import annotations

import pytest

from kitfs.errors import UsageError
from kitfs.fs.options import build_options, parse_option_list
from kitfs.fs.requestbound import DEFAULT_REQUEST_TIMEOUT, request_timeout


def test_o_options_set_the_transfer_and_request_bounds() -> None:
    settings = parse_option_list(
        ["min_rate=4KiB,rate_window=5,idle_timeout=9,request_timeout=7.5,shared_cache"]
    )
    options = build_options("reg.example/a/b:v1", "/mnt/x", settings)
    assert (options.registry.min_rate, options.registry.rate_window) == (4096, 5.0)
    assert options.registry.timeout == 9.0
    assert options.request_timeout == 7.5
    assert options.shared_cache is True


def test_defaults_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KITFS_REQUEST_TIMEOUT", "KITFS_MIN_RATE", "KITFS_RATE_WINDOW"):
        monkeypatch.delenv(name, raising=False)
    options = build_options("reg.example/a/b:v1", "/mnt/x", {})
    assert options.request_timeout == DEFAULT_REQUEST_TIMEOUT == 300.0
    assert (options.registry.min_rate, options.registry.rate_window) == (1024, 20.0)
    assert options.shared_cache is False
    monkeypatch.setenv("KITFS_REQUEST_TIMEOUT", "42")
    monkeypatch.setenv("KITFS_MIN_RATE", "0")
    options = build_options("reg.example/a/b:v1", "/mnt/x", {})
    assert options.request_timeout == 42.0 and options.registry.min_rate == 0


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_a_bad_request_timeout_is_a_usage_error(value: str) -> None:
    with pytest.raises(UsageError, match="request_timeout must be a positive number of seconds"):
        request_timeout(value)


def test_a_bad_proxy_option_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"^--proxy 'not a url' is not a proxy URL"):
        build_options("reg.example/a/b:v1", "/mnt/x", {"proxy": "not a url"})


def test_span_memory_from_flags_and_o_options() -> None:
    """``--span-memory`` / ``-o span_memory=``: a size, 0 for none; the default is the span
    memory's own (kitfs.fs.spanmemory keeps its constant, not imported by the options module)."""
    from kitfs.fs.spanmemory import DEFAULT_BUDGET

    assert build_options("reg.example/a/b:v1", "/mnt/x", {}).span_memory == DEFAULT_BUDGET
    settings = parse_option_list(["span_memory=64M"])
    assert build_options("reg.example/a/b:v1", "/mnt/x", settings).span_memory == 64 << 20
    assert build_options("r.example/a/b:v1", "/mnt/x", {"span_memory": "0"}).span_memory == 0
    with pytest.raises(UsageError, match="invalid size 'lots'"):
        build_options("reg.example/a/b:v1", "/mnt/x", {"span_memory": "lots"})
    with pytest.raises(UsageError, match="span_memory must be a size"):  # memory needs a bound
        build_options("reg.example/a/b:v1", "/mnt/x", {"span_memory": "unlimited"})
