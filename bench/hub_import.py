"""``kitfs import`` from a Hub on loopback: wall time and rate, against the two steps kit takes.

kit v1.7.0 downloads a repository into a scratch directory and packs it afterwards (two full copies
on disk, the second written after the first is complete). kitfs writes each file into its layer as
it arrives and verifies and indexes the layer in one more read. This measures, for one repository
of ``--size`` MiB of LFS weights plus a few small files, served by tests/hfhub.py (the Hub
stand-in the tests use):

- ``download``: the raw transfer, every file streamed to /dev/null (the floor for any importer);
- ``download+pack``: kit's shape with kitfs's parts: the files downloaded into a directory, then
  ``kitfs pack`` of it;
- ``kitfs import``: the verb.

Usage: ``.venv/bin/python bench/hub_import.py [--size MIB] [--runs N]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hfhub import Hub, Repo, serve_hub  # noqa: E402

KITFS = str(Path(sys.executable).parent / "kitfs")
REPO = "bench/weights"


def files(size_mib: int) -> dict[str, bytes]:
    block = os.urandom(1 << 20)
    return {
        "model.safetensors": block * size_mib,
        "config.json": b'{"hidden_size": 4096}\n',
        "README.md": b"# bench\n",
        "tokenizer/tokenizer.json": b"{}\n" * 1000,
    }


def download_all(endpoint: str, contents: dict[str, bytes], into: Path | None) -> None:
    with httpx.Client(follow_redirects=True, trust_env=False, timeout=60) as client:
        for path in contents:
            url = f"{endpoint}/{REPO}/resolve/main/{path}"
            with client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as response:
                response.raise_for_status()
                target = into / path if into else Path(os.devnull)
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:
                    for chunk in response.iter_raw():
                        out.write(chunk)


def timed(label: str, run: object, size: int) -> float:
    start = time.monotonic()
    run()  # type: ignore[operator]
    seconds = time.monotonic() - start
    print(f"{label:<16} {seconds:7.2f} s  {size / seconds / (1 << 20):8.1f} MiB/s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="MiB of weights (default 512)")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    contents = files(args.size)
    total = sum(len(v) for v in contents.values())
    kitfile = "manifestVersion: 1.0.0\nmodel:\n  path: model.safetensors\ncode:\n  - path: .\n"
    with serve_hub(Hub(repos={REPO: Repo({"main": contents})})) as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": tempfile.mkdtemp()}
        env.pop("HF_TOKEN", None)
        for _ in range(args.runs):
            work = Path(tempfile.mkdtemp(prefix="hub-bench-", dir=os.environ.get("TMPDIR")))
            try:
                timed("download", lambda: download_all(hub.endpoint, contents, None), total)

                def download_and_pack(work: Path = work) -> None:
                    download_all(hub.endpoint, contents, work / "ctx")
                    (work / "Kitfile").write_text(kitfile)
                    subprocess.run(
                        [KITFS, "--config", str(work / "home1"), "pack", str(work / "ctx"),
                         "-f", str(work / "Kitfile"), "-t", "b:1"],
                        check=True, env=env, capture_output=True,
                    )  # fmt: skip

                timed("download+pack", download_and_pack, total)
                (work / "Kitfile").write_text(kitfile)
                timed(
                    "kitfs import",
                    lambda work=work: subprocess.run(
                        [
                            KITFS,
                            "--config",
                            str(work / "home2"),
                            "import",
                            REPO,
                            "-f",
                            str(work / "Kitfile"),
                            "-t",
                            "b:1",
                        ],
                        check=True,
                        env=env,
                        capture_output=True,
                    ),  # fmt: skip
                    total,
                )
            finally:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
