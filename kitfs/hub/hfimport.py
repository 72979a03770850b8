"""Import a Hugging Face repository: list it, choose the Kitfile, download every file the layers
take straight into them, verify and index each layer, then store the ModelKit.

kit v1.7.0 (pkg/cmd/kitimport/hfimport.go) downloads into a scratch directory and packs it
afterwards, checking no digest. Here the layer files are the only copy (kitfs.hub.plan), downloads
run in parallel worker threads (``--concurrency``), each layer is sealed (verified and indexed) by a
worker thread that follows its downloads (kitfs.hub.seal), and local storage sees nothing until
every layer passed.
An interrupted import keeps its scratch state and continues from it (kitfs.hub.scratch).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import trio

from kitfs.config import Paths
from kitfs.errors import KitfsError
from kitfs.hub import fetch
from kitfs.hub.errors import HubError, Stopped
from kitfs.hub.hfapi import HubConfig, Listing, api_error, list_repository, resolve_url
from kitfs.hub.plan import ImportPlan, LayerPlan, Member, plan_layers
from kitfs.hub.scratch import Scratch, file_key
from kitfs.hub.seal import SealedLayer, seal
from kitfs.kitfile import Kitfile
from kitfs.pack import PackResult, layer_descriptor, parent_layer_paths, store_modelkit
from kitfs.progress import ProgressSink, Task
from kitfs.reference import Reference
from kitfs.storage.local import LocalStore, display_repository

log = logging.getLogger(__name__)

TIMEOUT = httpx.Timeout(60.0, connect=30.0)
SEALS_AT_ONCE = 2


@dataclass(frozen=True)
class HubImport:
    """What one Hugging Face import needs, resolved by kitfs.hub.importer."""

    repo: str  # org/name
    rev: str
    config: HubConfig
    concurrency: int
    target: Reference


def list_files(job: HubImport) -> Listing:
    """The repository's tree, from the Hub API."""

    async def run() -> Listing:
        async with _async_client(job.config) as client:
            return await list_repository(client, job.config, job.repo, job.rev)

    return trio.run(run)


def import_listing(
    job: HubImport,
    listing: Listing,
    kitfile: Kitfile,
    paths: Paths,
    progress: ProgressSink,
    say: Callable[[str], None],
) -> PackResult:
    """Download, verify and store the layers ``kitfile`` asks for; tag the ModelKit."""
    store = LocalStore(paths.storage)
    store.ensure()
    extra = parent_layer_paths(store, kitfile, display_repository(str(job.target)))
    plan = plan_layers(listing, kitfile, extra, job.repo)
    origin = f"{job.config.endpoint} {job.repo} {job.rev}"
    scratch = Scratch.open(
        paths.cache, plan, plan.key(job.config.endpoint, job.repo, job.rev), origin
    )
    started = time.monotonic()
    try:
        sealed = _download_and_seal(job, plan, scratch, progress)
        result = _store(store, kitfile, scratch, sealed, job.target)
    except BaseException as exc:
        scratch.checkpoint()
        scratch.release()
        if isinstance(exc, OSError):  # our own writes: scratch space or local storage
            where = f"{exc.filename}: " if exc.filename else ""
            raise HubError(f"import failed writing {where}{exc.strerror}") from None
        raise
    scratch.remove()
    _summary(plan, time.monotonic() - started, say)
    return result


def _summary(plan: ImportPlan, seconds: float, say: Callable[[str], None]) -> None:
    files = sum(1 for _ in plan.files())
    total = plan.total_bytes
    rate = total / seconds / (1 << 20) if seconds > 0 else 0.0
    say(f"Imported {files} files, {total} bytes in {seconds:.1f}s ({rate:.1f} MiB/s)")


def _store(
    store: LocalStore,
    kitfile: Kitfile,
    scratch: Scratch,
    sealed: dict[int, SealedLayer],
    target: Reference,
) -> PackResult:
    """Move the sealed layer files into local storage, then write config, manifest and tag."""
    descriptors = []
    for number in sorted(sealed):
        layer = sealed[number]
        store.adopt_blob(scratch.layer_path(layer.layer), layer.digest)
        entry = layer.layer.entry
        entry.data["digest"] = layer.digest
        entry.data["diffId"] = layer.diff_id
        descriptors.append(
            layer_descriptor(entry.kind, layer.digest, layer.size, layer.annotations)
        )
    if not descriptors:
        log.warning("ModelKit contains no layers")
    return store_modelkit(store, kitfile, descriptors, target)


# -- the transfer ---------------------------------------------------------------------------------


