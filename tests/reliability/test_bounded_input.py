"""Hostile inputs get one line and a non-zero exit in every verb, with memory bounded.

A Kitfile with a YAML alias bomb, 100,000 nested ``[`` or a NUL byte in a path (``pack``); a
manifest or config nested far deeper than any real one, or with a NUL path, served by a hand-written
registry (tests/hostileregistry.py: real registries refuse to store such manifests) to ``pull``,
``unpack``, ``info``, ``inspect``, ``prefetch``, ``verify`` and ``mount``; a ``--proxy`` that is
not a URL. Each verb runs in a fresh process that reports its own peak RSS (VmHWM), which must
stay far below what expanding or recursing would take (the alias bomb grew to 8.4 GB before
kitfs.limits). Nothing reaches the "internal error" handler, and nothing is stored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import forge_file, forge_tar
from hostileregistry import HostileRegistry

from kitfs.oci import media

from .helpers import Mounts, fresh_home, is_mounted

PEAK_RSS_MIB = 250  # a kitfs process that loaded trio, httpx and pyfuse3 is ~60-90 MiB here
MODEL = media.layer_media_type("model", "none")

# Runs kitfs.cli.main for each argv given as JSON, in this fresh process, and prints a JSON list of
# [exit code, stderr] followed by the process's peak RSS in KiB: VmHWM, the high-water mark of this
# process's own memory (ru_maxrss would include the parent's RSS at the exec that started it).
RUNNER = """
import contextlib, io, json, sys
from kitfs.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
    results.append([code, err.getvalue()])
with open("/proc/self/status") as status:
    hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps([results, hwm]))
"""


def run_verbs(argvs: list[list[str]]) -> tuple[list[tuple[int, str]], int]:
    """Run the CLI once per argv in one fresh process: ([(code, stderr)], peak RSS in MiB)."""
    env = {k: v for k, v in os.environ.items() if k != "KITOPS_HOME"}
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(argvs)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    results, peak_kib = json.loads(done.stdout.strip().splitlines()[-1])
    return [(int(code), str(err)) for code, err in results], int(peak_kib) // 1024


def one_line(code: int, stderr: str) -> str:
    assert code != 0, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("WARNING ")]
    assert len(lines) == 1, stderr
    return lines[0]


# -- Kitfiles (pack) ---------------------------------------------------------------------------


def alias_bomb(levels: int = 11, fanout: int = 9) -> str:
    lines = ["manifestVersion: 1.0.0", "model:", "  name: bomb", "  path: model", "  parameters:"]
    lines.append('    a0: &a0 ["lol"]')
    for level in range(1, levels + 1):
        refs = ", ".join([f"*a{level - 1}"] * fanout)
        lines.append(f"    a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\n"


KITFILES = {
    "alias-bomb": (alias_bomb(), "aliases expand to more than 10000 nodes"),
    "brackets": (
        "manifestVersion: 1.0.0\nmodel:\n  parameters: " + "[" * 100_000,
        "deeper than 100",
    ),
    "nul-path": (
        'manifestVersion: 1.0.0\nmodel:\n  name: m\n  path: "model\\0evil"\n',
        "invalid path for model: 'model\\x00evil' contains a NUL byte",
    ),
}


def test_hostile_kitfiles_are_refused_by_pack_with_memory_bounded(tmp_path: Path) -> None:
    home = fresh_home(tmp_path)
    argvs = []
    for name, (text, _) in KITFILES.items():
        context = tmp_path / name
        (context / "model").mkdir(parents=True)
        (context / "model" / "w.bin").write_bytes(b"w")
        (context / "Kitfile").write_text(text)
        argvs.append(["--config", str(home), "pack", str(context), "-t", f"hostile/{name}:v1"])
    results, peak = run_verbs(argvs)
    for (name, (_, expected)), (code, stderr) in zip(KITFILES.items(), results, strict=True):
        line = one_line(code, stderr)
        assert line.startswith("kitfs: ") and "Kitfile" in line, (name, line)
        assert expected in line, (name, line)
    assert peak < PEAK_RSS_MIB, f"peak RSS {peak} MiB"
    stored = [p.read_text() for p in (home / "storage").rglob("index.json")]
    assert not any("hostile" in text for text in stored), "a refused ModelKit was stored"


# -- manifests and configs from a registry ---------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def hostile_config(parameters: str = "1", path: str = "model") -> bytes:
    return (
        '{"manifestVersion":"1.0.0","package":{"name":"h"},"model":{"name":"m","path":'
        + json.dumps(path)
        + ',"parameters":'
        + parameters
        + "}}"
    ).encode()


def deep_manifest(registry: HostileRegistry, repository: str, depth: int) -> None:
    config = registry.add_blob(hostile_config())
    layer = registry.add_blob(forge_tar(forge_file("model/w.bin", b"w")))
    body = (
        '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
        f'"config":{{"mediaType":"{media.KIT_CONFIG}","digest":"{config["digest"]}",'
        f'"size":{config["size"]}}},"layers":[{{"mediaType":"{MODEL}",'
        f'"digest":"{layer["digest"]}","size":{layer["size"]}}}],'
        f'"annotations":{{"x":"y"}},"nested":{nested(depth)}}}'
    ).encode()
    registry.add_manifest(repository, "v1", body)


BIG_CONFIG = 16 * 1024 * 1024 + 1


def big_config() -> bytes:
    """A config one byte over the limit: 100,000s of datasets, as the issue's 20 MB one."""
    head = b'{"manifestVersion":"1.0.0","datasets":['
    item = b'{"name":"d","path":"d"},'
    body = head + item * ((BIG_CONFIG - len(head)) // len(item))
    body = body[:-1] + b"]}"
    return body + b" " * (BIG_CONFIG - len(body))


def hostile_config_kit(registry: HostileRegistry, repository: str, config: bytes) -> None:
    registry.add_modelkit(
        repository, "v1", config, [(MODEL, forge_tar(forge_file("model/w.bin", b"w")), NORMAL)]
    )


from hostileregistry import NORMAL  # noqa: E402

# name -> (how to serve it, what the one line says)
SERVED = {
    "manifest-500": (lambda r, n: deep_manifest(r, n, 500), "nested deeper than 100 levels"),
    "manifest-100000": (lambda r, n: deep_manifest(r, n, 100_000), "nested deeper than 100 levels"),
    "config-500": (
        lambda r, n: hostile_config_kit(r, n, hostile_config(nested(500))),
        "nested deeper than 100 levels",
    ),
    "config-100000": (
        lambda r, n: hostile_config_kit(r, n, hostile_config(nested(100_000))),
        "nested deeper than 100 levels",
    ),
    "config-17mib": (
        lambda r, n: hostile_config_kit(r, n, big_config()),
        f"is {BIG_CONFIG} bytes",
    ),
    "config-nul-path": (
        lambda r, n: hostile_config_kit(r, n, hostile_config(path="model\0evil")),
        "contains a NUL byte",
    ),
}


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileRegistry]:
    with HostileRegistry() as registry:
        for name, (make, _) in SERVED.items():
            make(registry, f"hostile/{name}")
        yield registry


