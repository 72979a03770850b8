"""Real mounts through /dev/fuse against a real docker-registry (and a counting, corrupting proxy)."""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from faultproxy import Fault, FaultProxy, blob_get, once
from fs_modelkits import snapshot
from fs_mounting import COMPRESSIONS, MOUNT_HELPER, Mounter, Published, alive, wait_for
from helpers import WHOLE
from registry import RegistryServer

from kitfs.config import Paths
from kitfs.fs.mounttable import find_mount
from kitfs.oci.manifest import Manifest
from kitfs.reference import parse
from kitfs.storage.local import LocalStore

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")


def _layers(published: Published, tag: str, repository: str | None = None) -> dict[str, str]:
    """Kitfile path -> layer digest of a published ModelKit."""
    store = LocalStore(Paths(published.home).storage)
    _repo, desc = store.resolve(parse(published.ref(tag, repository=repository)))
    manifest: Manifest = store.load_manifest(desc)
    kitfile = store.load_kitfile(manifest)
    return {
        e.path: layer.digest for e, layer in zip(kitfile.entries(), manifest.layers, strict=True)
    }


def _diff_ids(published: Published, tag: str) -> dict[str, str]:
    """Kitfile path -> hex of the layer's diffId (the name of its tar in the cache)."""
    store = LocalStore(Paths(published.home).storage)
    _repo, desc = store.resolve(parse(published.ref(tag)))
    kitfile = store.load_kitfile(store.load_manifest(desc))
    return {e.path: str(e.data["diffId"]).split(":")[1] for e in kitfile.entries()}


def _blob_gets(proxy: FaultProxy) -> list[str]:
    return [r.path.rsplit("/", 1)[1] for r in proxy.requests if blob_get(r)]


def _for(digest: str) -> object:
    return lambda request: blob_get(request) and request.path.endswith(digest)


# -- the tree and the bytes ----------------------------------------------------------------


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_unpack_layout_equals_kitfs_unpack(
    mounter: Mounter, published: Published, compression: str
) -> None:
    mnt = mounter.mount(published.ref(compression), None, "--layout", "unpack")
    assert snapshot(mnt).entries == snapshot(published.unpacked).entries


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_sections_layout_equals_filtered_unpacks(
    mounter: Mounter, published: Published, compression: str
) -> None:
    mnt = mounter.mount(published.ref(compression))
    assert sorted(os.listdir(mnt)) == ["Kitfile", "code", "datasets", "docs", "model"]
    assert (mnt / "Kitfile").read_bytes() == (published.unpacked / "Kitfile").read_bytes()
    for section, unpacked in published.sections.items():
        assert snapshot(mnt / section).entries == snapshot(unpacked).entries, section
    # After a full walk every directory's link count is exact, as in the unpacked tree.
    for section, unpacked in published.sections.items():
        for dirpath, _dirs, _files in os.walk(unpacked):
            rel = Path(dirpath).relative_to(unpacked)
            assert os.stat(mnt / section / rel).st_nlink == os.stat(dirpath).st_nlink, rel


def test_stat_of_files_and_the_file_system(mounter: Mounter, published: Published) -> None:
    mnt = mounter.mount(published.ref("gzip"))
    st = os.stat(mnt / "code" / "src" / "train.py")
    assert (st.st_mode & 0o7777, st.st_size, st.st_nlink) == (0o755, 15, 1)
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    assert os.stat(mnt / "code" / "notes.txt").st_mode & 0o777 == 0o600
    assert os.stat(mnt / "code" / "src" / "util").st_mode & 0o777 == 0o750
    assert os.stat(mnt / "Kitfile").st_mode & 0o777 == 0o644
    vfs = os.statvfs(mnt)
    assert vfs.f_bfree == 0 and vfs.f_namemax == 255 and vfs.f_blocks > 0
    info = find_mount(mnt)
    assert info is not None and info.fstype == "fuse.kitfs"
    assert "ro" in Path("/proc/self/mounts").read_text().split(str(mnt))[1].split()[1].split(",")