def _download_and_seal(
    job: HubImport, plan: ImportPlan, scratch: Scratch, progress: ProgressSink
) -> dict[int, SealedLayer]:
    task = _LockedTask(progress.task(f"import {job.repo}", plan.total_bytes), job.repo, plan)
    task.advance(sum(min(scratch.done.get(file_key(ly, m), 0), m.size) for ly, m in plan.files()))
    for layer, member in plan.files():
        if scratch.done.get(file_key(layer, member), 0) == member.size:
            task.file_done()
    stop = threading.Event()
    sealed: dict[int, SealedLayer] = {}
    with _sync_client(job.config, job.concurrency) as client:

        def report(key: str, amount: int) -> None:
            scratch.advance(key, amount)
            task.advance(amount)

        def refused(status: int, body: bytes, path: str) -> HubError:
            if status == 404:
                return HubError(f"{path} is listed but not found in {job.repo} at {job.rev}")
            return api_error(job.config, job.repo, job.rev, status, body, f"download {path} of")

        transfer = fetch.Transfer(
            client,
            {**job.config.headers(), "Accept-Encoding": "identity"},
            stop,
            report,
            scratch.restart,
            refused,
        )
        try:
            trio.run(_run_all, job, plan, scratch, transfer, sealed, task.file_done)
        except BaseExceptionGroup as group:
            raise _leading(group) from None
    return sealed


async def _run_all(
    job: HubImport,
    plan: ImportPlan,
    scratch: Scratch,
    transfer: fetch.Transfer,
    sealed: dict[int, SealedLayer],
    on_file: Callable[[], None],
) -> None:
    stop = transfer.stop
    downloads = trio.CapacityLimiter(job.concurrency)
    seals = trio.CapacityLimiter(SEALS_AT_ONCE)

    async def seal_layer(layer: LayerPlan) -> None:
        try:
            sealed[layer.number] = await trio.to_thread.run_sync(
                lambda: seal(scratch, layer, stop, on_mismatch=scratch.restart), limiter=seals
            )
        except BaseException:
            stop.set()
            raise

    async def fetch_file(layer: LayerPlan, member: Member) -> None:
        key = file_key(layer, member)
        job_ = fetch.FileJob(
            key,
            member.name,
            resolve_url(job.config, job.repo, job.rev, member.name),
            member.size,
            scratch.layer_path(layer),
            member.data_offset,
        )
        try:
            await trio.to_thread.run_sync(
                fetch.download,
                job_,
                scratch.done.get(key, 0),
                transfer,
                limiter=downloads,
                abandon_on_cancel=True,
            )
        except BaseException:
            stop.set()  # the other downloads (and the seals waiting for them) stop
            raise
        on_file()

    async with trio.open_nursery() as nursery:
        # Seals start first, in layer order: each follows its layer's downloads as they land.
        for layer in plan.layers:
            nursery.start_soon(seal_layer, layer)
        for layer, member in plan.files():
            if scratch.done.get(file_key(layer, member), 0) < member.size:
                nursery.start_soon(fetch_file, layer, member)


def _leading(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report for failed concurrent work: an interruption, else the first failure
    that is not another download giving up because of it."""
    leaves: list[BaseException] = []

    def collect(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                collect(inner)
        else:
            leaves.append(exc)

    collect(group)
    for kind in (KeyboardInterrupt, KitfsError, Exception):
        for leaf in leaves:
            if isinstance(leaf, kind) and not isinstance(leaf, Stopped):
                return leaf
    return group


class _LockedTask:
    """The import's progress bar: bytes (and their rate) advanced from several download threads,
    files counted in its label."""

    def __init__(self, task: Task, repo: str, plan: ImportPlan) -> None:
        self._task = task
        self._lock = threading.Lock()
        self._repo = repo
        self._files = sum(1 for _ in plan.files())
        self._done = 0
        self._label()

    def advance(self, amount: int) -> None:
        if amount:
            with self._lock:
                self._task.advance(amount)

    def file_done(self) -> None:
        with self._lock:
            self._done += 1
            self._label()

    def _label(self) -> None:
        describe = getattr(self._task, "describe", None)  # kitfs.progress tasks have it
        if describe is not None:
            describe(f"import {self._repo}: {self._done}/{self._files} files")


# -- HTTP clients -----------------------------------------------------------------------------------


def _trust_env(config: HubConfig) -> bool:
    """Proxies and CA bundles from the environment, except for a mirror on this machine."""
    host = urlsplit(config.endpoint).hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def _async_client(config: HubConfig) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=TIMEOUT, trust_env=_trust_env(config), follow_redirects=True)


def _sync_client(config: HubConfig, concurrency: int) -> httpx.Client:
    limits = httpx.Limits(max_connections=2 * concurrency + 2)
    return httpx.Client(timeout=TIMEOUT, trust_env=_trust_env(config), limits=limits)
