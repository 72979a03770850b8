"""kit's Kitfile validation cases, ported from kitops-ml pkg/artifact/testdata/validation/*.yaml.

Each case keeps its upstream file name as its test id, its Kitfile, and its ``errRegexp`` (empty:
the Kitfile is valid). Upstream runs them through ``KitFile.LoadModel`` (yaml.v3, KnownFields, then
``Validate``); here through :meth:`Kitfile.from_yaml`, which does the same. Cases marked
"same table" are the code/docs/modelpart rows of upstream families whose other rows are quoted.
"""

from __future__ import annotations

import re

import pytest

from kitfs.errors import KitfileError
from kitfs.kitfile import Kitfile

H = "manifestVersion: 1.0.0\n"
CASES: list[tuple[str, str, str]] = [
    ("absolute-path-for-prompts.yaml", H + "prompts:\n  - path: /tmp/skills/personal/\n", "absolute paths are not supported in a Kitfile"),
    ("bad-manifest-version.yaml", "manifestVersion: v99.99.99\n", "invalid manifestVersion"),
    ("duplicate-path-in-kitfile_1.yaml", H + "datasets:\n  - path: test-path\ncode:\n  - path: test-path\n", "use the same path test-path"),
    ("duplicate-path-in-kitfile_2.yaml", H + "model:\n  path: test-path\ncode:\n  - path: test-path\n", "use the same path test-path"),
    ("duplicate-path-in-kitfile_3.yaml", H + "model:\n  path: test-path/\ndatasets:\n  - path: test-path\n", "use the same path test-path"),
    ("duplicate-path-in-kitfile_4.yaml", H + "model:\n  path: test-path/\n  parts:\n    - path: ./test-path\n", "use the same path test-path"),
    ("duplicate-path-in-kitfile_5.yaml", H + "model:\n  path: test-path/\n  parts:\n    - path: ./some/meandering/../../test-path\n", "use the same path test-path"),
    ("duplicate-path-with-mcpserver.yaml", H + "code:\n  - path: filesystem.mcpb\nmcpServers:\n  - name: filesystem\n    path: filesystem.mcpb\n", "use the same path filesystem.mcpb"),
    ("http-path-for-model.yaml", H + "model:\n  path: https://example.com\n", "invalid path for model.*HTTP urls are not supported in paths"),
    ("http-path-for-prompts.yaml", H + "prompts:\n  - path: https://example.com\n", "invalid path for prompt.*HTTP urls are not supported in paths"),
    ("http-path-for-code.yaml (same table)", H + "code:\n  - path: https://example.com\n", "invalid path for code.*HTTP urls are not supported in paths"),
    ("http-path-for-datasets.yaml (same table)", H + "datasets:\n  - path: https://example.com\n", "invalid path for dataset.*HTTP urls are not supported in paths"),
    ("http-path-for-docs.yaml (same table)", H + "docs:\n  - path: https://example.com\n", "invalid path for doc.*HTTP urls are not supported in paths"),
    ("http-path-for-modelpart.yaml (same table)", H + "model:\n  path: m\n  parts:\n    - path: https://example.com\n", "invalid path for model part.*HTTP urls are not supported in paths"),
    ("invalid-model-part-type.yaml", H + "model:\n  path: test-path\n  parts:\n    - path: part-path\n      type: contains a space\n", "has invalid type"),
    ("invalid-model-part-type-length.yaml", H + "model:\n  path: test-path\n  parts:\n    - path: part-path\n      type: " + "a" * 65 + "\n", "type is too long"),
    ("mcpserver-duplicate-name.yaml", H + "mcpServers:\n  - name: filesystem\n    path: filesystem.mcpb\n  - name: filesystem\n    path: other.mcpb\n", "duplicate mcpServer name filesystem"),
    ("mcpserver-missing-name.yaml", H + "mcpServers:\n  - path: filesystem.mcpb\n", "mcpServer with path filesystem.mcpb must have a name"),
    ("mcpserver-non-mcpb-path.yaml", H + "mcpServers:\n  - name: filesystem\n    path: filesystem.zip\n", "invalid path for mcpServer.*path must point to a single .mcpb file"),
    ("mcpserver-valid.yaml", H + "mcpServers:\n  - name: filesystem\n    path: filesystem.mcpb\n  - name: postgres\n    path: postgres.mcpb\n", ""),
    ("modelkit-ref-for-datasets.yaml", H + "datasets:\n  - path: docker.io/kit-org/kit-repo:latest\n", "invalid path for dataset.*only local paths are permitted"),
    ("modelkit-ref-for-prompts.yaml", H + "prompts:\n  - path: docker.io/kit-org/kit-repo:latest\n", "invalid path for prompt.*only local paths are permitted"),
    ("modelkit-ref-for-code.yaml (same table)", H + "code:\n  - path: docker.io/kit-org/kit-repo:latest\n", "invalid path for code.*only local paths are permitted"),
    ("modelkit-ref-for-docs.yaml (same table)", H + "docs:\n  - path: docker.io/kit-org/kit-repo:latest\n", "invalid path for doc.*only local paths are permitted"),
    ("modelkit-ref-for-modelpart.yaml (same table)", H + "model:\n  path: m\n  parts:\n    - path: docker.io/kit-org/kit-repo:latest\n", "invalid path for model part.*only local paths are permitted"),
    ("modelkit-ref-for-model.yaml (same table)", H + "model:\n  path: docker.io/kit-org/kit-repo:latest\n", ""),
    ("relative-path-outside-context-for-datasets.yaml", H + "datasets:\n  - path: data/../../outside\n", r"paths outside the context directory are not supported in a Kitfile \(path ../outside in dataset layer 0\)"),
    ("relative-path-outside-context-for-prompts.yaml", H + "prompts:\n  - path: ../outside/skills/personal/\n", r"paths outside the context directory are not supported in a Kitfile \(path ../outside/skills/personal in prompt layer 0\)"),
    ("relative-path-within-context-allowed.yaml", H + "code:\n  - path: src/../lib\nprompts:\n  - path: ./skills/personal/\n", ""),
    ("remote-dataset-collides-with-code.yaml", H + "datasets:\n  - path: data/train\n    remotePath: docker.io/kit-org/kit-repo:latest\ncode:\n  - path: data/train/code\n", r"uses a path \(data[\\/]train[\\/]code\) that is within the path for a remote dataset"),
    ("remote-dataset-collides-with-model.yaml", H + "model:\n  path: data/train/model.bin\ndatasets:\n  - path: data/train\n    remotePath: docker.io/kit-org/kit-repo:latest\n", r"uses a path \(data[\\/]train[\\/]model.bin\) that is within the path for a remote dataset"),
    ("remote-dataset-collides-with-nested-dataset.yaml", H + "datasets:\n  - path: data/train\n    remotePath: docker.io/kit-org/kit-repo:latest\n  - path: data/train/extra\n", r"uses a path \(data[\\/]train[\\/]extra\) that is within the path for a remote dataset"),
    ("remote-dataset-modelkit-ref.yaml", H + "datasets:\n  - path: data/train\n    remotePath: docker.io/kit-org/kit-repo:latest\n", ""),
    # The stored upstream file predates ModelKit-reference remotes ("only S3 URLs are supported");
    # current kit's message, from Validate, adds "and ModelKit references".
    ("remote-dataset-must-use-s3.yaml", H + "datasets:\n  - path: some/local/path\n    remotePath: mybucket.s3.us-east-2.amazonaws.com\n    remoteHash: testhash\n", "only S3 URLs and ModelKit references are supported for remote dataset paths"),
    ("remote-dataset-requires-hash.yaml", H + "datasets:\n  - path: some/local/path\n    remotePath: s3://mybucket/mykey\n", "remoteHash is required when remote dataset paths are used"),
    ("remote-dataset-sibling-paths-allowed.yaml", H + "model:\n  path: models/main.bin\ndatasets:\n  - path: data/train\n    remotePath: docker.io/kit-org/kit-repo:latest\n  - path: data/train-eval\n  - path: data/eval\ncode:\n  - path: code\n", ""),
    ("remote-datasets-supported.yaml", H + "datasets:\n  - path: some/local/path\n    remotePath: s3://mybucket/mykey\n    remoteHash: testhash\n", ""),
    ("s3-path-for-datasets.yaml", H + "datasets:\n  - path: s3://test-s3/key\n", "invalid path for dataset.*only local paths are permitted"),
    ("s3-path-for-mcpserver.yaml", H + "mcpServers:\n  - name: filesystem\n    path: s3://test-s3/key\n", "invalid path for mcpServer.*only local paths are permitted"),
    ("s3-path-for-model.yaml", H + "model:\n  path: s3://test-s3/key\n", "invalid path for model.*only local paths and ModelKit references are permitted"),
    ("s3-path-for-prompts.yaml", H + "prompts:\n  - path: s3://test-s3/key\n", "invalid path for prompt.*only local paths are permitted"),
    ("s3-path-for-code.yaml (same table)", H + "code:\n  - path: s3://test-s3/key\n", "invalid path for code.*only local paths are permitted"),
    ("s3-path-for-docs.yaml (same table)", H + "docs:\n  - path: s3://test-s3/key\n", "invalid path for doc.*only local paths are permitted"),
    ("s3-path-for-modelpart.yaml (same table)", H + "model:\n  path: m\n  parts:\n    - path: s3://test-s3/key\n", "invalid path for model part.*only local paths are permitted"),
    # Not upstream files: kit's Validate rules for remoteHash without remotePath.
    ("remoteHash without remotePath", H + "datasets:\n  - path: d\n    remoteHash: x\n", "remote hash is only applicable when remotePath is set"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kitfile", "err_regexp"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_upstream_validation_case(kitfile: str, err_regexp: str) -> None:
    if not err_regexp:
        Kitfile.from_yaml(kitfile)
        return
    with pytest.raises(KitfileError) as info:
        Kitfile.from_yaml(kitfile)
    assert re.search(err_regexp, str(info.value)), str(info.value)