def test_writes_fail_with_erofs(mounter: Mounter, published: Published) -> None:
    mnt = mounter.mount(published.ref("none"))
    for action in (
        lambda: os.open(mnt / "Kitfile", os.O_WRONLY),
        lambda: os.open(mnt / "code" / "new.txt", os.O_WRONLY | os.O_CREAT),
        lambda: os.mkdir(mnt / "code" / "dir"),
        lambda: os.unlink(mnt / "code" / "notes.txt"),
        lambda: os.rename(mnt / "Kitfile", mnt / "K2"),
        lambda: os.chmod(mnt / "Kitfile", 0o600),
    ):
        with pytest.raises(OSError) as caught:
            action()
        assert caught.value.errno == errno.EROFS
    pid = mounter.daemon_pid(mnt)
    assert subprocess.run(["fusermount3", "-u", str(mnt)], check=False).returncode == 0
    assert find_mount(mnt) is None
    assert wait_for(lambda: not alive(pid))


def test_extended_attributes_are_unsupported_so_the_kernel_stops_asking(
    mounter: Mounter, published: Published
) -> None:
    # ENOSYS from the daemon makes the kernel answer EOPNOTSUPP itself from then on (ls -l asks
    # for two attributes per file; ENOATTR would send each question to the daemon).
    mnt = mounter.mount(published.ref("none"))
    for path in (mnt / "Kitfile", mnt / "code" / "src" / "train.py"):
        with pytest.raises(OSError) as caught:
            os.getxattr(path, "security.selinux")
        assert caught.value.errno == errno.EOPNOTSUPP
        with pytest.raises(OSError) as caught:
            os.listxattr(path)
        assert caught.value.errno == errno.EOPNOTSUPP


def test_the_mount_reads_ahead_one_mebibyte(mounter: Mounter, published: Published) -> None:
    mnt = mounter.mount(published.ref("none"))
    info = find_mount(mnt)
    assert info is not None and info.device
    knob = Path(f"/sys/class/bdi/{info.device}/read_ahead_kb")
    # The daemon widens it right after FUSE INIT, from a task that starts with the main loop.
    assert wait_for(lambda: knob.read_text().strip() == "1024"), knob.read_text()


# -- laziness, counted at the registry -----------------------------------------------------


def test_mount_and_cat_kitfile_fetch_no_layer(
    mounter: Mounter, published: Published, fault_proxy: FaultProxy
) -> None:
    mnt = mounter.mount(published.ref("gzip", fault_proxy.host))
    assert (mnt / "Kitfile").read_bytes() == (published.unpacked / "Kitfile").read_bytes()
    assert sorted(os.listdir(mnt)) == ["Kitfile", "code", "datasets", "docs", "model"]
    layers = set(_layers(published, "gzip").values())
    assert len(_blob_gets(fault_proxy)) == 1  # the config
    assert not layers & set(_blob_gets(fault_proxy))


def test_reading_one_dataset_file_fetches_exactly_its_layer(
    mounter: Mounter, published: Published, fault_proxy: FaultProxy
) -> None:
    mnt = mounter.mount(published.ref("zstd", fault_proxy.host))
    layers = _layers(published, "zstd")
    before = len(_blob_gets(fault_proxy))
    data = (mnt / "datasets" / "data" / "train.csv").read_bytes()
    assert data == (published.unpacked / "data" / "train.csv").read_bytes()
    assert _blob_gets(fault_proxy)[before:] == [layers["data/train.csv"]]
    # Reading it again, or its neighbour's attributes from the same layer, fetches nothing more.
    assert (mnt / "datasets" / "data" / "train.csv").read_bytes() == data
    assert _blob_gets(fault_proxy)[before:] == [layers["data/train.csv"]]


