"""Hostile ModelKits that reach kitfs from a registry: crafted tars, configs and manifests.

tests/test_unpack.py checks each hostile tar against the local unpack message by message; here the
same kinds of content arrive the way an attacker would deliver them (pushed to a real registry, or
served by the fault proxy when no registry would store them), through ``unpack`` from the registry
and through the mount (tests/reliability/test_faults_mount.py covers reads). Each must be refused
with one clear message, with nothing written outside (or inside) the target.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from faultproxy import Fault, FaultProxy, Response, always, manifest_get
from helpers import (
    cli,
    fails,
    forge_file,
    forge_header,
    forge_tar,
    layer_tars,
    raw_entries,
    saved_digest,
)
from registry import RegistryServer

from kitfs.errors import KitfileError, RegistryError, UnsafeContentError
from kitfs.oci import media
from kitfs.oci.manifest import MAX_LAYERS, Descriptor, ManifestError, sha256_digest

from .helpers import do_pull, do_unpack, fresh_home, kit_config, push_raw, storage_state

MODEL_TAR = media.layer_media_type("model", "none")
MODEL_GZIP = media.layer_media_type("model", "gzip")


def gzip_bomb(zeros_mib: int = 64) -> bytes:
    """A valid tiny tar followed by ``zeros_mib`` MiB of zeros: ~64 KiB compressed."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [compressor.compress(forge_tar(forge_file("model/w.bin", b"w")))]
    parts += [compressor.compress(b"\0" * (1 << 20)) for _ in range(zeros_mib)]
    parts.append(compressor.flush())
    return b"".join(parts)


