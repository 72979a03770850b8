"""Fixtures of the CSI tests: a plugin process per test (stopped, its volumes unmounted and their
daemons stopped in teardown, also when the test fails) and small ModelKits in registries."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from csi_plugin import Plugin


@pytest.fixture
def plugin_factory(tmp_path: Path) -> Iterator[object]:
    """``start(*flags, name=...)``: a started plugin with its own state, cache and socket."""
    if not os.path.exists("/dev/fuse"):
        pytest.skip("needs /dev/fuse")
    started: list[Plugin] = []

    def start(*flags: str, name: str = "plugin", env: dict[str, str] | None = None) -> Plugin:
        plugin = Plugin(tmp_path / name, *flags)
        started.append(plugin)
        return plugin.start(env)

    try:
        yield start
    finally:
        for plugin in started:
            plugin.cleanup()


@pytest.fixture
def plugin(plugin_factory) -> Plugin:  # type: ignore[no-untyped-def]
    return plugin_factory()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def shared_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plugin]:
    """One plugin for a module whose tests each leave no volume behind (faster than one each)."""
    if not os.path.exists("/dev/fuse"):
        pytest.skip("needs /dev/fuse")
    plugin = Plugin(tmp_path_factory.mktemp("csi-shared") / "plugin")
    try:
        yield plugin.start()
    finally:
        plugin.cleanup()
