"""The Kitfile derived for a ModelPack without one: kit's own test cases, and the config kit writes.

The cases are kit's pkg/artifact/testdata/kitfile-generation/*.yaml (kitops-ml/kitops), transcribed
with their short fake digests (``sha256:aaa``) padded to valid 64-digit ones, since kitfs refuses a
manifest with malformed digests before it gets this far.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from kitfs.errors import KitfileError
from kitfs.kitfile import Kitfile
from kitfs.modelpack import derive_kitfile, go_time, layer_kinds, model_config_json
from kitfs.oci import media
from kitfs.oci.manifest import Manifest


def d(short: str) -> str:
    """``sha256:aaa`` -> a valid digest that starts with ``aaa``."""
    return "sha256:" + short.ljust(64, "0")


def manifest(
    layers: Sequence[tuple[str, str, str | None]],
    artifact: str = media.MODELPACK_ARTIFACT,
    config: str = media.MODELPACK_CONFIG,
) -> Manifest:
    body = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "artifactType": artifact,
        "config": {"mediaType": config, "size": 300, "digest": d("123")},
        "layers": [
            {
                "mediaType": f"application/vnd.cncf.model.{base}",
                "size": 100,
                "digest": d(short),
                "annotations": {"org.cncf.model.filepath": path}
                if path
                else {"org.cncf.model.unrecognized": "x"},
            }
            for base, short, path in layers
        ],
    }
    return Manifest.from_bytes(json.dumps(body).encode())


def config(*diff_ids: str) -> bytes:
    return json.dumps({"modelfs": {"type": "layers", "diffIds": [d(x) for x in diff_ids]}}).encode()


SEVEN = [
    ("weight.v1.raw", "aaa", "test-file.safetensors"),
    ("weight.config.v1.tar", "bbb", "test-config.json"),
    ("weight.config.v1.tar", "ccc", "test-config-2.json"),
    ("doc.v1.tar", "ddd", "README.md"),
    ("doc.v1.tar", "eee", "LICENSE"),
    ("dataset.v1.tar", "fff", "datasets/dataset.parquet"),
    ("code.v1.tar", "999", "src/test.sh"),
]


def entry(path: str, short: str, with_diff: bool) -> dict[str, Any]:
    out = {"path": path, "digest": d(short)}
    if with_diff:
        out["diffId"] = d(short + "1")
    return out


def expected_seven(with_diff: bool) -> dict[str, Any]:
    e = [entry(path, short, with_diff) for _, short, path in SEVEN]
    return {
        "manifestVersion": "1.0.0",
        "model": e[0] | {"parts": [e[1], e[2]]},
        "docs": [e[3], e[4]],
        "code": [e[6]],
        "datasets": [e[5]],
    }


def derived(m: Manifest, cfg: bytes) -> dict[str, Any]:
    """The derived Kitfile's config JSON (kit's cases compare structs; Go's json.Marshal writes
    the zero ``package`` struct as ``{}``, as kitfs does)."""
    out = json.loads(derive_kitfile(m, cfg, "test").to_config_json())
    assert out.pop("package") == {}
    return out


def test_kitfile_for_manifest_and_config() -> None:
    """kit case test-kitfile-for-manifest-and-config."""
    cfg = config(*(short + "1" for _, short, _ in SEVEN))
    assert derived(manifest(SEVEN), cfg) == expected_seven(True)


def test_kitfile_for_manifest_without_config() -> None:
    """kit case test-kitfile-for-manifest-without-config (a config without modelfs here)."""
    assert derived(manifest(SEVEN), b"{}") == expected_seven(False)


def test_manifest_with_multiple_model_weights() -> None:
    """kit case test-manifest-with-multiple-model-weights: later weights become model parts."""
    layers = [
        ("weight.v1.raw", "aaa", "test-file-01.safetensors"),
        ("weight.config.v1.tar", "bbb", "test-config.json"),
        ("weight.config.v1.tar", "ccc", "test-config-2.json"),
        ("weight.v1.raw", "ddd", "test-file-02.safetensors"),
        ("weight.v1.raw", "eee", "test-file-03.safetensors"),
    ]
    m = manifest(layers)
    e = [entry(path, short, True) for _, short, path in layers]
    assert derived(m, config("aaa1", "bbb1", "ccc1", "ddd1", "eee1")) == {
        "manifestVersion": "1.0.0",
        "model": e[0] | {"parts": e[1:]},
    }
    assert layer_kinds(m) == ["model", "modelpart", "modelpart", "modelpart", "modelpart"]


@pytest.mark.parametrize(
    ("case", "m", "cfg", "message"),
    [
        (
            "test-error-invalid-diffid-in-config",
            manifest([SEVEN[0]]),
            config("aaa1", "bbb1", "ccc1"),
            "invalid ModelPack config",
        ),
        (
            "test-error-invalid-layer-mediatype",
            manifest([("unrecognized.v1.raw", "aaa", "test-file.safetensors")]),
            b"{}",
            "failed to parse media type",
        ),
        (
            "test-error-invalid-layer-no-filepath-annotation",
            manifest([("weight.v1.raw", "aaa", None)]),
            b"{}",
            "unknown file path for layer",
        ),
        (
            "test-error-not-a-modelpack",
            manifest(
                [SEVEN[0]],
                artifact="application/vnd.cncf.model.unrecognized.v1+json",
                config="application/vnd.cncf.model.unrecognized.v1+json",
            ),
            b"{}",
            "not a modelpack artifact",
        ),
    ],
)
def test_kit_error_cases(case: str, m: Manifest, cfg: bytes, message: str) -> None:
    with pytest.raises(KitfileError, match=message):
        derive_kitfile(m, cfg, case)


def test_model_format_by_artifact_type_else_config() -> None:
    assert media.model_format(media.KIT_ARTIFACT, media.MODELPACK_CONFIG) == "kit"
    assert media.model_format(media.MODELPACK_ARTIFACT, media.KIT_CONFIG) == "modelpack"
    assert media.model_format(None, media.MODELPACK_CONFIG) == "modelpack"
    assert media.model_format("application/x", media.KIT_CONFIG) == "kit"
    assert media.model_format(None, "application/vnd.oci.image.config.v1+json") is None


def test_layer_media_types_parse_and_build() -> None:
    parse = media.parse_layer_media_type
    assert parse("application/vnd.cncf.model.weight.v1.raw") == media.LayerType(
        "model", "none", True, True
    )
    assert parse("application/vnd.cncf.model.weight.v1.raw+gzip") is None  # model-spec: never
    assert parse("application/vnd.kitops.modelkit.code.v1.raw+zstd") == media.LayerType(
        "code", "zstd", False, True
    )
    assert parse("application/vnd.cncf.model.doc.v1.tar+zstd") == media.LayerType(
        "docs", "zstd", True, False
    )
    build = media.layer_media_type
    assert (
        build("modelpart", "gzip-fastest", modelpack=True)
        == "application/vnd.cncf.model.weight.config.v1.tar+gzip"
    )
    assert (
        build("dataset", "none", modelpack=True, raw=True)
        == "application/vnd.cncf.model.dataset.v1.raw"
    )
    assert build("docs", "gzip", raw=True) == "application/vnd.kitops.modelkit.docs.v1.raw+gzip"
    with pytest.raises(ValueError):
        build("model", "zstd", modelpack=True, raw=True)


def test_model_config_is_go_json_of_model_spec_model() -> None:
    kitfile = Kitfile.from_yaml(
        "manifestVersion: 1.0.0\npackage:\n  name: n\n  license: MIT\nmodel:\n  path: m\n"
        "  format: onnx\n  license: MIT\n  parts:\n    - path: p\n      license: BSD\n"
    )
    created = datetime(2024, 5, 6, 7, 8, 9, 120000, tzinfo=UTC)
    body = model_config_json(kitfile, [d("aa"), d("bb")], created)
    assert (
        body
        == (
            '{"descriptor":{"createdAt":"2024-05-06T07:08:09.12Z","name":"n","licenses":["BSD","MIT"],'
            '"title":"n"},"modelfs":{"type":"layers","diffIds":["'
            + d("aa")
            + '","'
            + d("bb")
            + '"]},'
            '"config":{"format":"onnx"}}'
        ).encode()
    )
    assert model_config_json(Kitfile.from_yaml("manifestVersion: 1.0.0\n"), [], None) == (
        b'{"descriptor":{},"modelfs":{"type":"layers","diffIds":[]},"config":{}}'
    )
    assert go_time(created, 5) == "2024-05-06T07:08:09.000000005Z"