@pytest.fixture(scope="module")
def public_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers import cli, ok

    where = tmp_path_factory.mktemp("keys")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COSIGN_PASSWORD", "")
        patch.chdir(where)
        ok(cli(where, "generate-key-pair"))
    return where / "cosign.pub"


def verb_argvs(home: Path, ref: str, out: Path, key: Path) -> dict[str, list[str]]:
    net = ["--plain-http"]
    base = ["--config", str(home)]
    return {
        "pull": [*base, "pull", ref, *net],
        "unpack": [*base, "unpack", ref, "-d", str(out), *net],
        "info": [*base, "info", ref, "--remote", *net],
        "inspect": [*base, "inspect", ref, "--remote", *net],
        "prefetch": [*base, "prefetch", ref, *net],
        "verify": [*base, "verify", ref, "--key", str(key), *net],
    }


def test_hostile_manifests_and_configs_fail_every_verb_with_one_line(
    hostile: HostileRegistry, tmp_path: Path, public_key: Path
) -> None:
    home = fresh_home(tmp_path)
    runs = [
        (name, verb, argv)
        for name in SERVED
        for verb, argv in verb_argvs(
            home, f"{hostile.host}/hostile/{name}:v1", tmp_path / "out" / name, public_key
        ).items()
    ]
    results, peak = run_verbs([argv for _, _, argv in runs])
    for (name, verb, _), (code, stderr) in zip(runs, results, strict=True):
        line = one_line(code, stderr)
        if verb == "verify":
            # verify checks signatures of the manifest's digest; it never parses the manifest
            assert "no sigstore bundle referring to it" in line, (name, line)
        else:
            assert SERVED[name][1] in line, (name, verb, line)
    assert peak < PEAK_RSS_MIB, f"peak RSS {peak} MiB"
    big = hostile.manifests[("hostile/config-17mib", "v1")]
    assert hostile.count("blobs", json.loads(big)["config"]["digest"]) == 0, "fetched, then refused"
    assert not (tmp_path / "out").exists(), "a failed unpack left the directory it created"
    stored = [p.read_text() for p in (home / "storage").rglob("index.json")]
    assert not any("hostile" in text for text in stored), "a refused ModelKit was stored"


@pytest.mark.parametrize("name", ["manifest-100000", "config-500", "config-17mib"])
def test_hostile_manifests_and_configs_fail_the_mount_with_one_line(
    hostile: HostileRegistry, mounts: Mounts, name: str
) -> None:
    mountpoint, result = mounts.try_mount(f"{hostile.host}/hostile/{name}:v1")
    line = one_line(result.returncode, result.stderr)
    assert SERVED[name][1] in line
    assert not is_mounted(mountpoint)
    assert "Traceback" not in mounts.log(mountpoint)


def test_a_bad_proxy_is_a_usage_error_in_every_verb(tmp_path: Path, public_key: Path) -> None:
    home = fresh_home(tmp_path)
    ref = "127.0.0.1:9/any/kit:v1"
    argvs = [
        [*argv, "--proxy", "not a url"]
        for argv in verb_argvs(home, ref, tmp_path / "out", public_key).values()
    ]
    argvs.append(["--config", str(home), "mount", ref, str(tmp_path), "--proxy", "not a url"])
    results, _ = run_verbs(argvs)
    for argv, (code, stderr) in zip(argvs, results, strict=True):
        line = one_line(code, stderr)
        assert code == 2, (argv[2], line)
        assert (
            line
            == "kitfs: --proxy 'not a url' is not a proxy URL: use http|https|socks5|socks5h://HOST[:PORT]"
        )
    assert not (tmp_path / "out").exists()


def test_a_proxy_from_the_environment_that_httpx_cannot_use_is_a_usage_error(
    tmp_path: Path,
) -> None:
    from .helpers import run_kitfs

    result = run_kitfs(
        fresh_home(tmp_path), "pull", "registry.invalid/a/b:v1", env={"HTTPS_PROXY": "ftp://x"}
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "kitfs: cannot use the proxy from the environment (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY): "
        "Unknown scheme for proxy URL URL('ftp://x')"
    )