def test_a_second_mount_of_the_same_digest_fetches_nothing(
    mounter: Mounter, published: Published, fault_proxy: FaultProxy
) -> None:
    first = mounter.mount(published.ref("gzip", fault_proxy.host))
    expected = snapshot(first)
    assert mounter.run("umount", str(first)).returncode == 0
    fault_proxy.requests.clear()
    second = mounter.mount(published.ref("gzip", fault_proxy.host), mounter.mountpoint("again"))
    assert snapshot(second) == expected
    assert _blob_gets(fault_proxy) == []
    assert [r.method for r in fault_proxy.requests if "/manifests/" in r.path] == ["GET"]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_a_corrupted_layer_reads_as_eio_and_is_not_cached(
    compression: str, mounter: Mounter, published: Published, fault_proxy: FaultProxy
) -> None:
    digest = _layers(published, compression)["data/test.csv"]
    fault_proxy.add_rule(once(_for(digest), Fault(corrupt_at=60)))  # type: ignore[arg-type]
    mnt = mounter.mount(published.ref(compression, fault_proxy.host))
    with pytest.raises(OSError) as caught:
        (mnt / "datasets" / "data" / "test.csv").read_bytes()
    assert caught.value.errno == errno.EIO
    hexpart = digest.split(":")[1]
    cached = [
        p.name for d in ("tars/sha256", "index/sha256") for p in (mounter.cache / d).iterdir()
    ]
    assert hexpart not in cached
    assert list((mounter.cache / "tmp").iterdir()) == []
    # Listing needs every dataset layer: it fails too, as EIO, not as an internal error.
    with pytest.raises(OSError) as listing:
        os.listdir(mnt / "datasets" / "data")
    assert listing.value.errno == errno.EIO
    log = mounter.log_path(mnt).read_text()
    assert digest in log and "failed verification" in log
    assert "internal error" not in log and "Traceback" not in log
    # Other layers are unaffected.
    assert (mnt / "datasets" / "data" / "train.csv").read_bytes().startswith(b"x,y\n1,2")


def test_sixteen_readers_of_one_large_file_share_one_download(
    mounter: Mounter, published: Published, fault_proxy: FaultProxy
) -> None:
    # Slow the blob down so that every reader is waiting while it downloads.
    fault_proxy.add_rule(lambda request: Fault(delay=0.5) if blob_get(request) else None)
    mnt = mounter.mount(published.ref("v1", fault_proxy.host, published.big_repository))
    expected = hashlib.sha256(published.big_file.read_bytes()).hexdigest()
    barrier = threading.Barrier(16)
    digests: list[str] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            barrier.wait()
            with open(mnt / "model" / "model.bin", "rb") as handle:
                hasher = hashlib.sha256()
                while chunk := handle.read(1 << 20):
                    hasher.update(chunk)
            digests.append(hasher.hexdigest())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert digests == [expected] * 16
    layer = next(iter(_layers(published, "v1", published.big_repository).values()))
    assert _blob_gets(fault_proxy).count(layer) == 1