def zeros_entry_bomb(mib: int = 64) -> bytes:
    """A gzip layer whose one entry honestly holds ``mib`` MiB of zeros (kit could write this)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    size = mib << 20
    parts = [compressor.compress(forge_header("model/zeros", size=size))]
    parts += [compressor.compress(b"\0" * (1 << 20)) for _ in range(mib)]
    parts += [compressor.compress(b"\0" * 1024), compressor.flush()]
    return b"".join(parts)


# name -> (layer media type, layer bytes (given a directory outside the target), message pattern)
HOSTILE: dict[str, tuple[str, Callable[[str], bytes], str]] = {
    "parent-path": (
        MODEL_TAR,
        lambda o: forge_tar(forge_file("model/../../evil.txt", b"x")),
        r"refused tar entry 'model/\.\./\.\./evil\.txt'.*'\.\.' would leave the target directory",
    ),
    "absolute-path": (
        MODEL_TAR,
        lambda o: forge_tar(forge_file(f"{o}/abs.txt", b"x")),
        r"refused tar entry '.*/abs\.txt'.*absolute paths are not allowed",
    ),
    "symlink-outside": (
        MODEL_TAR,
        lambda o: forge_tar(forge_header("model/link", typeflag=b"2", linkname=o.encode())),
        r"refused tar entry 'model/link'.*it is a symbolic link",
    ),
    "symlink-inside": (
        MODEL_TAR,
        lambda o: forge_tar(
            forge_file("model/a", b"a"), forge_header("model/b", typeflag=b"2", linkname=b"a")
        ),
        r"refused tar entry 'model/b'.*it is a symbolic link",
    ),
    "hardlink": (
        MODEL_TAR,
        lambda o: forge_tar(forge_header("model/hard", typeflag=b"1", linkname=b"/etc/passwd")),
        r"refused tar entry 'model/hard'.*it is a hard link",
    ),
    "char-device": (
        MODEL_TAR,
        lambda o: forge_tar(forge_header("model/null", typeflag=b"3")),
        r"refused tar entry 'model/null'.*it is a character device",
    ),
    "block-device": (
        MODEL_TAR,
        lambda o: forge_tar(forge_header("model/sda", typeflag=b"4")),
        r"refused tar entry 'model/sda'.*it is a block device",
    ),
    "duplicate-entry": (
        MODEL_TAR,
        lambda o: forge_tar(forge_file("model/a", b"first"), forge_file("model/a", b"second")),
        r"refused tar entry 'model/a'.*it appears twice",
    ),
    "non-utf8-name": (
        MODEL_TAR,
        lambda o: forge_tar(forge_file(b"model/caf\xe9", b"x")),
        r"refused tar entry b'model/caf\\xe9'.*not valid UTF-8",
    ),
    "overlong-name": (
        MODEL_TAR,
        lambda o: forge_tar(
            forge_header("././@LongLink", typeflag=b"L", size=5001)
            + b"m" * 5000
            + b"\0"
            + b"\0" * ((-5001) % 512),
            forge_file("model/x", b"x"),
        ),
        r"longer than 4096 bytes",
    ),
    "overlong-component": (
        MODEL_TAR,
        lambda o: forge_tar(
            forge_header("././@LongLink", typeflag=b"L", size=307)
            + b"model/"
            + b"c" * 300
            + b"\0"
            + b"\0" * ((-307) % 512),
            forge_file("model/x", b"x"),
        ),
        r"a path component is longer than 255 bytes",
    ),
    "size-beyond-layer": (
        MODEL_TAR,
        lambda o: forge_header("model/big", size=1 << 30) + b"only a little" + b"\0" * 499,
        r"truncated while reading entry data",
    ),
    "gzip-bomb": (
        MODEL_GZIP,
        lambda o: gzip_bomb(),
        r"follow the end of its tar archive \(decompression bomb\?\)",
    ),
}


def check_refused(out: Path, outside: Path) -> None:
    assert os.listdir(outside) == []
    assert not out.exists() or list(out.rglob("*")) == []


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_layer_from_a_registry_is_refused_by_unpack(
    name: str, registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    media_type, make, pattern = HOSTILE[name]
    harmless = forge_tar(forge_header("docs", typeflag=b"5"), forge_file("docs/a.md", b"a"))
    config = kit_config(model={"name": "m", "path": "model"}, docs=[{"path": "docs"}])
    push_raw(
        registry.host,
        repo_name,
        config,
        [(media_type, make(str(outside))), (media.layer_media_type("docs", "none"), harmless)],
        tmp=tmp_path / "blobs",
    )
    out = tmp_path / "out"
    started = time.monotonic()
    with pytest.raises(UnsafeContentError, match=pattern):
        do_unpack(fresh_home(tmp_path), f"{registry.host}/{repo_name}:v1", out)
    assert time.monotonic() - started < 20
    check_refused(out, outside)


def test_hostile_layer_message_through_the_command(
    registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    """The user sees one line naming the entry and the layer, and exit status 1."""
    layer = forge_tar(forge_file("model/../../evil.txt", b"x"))
    push_raw(
        registry.host,
        repo_name,
        kit_config(model={"path": "model"}),
        [(MODEL_TAR, layer)],
        tmp=tmp_path / "blobs",
    )
    ref = f"{registry.host}/{repo_name}:v1"
    line = fails(cli(tmp_path / "home", "unpack", ref, "-d", str(tmp_path / "out"), "--plain-http"))
    assert line == (
        f"kitfs: refused tar entry 'model/../../evil.txt' in layer {sha256_digest(layer)[:19]}: "
        "'..' would leave the target directory"
    )


def test_honest_zeros_inflate_within_the_bound(
    registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    """The inflate bound is not a size quota: 64 MiB of zeros packed by a well-behaved writer
    (a 64 KiB layer) unpacks."""
    push_raw(
        registry.host,
        repo_name,
        kit_config(model={"path": "model"}),
        [(MODEL_GZIP, zeros_entry_bomb())],
        tmp=tmp_path / "blobs",
    )
    do_unpack(fresh_home(tmp_path), f"{registry.host}/{repo_name}:v1", tmp_path / "out")
    assert (tmp_path / "out" / "model" / "zeros").stat().st_size == 64 << 20


# -- configs that are not Kitfiles --------------------------------------------------------------

CONFIGS: dict[str, tuple[bytes, str]] = {
    "not-json": (b"\x89PNG\r\n", r"config of .* is not valid JSON"),
    "json-array": (b"[1, 2]", r"config of .* is not a Kitfile: expected a JSON object"),
    "image-config": (
        b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}',
        r"config of .* is not a Kitfile: it has no manifestVersion",
    ),
    "wrong-types": (
        b'{"manifestVersion":"1.0.0","model":{"path":["a"]}}',
        r"config of .* is not a Kitfile: expected a string",
    ),
    "path-escapes": (
        b'{"manifestVersion":"1.0.0","model":{"path":"../../etc"}}',
        r"the model path '\.\./\.\./etc' is outside the context directory",
    ),
    "absolute-path": (
        b'{"manifestVersion":"1.0.0","datasets":[{"name":"d","path":"/etc/shadow"}]}',
        r"the dataset path '/etc/shadow' is outside the context directory",
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("verb", ["unpack", "info"])
def test_config_that_is_not_a_kitfile_is_refused(
    name: str, verb: str, registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    config, pattern = CONFIGS[name]
    layer = forge_tar(forge_file("model/w.bin", b"w"))
    push_raw(registry.host, repo_name, config, [(MODEL_TAR, layer)], tmp=tmp_path / "blobs")
    ref = f"{registry.host}/{repo_name}:v1"
    home = tmp_path / "home"
    if verb == "unpack":
        with pytest.raises(KitfileError, match=pattern):
            do_unpack(home, ref, tmp_path / "out")
        assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    else:
        result = cli(home, "info", "--remote", ref, "--plain-http")
        assert result.returncode == 1, result
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr


def test_config_with_unknown_fields_is_read_as_kit_reads_it(
    registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    """kit decodes configs with encoding/json, which ignores unknown fields: a ModelKit from a newer
    kit still unpacks, and the unknown fields are neither written nor served. (A Kitfile with
    unknown fields is refused by pack: tests/test_pack.py and test_pack_refuses_unknown_fields.)"""
    config = kit_config(model={"path": "model", "future": {"x": 1}}, somethingNew=True)
    push_raw(
        registry.host,
        repo_name,
        config,
        [(MODEL_TAR, forge_tar(forge_file("model/w.bin", b"w")))],
        tmp=tmp_path / "blobs",
    )
    do_unpack(tmp_path / "home", f"{registry.host}/{repo_name}:v1", tmp_path / "out")
    kitfile = (tmp_path / "out" / "Kitfile").read_text()
    assert "future" not in kitfile and "somethingNew" not in kitfile


def test_pack_refuses_unknown_fields_and_escaping_paths(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    (context / "model").mkdir(parents=True)
    (context / "model" / "w.bin").write_bytes(b"w")
    home = tmp_path / "home"
    (context / "Kitfile").write_text("manifestVersion: 1.0.0\nmodel:\n  path: model\n  evil: 1\n")
    assert "evil" in fails(cli(home, "pack", str(context), "-t", "m:1"))
    (context / "Kitfile").write_text("manifestVersion: 1.0.0\nmodel:\n  path: ../outside\n")
    assert "outside the context directory" in fails(cli(home, "pack", str(context), "-t", "m:1"))
    assert not (home / "storage").exists() or storage_state(home).keys() <= {
        "oci-layout",
        "index.json",
    }


# -- manifests with absurd layer counts ---------------------------------------------------------


def many_layers_manifest(count: int) -> bytes:
    config = b'{"manifestVersion":"1.0.0","model":{"path":"model"}}'
    layer = Descriptor(MODEL_TAR, sha256_digest(b"x"), 1).to_dict()
    config_desc = Descriptor(media.KIT_CONFIG, sha256_digest(config), len(config)).to_dict()
    raw = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "config": config_desc,
        "layers": [layer] * count,
    }
    return json.dumps(raw, separators=(",", ":")).encode()


@pytest.mark.parametrize("verb", ["pull", "unpack"])
def test_manifest_with_hundreds_of_thousands_of_layers_is_refused(
    verb: str, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """No registry of ours would store it, so the proxy serves it: 300,000 layers (46 MB)."""
    body = many_layers_manifest(300_000)
    headers = {"Content-Type": media.OCI_MANIFEST, "Docker-Content-Digest": sha256_digest(body)}
    fault_proxy.add_rule(always(manifest_get, Fault(respond=Response(200, headers, body))))
    home = fresh_home(tmp_path)
    before = storage_state(home)
    started = time.monotonic()
    with pytest.raises(RegistryError, match="is larger than 4194304 bytes"):
        if verb == "pull":
            do_pull(home, f"{fault_proxy.host}/hostile/layers:v1")
        else:
            do_unpack(home, f"{fault_proxy.host}/hostile/layers:v1", tmp_path / "out")
    assert time.monotonic() - started < 5
    assert storage_state(home) == before
    assert fault_proxy.matching("GET", "/blobs/") == []


def test_manifest_over_the_layer_limit_is_refused(
    registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    """Small enough for the size bound (3 MB) and stored by the real registry, but 20,000 layers."""
    config = b'{"manifestVersion":"1.0.0","model":{"path":"model"}}'
    body = many_layers_manifest(2 * MAX_LAYERS)
    layer_bytes = b"x"
    blobs = tmp_path / "blobs"
    blobs.mkdir()

    async def push(client: object) -> None:
        from kitfs.oci.client import RegistryClient

        assert isinstance(client, RegistryClient)
        for data in (config, layer_bytes):
            path = blobs / sha256_digest(data)[7:]
            path.write_bytes(data)
            media_type = media.KIT_CONFIG if data is config else MODEL_TAR
            await client.upload_blob(
                repo_name, Descriptor(media_type, sha256_digest(data), len(data)), path
            )
        await client.put_manifest(repo_name, "v1", body, media.OCI_MANIFEST)

    from .helpers import run_client

    run_client(registry.host, push)
    home = fresh_home(tmp_path)
    before = storage_state(home)
    ref = f"{registry.host}/{repo_name}:v1"
    for run in (
        lambda: do_pull(home, ref),
        lambda: do_unpack(home, ref, tmp_path / "out"),
    ):
        with pytest.raises(ManifestError, match=f"has 20000 layers; at most {MAX_LAYERS}"):
            run()
    assert storage_state(home) == before
    line = fails(cli(home, "info", "--remote", ref, "--plain-http"))
    assert "has 20000 layers" in line


def test_local_manifest_with_many_layers_is_refused(tmp_path: Path) -> None:
    """The same bound holds for what is already in local storage (e.g. copied in by another tool)."""
    from kitfs.storage.local import LocalStore

    home = fresh_home(tmp_path)
    store = LocalStore(home / "storage")
    body = many_layers_manifest(300_000)
    store.put_blob(body)
    store.repo("localhost/many").add(
        Descriptor(media.OCI_MANIFEST, sha256_digest(body), len(body)), ["v1"]
    )
    for args in (("info", "many:v1"), ("unpack", "many:v1", "-d", str(tmp_path / "out"))):
        line = fails(cli(home, *args))
        # the same bound as from a registry (kitfs.limits): 46 MB is over the 4 MiB a manifest may be
        assert "bytes: larger than the 4194304 accepted" in line


def test_pack_stores_only_files_and_directories_from_a_hostile_context(tmp_path: Path) -> None:
    """Links, FIFOs and device-like entries in a context never become tar entries: a symlink to
    /etc/passwd is skipped (with a warning), a hard link is packed as the file's own bytes, a FIFO
    is skipped (reading it would block pack forever)."""
    context = tmp_path / "ctx"
    (context / "model").mkdir(parents=True)
    (context / "Kitfile").write_text("manifestVersion: 1.0.0\nmodel:\n  path: model\n")
    (context / "model" / "w.bin").write_bytes(b"weights")
    os.symlink("/etc/passwd", context / "model" / "passwd")
    os.symlink("..", context / "model" / "up")
    os.link(context / "model" / "w.bin", context / "model" / "hard.bin")
    os.mkfifo(context / "model" / "fifo")
    home = tmp_path / "home"
    result = cli(home, "pack", str(context), "-t", "m:1")
    assert result.returncode == 0, result.stderr
    digest = saved_digest(result)
    entries = [e for _, tar in layer_tars(home, digest) for e in raw_entries(tar)[0]]
    assert {e.typeflag for e in entries} <= {b"0", b"5"}
    assert sorted(e.name for e in entries) == ["model", "model/hard.bin", "model/w.bin"]
