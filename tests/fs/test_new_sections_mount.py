"""A real mount of a ModelKit with prompts and a remote dataset (sections and unpack layouts)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from fs_mounting import Mounter
from helpers import kitfs, ok


def _pack(home: Path, tmp_path: Path, ref: str) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "prompts").mkdir(parents=True)
    (ctx / "src").mkdir()
    (ctx / "prompts" / "system.prompt.md").write_text("Be brief.\n")
    (ctx / "src" / "a.py").write_text("print(1)\n")
    (ctx / "Kitfile").write_text(
        "manifestVersion: 1.0.0\ncode:\n  - path: src\n"
        "datasets:\n  - name: big\n    path: data/big\n    remotePath: s3://bucket/big\n    remoteHash: sha256:00\n"
        "prompts:\n  - name: sys\n    path: prompts\n"
    )
    ok(kitfs(home, "pack", str(ctx), "-t", ref))


def test_mount_shows_prompts_and_names_remote_datasets(mounter: Mounter, tmp_path: Path) -> None:
    _pack(mounter.published_home, tmp_path, "agent-mount:1")
    mnt = mounter.mount("agent-mount:1", None, local=True)
    assert sorted(p.name for p in mnt.iterdir()) == [
        "Kitfile",
        "REMOTE-DATASETS.txt",
        "code",
        "prompts",
    ]
    assert (mnt / "prompts" / "prompts" / "system.prompt.md").read_bytes() == b"Be brief.\n"
    assert (mnt / "code" / "src" / "a.py").read_bytes() == b"print(1)\n"  # not the prompt layer
    assert (mnt / "REMOTE-DATASETS.txt").read_text() == (
        "dataset big: path data/big is remote, at s3://bucket/big (hash sha256:00)\n"
        "kitfs does not fetch remote datasets; the ModelKit holds no layer for them.\n"
    )
    unpack = mounter.mount(
        "agent-mount:1", mounter.mountpoint("u"), "--layout", "unpack", local=True
    )
    assert sorted(p.name for p in unpack.iterdir()) == ["Kitfile", "prompts", "src"]
    assert (unpack / "prompts" / "system.prompt.md").read_bytes() == b"Be brief.\n"


def test_mount_shows_mcp_bundles_as_unpack_writes_them(mounter: Mounter, tmp_path: Path) -> None:
    """MCP bundles are raw layers: the sections layout shows them under mcpservers/ (what
    `kitfs unpack --filter=mcpservers` writes), the unpack layout at their Kitfile path; the bytes
    are the bundle's own, served once its layer is verified."""
    ctx = tmp_path / "mcp"
    (ctx / "servers").mkdir(parents=True)
    with zipfile.ZipFile(ctx / "servers" / "fs.mcpb", "w") as bundle:
        bundle.writestr("manifest.json", b'{"name":"fs"}')
        bundle.writestr("server.js", b"console.log(1)\n")
    (ctx / "src").mkdir()
    (ctx / "src" / "a.py").write_text("print(1)\n")
    (ctx / "Kitfile").write_text(
        "manifestVersion: 1.0.0\ncode:\n  - path: src\n"
        "mcpServers:\n  - name: filesystem\n    path: servers/fs.mcpb\n"
    )
    ok(kitfs(mounter.published_home, "pack", str(ctx), "-t", "mcp-mount:1"))
    expected = (ctx / "servers" / "fs.mcpb").read_bytes()
    mnt = mounter.mount("mcp-mount:1", None, local=True)
    assert sorted(p.name for p in mnt.iterdir()) == ["Kitfile", "code", "mcpservers"]
    assert (mnt / "mcpservers" / "servers" / "fs.mcpb").read_bytes() == expected
    unpacked = tmp_path / "unpacked"
    ok(kitfs(mounter.published_home, "unpack", "mcp-mount:1", "-d", str(unpacked)))
    assert (unpacked / "servers" / "fs.mcpb").read_bytes() == expected
    layout = mounter.mount("mcp-mount:1", mounter.mountpoint("u"), "--layout", "unpack", local=True)
    assert (layout / "servers" / "fs.mcpb").read_bytes() == expected