def test_two_mounts_sharing_a_cache_download_a_layer_once(
    mounter: Mounter, published: Published, fault_proxy: FaultProxy
) -> None:
    fault_proxy.add_rule(lambda request: Fault(delay=0.5) if blob_get(request) else None)
    first = mounter.mount(published.ref("gzip", fault_proxy.host))
    second = mounter.mount(published.ref("gzip", fault_proxy.host), mounter.mountpoint("second"))
    expected = (published.unpacked / "models" / "weights.bin").read_bytes()
    results: dict[str, bytes] = {}

    def read(mnt: Path) -> None:
        results[mnt.name] = (mnt / "model" / "models" / "weights.bin").read_bytes()

    threads = [threading.Thread(target=read, args=(mnt,)) for mnt in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == {"mnt": expected, "second": expected}
    assert _blob_gets(fault_proxy).count(_layers(published, "gzip")["models"]) == 1


# -- sources -------------------------------------------------------------------------------


def test_repository_mount_resolves_each_tag_when_first_opened(
    mounter: Mounter, published: Published, fault_proxy: FaultProxy
) -> None:
    mnt = mounter.mount(f"{fault_proxy.host}/{published.repository}")
    assert sorted(os.listdir(mnt)) == list(sorted(COMPRESSIONS))
    # Listing reads each tag's manifest (to leave out tags that are not models), and no blob.
    listed = [r.path.rsplit("/", 1)[1] for r in fault_proxy.requests if "/manifests/" in r.path]
    assert sorted(listed) == sorted(COMPRESSIONS)
    assert not [r for r in fault_proxy.requests if "/blobs/" in r.path]
    before = len(fault_proxy.requests)
    assert (mnt / "zstd" / "Kitfile").read_bytes() == (published.unpacked / "Kitfile").read_bytes()
    opened = fault_proxy.requests[before:]
    assert all(r.path.endswith("/manifests/zstd") for r in opened if "/manifests/" in r.path)
    store = LocalStore(Paths(published.home).storage)
    config = store.load_manifest(store.resolve(parse(published.ref("zstd")))[1]).config.digest
    assert {r.path.rsplit("/", 1)[1] for r in opened if "/blobs/" in r.path} == {config}
    assert (
        snapshot(mnt / "none" / "datasets").entries
        == snapshot(published.sections["datasets"]).entries
    )


def test_local_storage_mount_reads_uncompressed_layers_in_place(
    mounter: Mounter, published: Published
) -> None:
    # The reference names a registry, but kit's local storage holds every blob: no layer is fetched.
    mnt = mounter.mount(published.ref("none"), None, "--layout", "unpack", local=True)
    assert (mnt / "models" / "weights.bin").read_bytes() == (
        published.unpacked / "models" / "weights.bin"
    ).read_bytes()
    assert list((mounter.cache / "tars" / "sha256").iterdir()) == []


def test_a_local_blob_damaged_between_two_mounts_of_one_cache_is_refused(tmp_path: Path) -> None:
    """An uncompressed layer read in place is hashed by every mount that opens it: the cache
    remembers its index, never that the blob in kit's storage was sound. A byte changed there after
    a first mount makes the next mount of the same cache answer EIO, not the changed bytes."""
    from fs_modelkits import kitfs, write_context

    home = tmp_path / "home"
    context = write_context(tmp_path / "context", big=1000)
    kitfs(home, "pack", str(context), "-t", "inplace/film:v1", "--compression", "none", *WHOLE)
    train = (context / "data" / "train.csv").read_bytes()
    mounter = Mounter(tmp_path / "node", home)
    mounter.base.mkdir()
    try:
        first = mounter.mount("inplace/film:v1", local=True)
        assert (first / "datasets" / "data" / "train.csv").read_bytes() == train
        pid = mounter.daemon_pid(first)
        subprocess.run(["fusermount3", "-u", str(first)], check=True)
        assert wait_for(lambda: not alive(pid), timeout=20)
        blobs = home / "storage" / "blobs" / "sha256"
        blob = next(p for p in blobs.iterdir() if train in p.read_bytes())
        data = bytearray(blob.read_bytes())
        data[data.index(train) + len(train) // 2] ^= 0x01  # same size, one bit off
        blob.write_bytes(bytes(data))

        again = mounter.mount("inplace/film:v1", mounter.mountpoint("again"), local=True)
        with pytest.raises(OSError) as failure:
            (again / "datasets" / "data" / "train.csv").read_bytes()
        assert failure.value.errno == errno.EIO
        assert (again / "datasets" / "data" / "test.csv").read_bytes() == b"x,y\n3,4\n"
        assert list((mounter.cache / "tars" / "sha256").iterdir()) == []  # read in place, as before
    finally:
        mounter.cleanup()


def test_oci_layout_written_by_skopeo_mounts(
    mounter: Mounter, published: Published, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--src-tls-verify=false",
            f"docker://{published.ref('gzip')}",
            f"oci:{layout}:film",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    mnt = mounter.mount(f"oci:{layout}:film", None, "--layout", "unpack")
    assert snapshot(mnt).entries == snapshot(published.unpacked).entries
    repo = mounter.mount(f"oci:{layout}", mounter.mountpoint("repo"))
    assert os.listdir(repo) == ["film"]


def test_mount_helper_mounts_as_mount8_calls_it(mounter: Mounter, published: Published) -> None:
    mnt = mounter.mountpoint()
    options = f"ro,noauto,_netdev,x-systemd.automount,plain_http,layout=unpack,cache_dir={mounter.cache},config={published.home}"
    result = subprocess.run(
        [MOUNT_HELPER, published.ref("none"), str(mnt), "-o", options],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    info = find_mount(mnt)
    assert info is not None and info.fstype == "fuse.kitfs" and info.source == published.ref("none")
    assert (mnt / "data" / "test.csv").read_bytes() == b"x,y\n3,4\n"
    assert subprocess.run(["umount", str(mnt)], capture_output=True, check=False).returncode == 0
    assert find_mount(mnt) is None
    bad = subprocess.run(
        [MOUNT_HELPER, published.ref("none"), str(mnt), "-o", "colour=blue"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1 and "unknown mount option 'colour=blue'" in bad.stderr


@pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0, reason="needs root and unshare"
)
def test_mount_t_fuse_kitfs_and_an_fstab_line_work(
    mounter: Mounter, published: Published, tmp_path: Path
) -> None:
    """mount(8) finds helpers only in /sbin: run it in a private mount namespace whose /usr/sbin
    holds just our helper, so the test installs nothing on the machine."""
    mnt = mounter.mountpoint()
    fstab = tmp_path / "fstab"
    options = f"ro,noauto,_netdev,plain_http,layout=unpack,cache_dir={mounter.cache},config={mounter.home}"
    fstab.write_text(f"{published.ref('zstd')}  {mnt}  fuse.kitfs  {options}  0 0\n")
    script = f"""
set -e
mount -t tmpfs kitfs-test-helpers /usr/sbin
ln -s {MOUNT_HELPER} /usr/sbin/mount.fuse.kitfs
trap 'umount -l {mnt} 2>/dev/null || true' EXIT
# umount(8) once said "target is busy" right after cat ended (1 of 3 full suites this stop, on
# the CI-like clean clone): a few tries, then the last error.
unmount() {{ for i in 1 2 3 4; do umount {mnt} 2>/dev/null && return 0; sleep 0.5; done; umount {mnt}; }}
mount -T {fstab} {mnt}
grep -q ' {mnt} .* - fuse.kitfs ' /proc/self/mountinfo
cat {mnt}/data/train.csv > {tmp_path}/from-fstab
unmount
mount -t fuse.kitfs -o plain_http,cache_dir={mounter.cache},config={mounter.home} {published.ref("gzip")} {mnt}
cat {mnt}/datasets/data/test.csv > {tmp_path}/from-type
unmount
"""
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "from-fstab").read_bytes() == (
        published.unpacked / "data" / "train.csv"
    ).read_bytes()
    assert (tmp_path / "from-type").read_bytes() == b"x,y\n3,4\n"


def test_the_cache_bound_evicts_closed_layers_but_not_open_ones(
    mounter: Mounter, published: Published
) -> None:
    mnt = mounter.mount(published.ref("gzip"), None, "--cache-size", "1")
    diff_ids = _diff_ids(published, "gzip")
    tars = mounter.cache / "tars" / "sha256"
    with open(mnt / "datasets" / "data" / "train.csv", "rb") as held:
        assert (mnt / "docs" / "README.md").read_bytes() == b"# film-slm\n"
        assert {p.name for p in tars.iterdir()} == {
            diff_ids["data/train.csv"],
            diff_ids["README.md"],
        }
        assert (mnt / "datasets" / "data" / "test.csv").read_bytes() == b"x,y\n3,4\n"
        # README.md's layer was closed: evicted to make room; train.csv's is open: kept.
        assert {p.name for p in tars.iterdir()} == {
            diff_ids["data/train.csv"],
            diff_ids["data/test.csv"],
        }
        assert held.read() == (published.unpacked / "data" / "train.csv").read_bytes()
    assert "evicted layer sha256:" + diff_ids["README.md"] in mounter.log_path(mnt).read_text()


def test_a_smaller_cache_bound_evicts_every_closed_layer_it_must_at_once(
    mounter: Mounter, published: Published
) -> None:
    """A cache filled by an unbounded mount, then mounted with --cache-size 1: the first fetch
    evicts every closed layer at once (four of them here), and spares the one an open file reads."""
    diff_ids = _diff_ids(published, "gzip")
    tars = mounter.cache / "tars" / "sha256"
    first = mounter.mount(published.ref("gzip"))
    for path in ("docs/README.md", "docs/docs/guide.md", "datasets/data/test.csv",
                 "datasets/data/extra/more.csv", "code/src/train.py"):  # fmt: skip
        assert (first / path).read_bytes() == (
            published.unpacked / path.split("/", 1)[1]
        ).read_bytes()
    closed = {diff_ids[p] for p in ("README.md", "docs", "data/extra", ".")}
    assert {p.name for p in tars.iterdir()} == closed | {diff_ids["data/test.csv"]}
    pid = mounter.daemon_pid(first)
    subprocess.run(["fusermount3", "-u", str(first)], check=True)
    assert wait_for(lambda: not alive(pid), timeout=20)  # its files (and locks) are closed

    mnt = mounter.mount(published.ref("gzip"), mounter.mountpoint("bounded"), "--cache-size", "1")
    with open(mnt / "datasets" / "data" / "test.csv", "rb") as held:
        train = (mnt / "datasets" / "data" / "train.csv").read_bytes()
        assert train == (published.unpacked / "data" / "train.csv").read_bytes()
        assert {p.name for p in tars.iterdir()} == {
            diff_ids["data/test.csv"],
            diff_ids["data/train.csv"],
        }
        assert held.read() == b"x,y\n3,4\n"
    log = mounter.log_path(mnt).read_text()
    assert all(f"evicted layer sha256:{d}" in log for d in closed), log


def test_registry_flags_reach_a_tls_registry(
    mounter: Mounter, published: Published, tls_registry: RegistryServer, tmp_path: Path
) -> None:
    from fs_modelkits import kitfs, write_context

    ref = f"{tls_registry.host}/kitfs-fs/tls:v1"
    context = write_context(tmp_path / "context", big=1000)
    kitfs(mounter.home, "pack", str(context), "-t", ref, "--compression", "zstd", *WHOLE)
    kitfs(mounter.home, "push", ref, "--ca-file", str(tls_registry.ca_pem))
    run = functools.partial(mounter.run, "mount", ref)
    cache = ["--cache-dir", str(mounter.cache)]
    refused = run(str(mounter.mountpoint("refused")), *cache)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"kitfs: registry {tls_registry.host}: TLS certificate verification failed "
        "(use --tls-verify=false or --ca-file)"
    ]
    trusted = mounter.mountpoint("trusted")
    assert run(str(trusted), *cache, "--ca-file", str(tls_registry.ca_pem)).returncode == 0
    assert (trusted / "datasets" / "data" / "test.csv").read_bytes() == b"x,y\n3,4\n"
    unverified = mounter.mountpoint("unverified")
    assert run(str(unverified), *cache, "--tls-verify=false").returncode == 0
    assert (unverified / "docs" / "README.md").read_bytes() == b"# film-slm\n"


# -- lifecycle and errors --------------------------------------------------------------------


def test_unmount_with_open_files_is_refused_then_lazy_unmount_works(
    mounter: Mounter, published: Published
) -> None:
    mnt = mounter.mount(published.ref("none"))
    pid = mounter.daemon_pid(mnt)
    with open(mnt / "code" / "src" / "train.py", "rb") as handle:
        busy = mounter.run("umount", str(mnt))
        assert busy.returncode == 1
        assert busy.stderr.strip().splitlines() == [
            f"kitfs: cannot unmount {mnt}: it is busy (a process has a file open or its working "
            f"directory there); close them, or run `kitfs umount --lazy {mnt}`"
        ]
        assert handle.read() == b"print('train')\n"
        assert mounter.run("umount", "--lazy", str(mnt)).returncode == 0
        assert find_mount(mnt) is None
        handle.seek(0)
        assert handle.read() == b"print('train')\n"  # still served until closed
    assert wait_for(lambda: not alive(pid))


def test_sigterm_stops_the_daemon_and_unmounts(mounter: Mounter, published: Published) -> None:
    mnt = mounter.mount(published.ref("gzip"))
    pid = mounter.daemon_pid(mnt)
    handle = open(mnt / "datasets" / "data" / "train.csv", "rb")  # noqa: SIM115
    try:
        os.kill(pid, signal.SIGTERM)
        assert wait_for(lambda: not alive(pid))
        assert find_mount(mnt) is None
        assert os.listdir(mnt) == []
    finally:
        with contextlib.suppress(OSError):  # the file system is gone: ENOTCONN
            handle.close()
    assert "received SIGTERM: unmounting" in mounter.log_path(mnt).read_text()


def test_sigint_stops_a_foreground_mount(mounter: Mounter, published: Published) -> None:
    mnt = mounter.mountpoint()
    process = mounter.foreground(published.ref("none"), mnt)
    assert (mnt / "Kitfile").exists()
    process.send_signal(signal.SIGINT)
    assert process.wait(20) == 0
    assert find_mount(mnt) is None


def test_a_stale_mount_is_cleaned_up_by_the_next_mount(
    mounter: Mounter, published: Published
) -> None:
    mnt = mounter.mountpoint()
    process = mounter.foreground(published.ref("none"), mnt)
    process.kill()
    process.wait(10)
    with pytest.raises(OSError) as caught:
        os.statvfs(mnt)
    assert caught.value.errno == errno.ENOTCONN
    mounter.mount(published.ref("none"), mnt)
    assert (mnt / "Kitfile").read_bytes() == (published.unpacked / "Kitfile").read_bytes()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "kitfs: mountpoint {mnt} does not exist (create it with mkdir)"),
        (
            "nonempty",
            "kitfs: mountpoint {mnt} is not empty (mount on an empty directory, or pass -o nonempty)",
        ),
        ("file", "kitfs: mountpoint {mnt} is not a directory"),
        (
            "badref",
            "kitfs: invalid reference 'Bad/Ref:v1': repository (Bad/Ref) name must be lowercase",
        ),
        ("notag", "kitfs: registry {host}: manifest {repo}:nope not found"),
        ("norepo", "kitfs: ModelKit nowhere/at-all:v1 not found in local storage"),
        ("localtag", "kitfs: ModelKit wide/kit:nope not found in local storage"),
        ("mounted", "kitfs: {mnt} is already a mount point (unmount it first: kitfs umount {mnt})"),
    ],
)
def test_mount_errors_are_one_clear_line_and_leave_no_mount(
    mounter: Mounter, published: Published, tmp_path: Path, case: str, message: str
) -> None:
    mnt = tmp_path / "target"
    ref = published.ref("none")
    if case == "nonempty":
        mnt.mkdir()
        (mnt / "x").write_text("x")
    elif case == "file":
        mnt.write_text("x")
    elif case != "missing":
        mnt.mkdir()
    if case == "badref":
        ref = "Bad/Ref:v1"
    elif case == "notag":
        ref = published.ref("nope")
    elif case == "norepo":
        ref = "nowhere/at-all:v1"
    elif case == "localtag":
        ref = "wide/kit:nope"
    elif case == "mounted":
        mounter.mount(ref, mnt)
    result = mounter.try_mount(ref, mnt)
    assert result.returncode != 0
    expected = message.format(mnt=mnt, host=published.registry.host, repo=published.repository)
    assert result.stderr.strip().splitlines() == [expected]
    if case == "mounted":
        assert (mnt / "Kitfile").exists()  # the first mount is untouched
    else:
        assert find_mount(mnt) is None


