"""The seal follows the downloads: it reads what has been written, waits for more, and starts
again when a file does. Driven directly (no HTTP): a scratch directory and writes into it."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
from helpers import payload

from kitfs.hub.errors import HubError, Stopped, VerificationError
from kitfs.hub.hfapi import Listing, RepoFile
from kitfs.hub.plan import plan_layers
from kitfs.hub.scratch import Scratch, file_key
from kitfs.hub.seal import SealedLayer, seal
from kitfs.kitfile import Kitfile
from kitfs.kitinit import DirectoryListing, FileListing

DATA = payload(3 << 20, "seal")


def _scratch(tmp_path: Path) -> tuple[Scratch, str, int]:
    weights = RepoFile("w.safetensors", len(DATA), "0" * 40, hashlib.sha256(DATA).hexdigest())
    tree = DirectoryListing(".", ".", None, [FileListing(weights.name, weights.path, weights.size)])
    listing = Listing(tree, {weights.path: weights})
    kitfile = Kitfile.from_yaml("manifestVersion: 1.0.0\nmodel:\n  path: w.safetensors\n")
    plan = plan_layers(listing, kitfile, [], "acme/x")
    scratch = Scratch.open(tmp_path, plan, "k", "origin")
    layer = plan.layers[0]
    member = next(layer.files())
    return scratch, file_key(layer, member), member.data_offset


def _write(scratch: Scratch, key: str, offset: int, data: bytes, at: int = 0) -> None:
    fd = os.open(scratch.layer_path(scratch.plan.layers[0]), os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset + at)
    finally:
        os.close(fd)
    scratch.advance(key, len(data))


def _seal_in_thread(
    scratch: Scratch, stop: threading.Event
) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(seal(scratch, scratch.plan.layers[0], stop))
        except Exception as exc:  # handed to the test
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_seal_waits_for_bytes_and_restarts_with_the_file(tmp_path: Path) -> None:
    scratch, key, offset = _scratch(tmp_path)
    stop = threading.Event()
    _write(scratch, key, offset, b"\xff" * (1 << 20))  # bytes a later restart replaces
    thread, out = _seal_in_thread(scratch, stop)
    time.sleep(0.3)  # the seal reads them and waits for more
    assert thread.is_alive() and not out
    scratch.restart(key)
    _write(scratch, key, offset, DATA[: 1 << 20])
    _write(scratch, key, offset, DATA[1 << 20 :], at=1 << 20)
    thread.join(30)
    sealed = out[0]
    assert isinstance(sealed, SealedLayer), sealed
    blob = scratch.layer_path(scratch.plan.layers[0]).read_bytes()
    assert sealed.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert blob[offset : offset + len(DATA)] == DATA


def test_seal_refuses_bytes_that_do_not_match(tmp_path: Path) -> None:
    scratch, key, offset = _scratch(tmp_path)
    _write(scratch, key, offset, DATA[:-1] + b"\0")
    with pytest.raises(VerificationError, match="does not match the sha256"):
        seal(scratch, scratch.plan.layers[0], threading.Event(), on_mismatch=scratch.restart)
    assert scratch.done[key] == 0  # fetched again next time


def test_seal_stops_when_the_import_stops(tmp_path: Path) -> None:
    scratch, _, _ = _scratch(tmp_path)
    stop = threading.Event()
    thread, out = _seal_in_thread(scratch, stop)
    stop.set()
    thread.join(30)
    assert isinstance(out[0], Stopped)


def test_one_import_at_a_time_per_plan(tmp_path: Path) -> None:
    scratch, _, _ = _scratch(tmp_path)
    with pytest.raises(HubError, match="another kitfs import of the same repository is running"):
        Scratch.open(tmp_path, scratch.plan, "k", "origin")
    scratch.release()
    Scratch.open(tmp_path, scratch.plan, "k", "origin").release()
