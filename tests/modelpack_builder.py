"""CNCF ModelPacks built by hand, as modctl or kit would write them, and pushed to a real registry.

Independent of kitfs on purpose: tars come from Python's ``tarfile``, compression from ``gzip`` and
``zstandard``, and the media types, annotation names and config shape are spelled out here from
modelpack/model-spec (specs-go/v1/mediatype.go, annotations.go, config.go) and kit's
pkg/lib/constants/mediatype, so that a kitfs reader is never checked against a kitfs writer.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from typing import Any

import httpx
import zstandard
from helpers import payload
from registry import RegistryServer

ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_TYPE = "application/vnd.cncf.model.config.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
FILEPATH = "org.cncf.model.filepath"
FILE_METADATA = "org.cncf.model.file.metadata+json"
KITFILE_ANNOTATION = "ml.kitops.modelkit.kitfile"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_of(files: dict[str, bytes], mode: int = 0o644) -> bytes:
    """A tar of ``files`` (path -> bytes) with a directory entry for every parent, sorted."""
    names: set[str] = set()
    for path in files:
        parts = path.split("/")
        names.update("/".join(parts[:i]) for i in range(1, len(parts)))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(names | set(files)):
            info = tarfile.TarInfo(name)
            if name in files:
                info.size = len(files[name])
                info.mode = mode
                tar.addfile(info, io.BytesIO(files[name]))
            else:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
    return buffer.getvalue()


@dataclass
class Layer:
    """One layer: its media type, blob, uncompressed digest (diffId) and annotations."""

    media_type: str
    blob: bytes
    diff_id: str
    annotations: dict[str, str]

    def descriptor(self) -> dict[str, Any]:
        return {
            "mediaType": self.media_type,
            "digest": sha256(self.blob),
            "size": len(self.blob),
            "annotations": self.annotations,
        }


def tar_layer(base: str, path: str, files: dict[str, bytes], compression: str = "") -> Layer:
    """A ``application/vnd.cncf.model.<base>.v1.tar[+gzip|+zstd]`` layer of ``files`` at ``path``."""
    tar = tar_of(files)
    blob = {
        "": lambda b: b,
        "gzip": lambda b: gzip.compress(b, mtime=0),
        "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
    }[compression](tar)
    suffix = f"+{compression}" if compression else ""
    return Layer(
        f"application/vnd.cncf.model.{base}.v1.tar{suffix}", blob, sha256(tar), {FILEPATH: path}
    )


def raw_layer(base: str, path: str, data: bytes, mode: int = 0o644, **meta: Any) -> Layer:
    """A ``application/vnd.cncf.model.<base>.v1.raw`` layer: the file itself, with model-spec
    file metadata (``meta`` overrides fields, e.g. a wrong size)."""
    metadata = {
        "name": path.rsplit("/", 1)[-1],
        "mode": mode,
        "uid": 0,
        "gid": 0,
        "size": len(data),
        "mtime": "2025-01-02T03:04:05Z",
        "typeflag": 48,
    } | meta
    return Layer(
        f"application/vnd.cncf.model.{base}.v1.raw",
        data,
        sha256(data),
        {FILEPATH: path, FILE_METADATA: json.dumps(metadata)},
    )


@dataclass
class ModelPack:
    """A ModelPack's blobs and manifest, as pushed."""

    layers: list[Layer]
    config: bytes
    manifest: bytes
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def model_config(layers: list[Layer], name: str = "") -> bytes:
    """A model-spec config (specs-go/v1 Model): descriptor, modelfs with one diffId per layer."""
    descriptor = {"name": name, "family": "test"} if name else {"family": "test"}
    return json.dumps(
        {
            "descriptor": descriptor,
            "modelfs": {"type": "layers", "diffIds": [layer.diff_id for layer in layers]},
            "config": {"format": "safetensors"},
        }
    ).encode()