def test_an_unreachable_registry_is_reported(mounter: Mounter, unreachable_host: str) -> None:
    mnt = mounter.mountpoint()
    host = unreachable_host
    result = mounter.try_mount(f"{host}/some/model:v1", mnt)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"kitfs: registry {host} is unreachable: connection refused"
    ]
    assert find_mount(mnt) is None


def test_umount_of_something_not_mounted_says_so(mounter: Mounter, tmp_path: Path) -> None:
    result = mounter.run("umount", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip() == f"kitfs: {tmp_path} is not mounted"


def test_a_large_directory_lists_every_entry_once(
    mounter: Mounter, published: Published, tmp_path: Path
) -> None:
    from fs_modelkits import kitfs

    context = tmp_path / "wide"
    (context / "many").mkdir(parents=True)
    names = {f"file-{i:05d}-{'x' * 40}.txt" for i in range(3000)}
    for name in names:
        (context / "many" / name).write_bytes(name.encode())
    (context / "Kitfile").write_text(
        "manifestVersion: 1.0.0\npackage:\n  name: wide\ndatasets:\n  - name: many\n    path: many\n"
    )
    kitfs(published.home, "pack", str(context), "-t", "wide/kit:v1", *WHOLE)
    mnt = mounter.mount("wide/kit:v1", local=True)
    listed = os.listdir(mnt / "datasets" / "many")
    assert len(listed) == len(names) and set(listed) == names
    sample = sorted(names)[1234]
    assert (mnt / "datasets" / "many" / sample).read_bytes() == sample.encode()
