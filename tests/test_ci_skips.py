"""tests/ci_skips.py: in CI a skip fails the run, except those it allows; outside CI, skips skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

SAMPLE = """
import pytest

def test_needs_fuse():
    pytest.skip("needs /dev/fuse")

@pytest.mark.skipif(True, reason="kit v1.7.0 binary not found at /nowhere")
def test_needs_kit():
    pass

def test_as_root():
    pytest.skip("root can read anything")

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    assert False

def test_runs():
    pass
"""


def _pytest(directory: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "ci_skips", "-p", "no:cacheprovider", "-q",
         "-o", "addopts=", "--rootdir", str(directory), str(directory)],
        capture_output=True, text=True, env=env, cwd=directory, timeout=60, check=False,
    )  # fmt: skip


def test_in_ci_a_skip_for_a_missing_tool_or_device_fails_the_run(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    result = _pytest(tmp_path, "true")
    assert result.returncode == 1, result.stdout
    # A skip in the test fails it; a skipif (decided in setup) makes an error of its setup.
    assert "1 failed, 1 passed, 1 skipped, 1 xfailed, 1 error" in result.stdout
    assert "skipped in CI: needs /dev/fuse" in result.stdout
    assert "skipped in CI: kit v1.7.0 binary not found at /nowhere" in result.stdout


def test_outside_ci_skips_only_skip(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    result = _pytest(tmp_path, None)
    assert result.returncode == 0, result.stdout
    assert "1 passed, 3 skipped, 1 xfailed" in result.stdout


def test_a_run_that_collects_nothing_fails(tmp_path: Path) -> None:
    """pytest exits 5 when it collects no test: `make test` (no `|| true`) fails with it."""
    (tmp_path / "test_empty.py").write_text("")
    assert _pytest(tmp_path, "true").returncode == 5
    makefile = (TESTS.parent / "Makefile").read_text()
    line = next(x for x in makefile.splitlines() if "-m pytest" in x).strip()
    # Its exit code is make's: no "-" prefix (ignore errors), no "|| true", no "; exit 0".
    assert not line.startswith(("-", "@-")) and "||" not in line and ";" not in line, line
