"""In CI (``CI=true``), a skipped test fails the run: a FUSE, cosign, kit or skopeo test that skips
because its tool or device is missing would otherwise pass silently on a machine set up wrong.

tests/conftest.py imports the hook below, so it applies to the whole suite. Skips that say nothing
about the machine's setup are listed in ``ALLOWED_IN_CI``.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

ALLOWED_IN_CI = frozenset({"root can read anything"})  # test_pack: the check needs a non-root user


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_reason(report: pytest.TestReport) -> str:
    """The reason a skipped report gives (``pytest.skip`` and ``skipif`` alike)."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return
    reason = skip_reason(report)
    if reason in ALLOWED_IN_CI:
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped in CI: {reason} (CI=true: install what the test needs, e.g. `make setup`, "
        "or add the reason to tests/ci_skips.py ALLOWED_IN_CI if it is not about the machine)"
    )
