"""``kitfs csi`` on the command line: its flags and environment, one-line usage errors, and the
cost it adds to other verbs (none: grpc is imported by its handler only)."""

from __future__ import annotations

import os
import subprocess
import sys

from csi_plugin import KITFS


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("CSI_ENDPOINT", "NODE_ID")}
    return subprocess.run(
        [KITFS, "csi", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def test_importing_the_cli_does_not_load_grpc() -> None:
    code = "import sys, kitfs.cli; print('grpc' in sys.modules, 'google.protobuf' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_missing_endpoint_or_node_id_is_one_line() -> None:
    done = run("--node-id", "n")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "kitfs: kitfs csi needs --endpoint (or $CSI_ENDPOINT), e.g. unix:///csi/csi.sock"
    ]
    done = run(env={"CSI_ENDPOINT": "unix:///tmp/x.sock"})
    assert done.returncode == 2
    assert "--node-id (or $NODE_ID)" in done.stderr and "Traceback" not in done.stderr


def test_a_tcp_endpoint_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    done = run(
        "--endpoint",
        "tcp://127.0.0.1:9000",
        "--node-id",
        "n",
        "--state-dir",
        str(tmp_path),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "kitfs: endpoint 'tcp://127.0.0.1:9000': CSI plugins listen on unix sockets only"
    ]