def build(
    layers: list[Layer],
    *,
    kitfile: dict[str, Any] | None = None,
    config: bytes | None = None,
    artifact_type: str | None = ARTIFACT_TYPE,
) -> ModelPack:
    """The manifest of ``layers``; ``kitfile`` goes into kit's Kitfile annotation when given."""
    config = model_config(layers) if config is None else config
    annotations = {"org.opencontainers.image.created": "2025-01-02T03:04:05Z"}
    if kitfile is not None:
        annotations[KITFILE_ANNOTATION] = json.dumps(kitfile)
    manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if artifact_type:
        manifest["artifactType"] = artifact_type
    manifest["config"] = {"mediaType": CONFIG_TYPE, "digest": sha256(config), "size": len(config)}
    manifest["layers"] = [layer.descriptor() for layer in layers]
    manifest["annotations"] = annotations
    return ModelPack(layers, config, json.dumps(manifest).encode(), annotations)


def upload_blob(client: httpx.Client, repository: str, data: bytes) -> None:
    location = client.post(f"/v2/{repository}/blobs/uploads/").headers["location"]
    sep = "&" if "?" in location else "?"
    done = client.put(f"{location}{sep}digest={sha256(data)}", content=data)
    assert done.status_code == 201, done.text


def put_manifest(
    client: httpx.Client, repository: str, tag: str, body: bytes, media_type: str = OCI_MANIFEST
) -> None:
    done = client.put(
        f"/v2/{repository}/manifests/{tag}", content=body, headers={"Content-Type": media_type}
    )
    assert done.status_code == 201, done.text


def push(registry: RegistryServer, repository: str, tag: str, pack: ModelPack) -> str:
    """Upload a ModelPack's blobs and manifest under ``tag``; return the manifest digest."""
    with httpx.Client(base_url=registry.url, trust_env=False) as client:
        for blob in (pack.config, *(layer.blob for layer in pack.layers)):
            upload_blob(client, repository, blob)
        put_manifest(client, repository, tag, pack.manifest)
    return pack.digest


def fetch_manifest(registry: RegistryServer, repository: str, tag: str) -> bytes:
    with httpx.Client(base_url=registry.url, trust_env=False) as client:
        answer = client.get(f"/v2/{repository}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
        assert answer.status_code == 200, answer.text
        return answer.content


# -- the sample ModelPack the verb and mount tests read ---------------------------------------

WEIGHTS = payload(300_000, "weights")
ADAPTER = payload(40_000, "adapter")
FILES = {
    "model.safetensors": WEIGHTS,
    "tokenizer/tokenizer.json": b'{"vocab": 3}\n',
    "tokenizer/vocab.txt": b"a\nb\nc\n",
    "generation_config.json": b'{"temperature": 0.7}\n',
    "README.md": b"# a hand-made ModelPack\n",
    "src/infer.py": b"print('infer')\n",
    "src/lib/util.py": b"X = 1\n",
    "data/eval.jsonl": b'{"q": 1}\n{"q": 2}\n',
    "extra/adapter.bin": ADAPTER,
}


def modctl_style() -> ModelPack:
    """A ModelPack as another tool writes it: no Kitfile annotation, every layer format, two
    weight layers, layers in no kit order."""
    return build(
        [
            raw_layer("weight", "model.safetensors", WEIGHTS, mode=0o640),
            tar_layer(
                "weight.config",
                "tokenizer",
                {k: v for k, v in FILES.items() if k.startswith("tokenizer/")},
                "gzip",
            ),
            raw_layer("weight.config", "generation_config.json", FILES["generation_config.json"]),
            tar_layer("doc", "README.md", {"README.md": FILES["README.md"]}),
            tar_layer(
                "code", "src", {k: v for k, v in FILES.items() if k.startswith("src/")}, "zstd"
            ),
            raw_layer("dataset", "data/eval.jsonl", FILES["data/eval.jsonl"]),
            tar_layer("weight", "extra/adapter.bin", {"extra/adapter.bin": ADAPTER}),
        ]
    )


DERIVED_KITFILE = {
    "manifestVersion": "1.0.0",
    "model": {
        "path": "model.safetensors",
        "parts": [
            {"path": "tokenizer"},
            {"path": "generation_config.json"},
            {"path": "extra/adapter.bin"},
        ],
    },
    "code": [{"path": "src"}],
    "datasets": [{"path": "data/eval.jsonl"}],
    "docs": [{"path": "README.md"}],
}
