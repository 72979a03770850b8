"""The Kitfile: strict parsing, kit's validation, the config JSON and the YAML kit prints.

Expected bytes come from kit's own test data (kitops-ml pkg/artifact/testdata/parameters/*.yaml) and
from Go's encoding/json and yaml.v3 rules.
"""

from __future__ import annotations

import json

import pytest

from kitfs.errors import KitfileError
from kitfs.kitfile import Kitfile, go_float, go_json, go_yaml_float

HEAD = "manifestVersion: 1.0.0\npackage:\n  name: test-kitfile\n"


def load(text: str) -> Kitfile:
    return Kitfile.from_yaml(text)


def error_of(text: str | bytes) -> str:
    with pytest.raises(KitfileError) as caught:
        Kitfile.from_yaml(text)
    return str(caught.value)


# -- upstream round-trip cases (pkg/artifact/testdata/parameters) ------------------------------

DATA_TYPES_YAML = """\
manifestVersion: 1.0.0
package:
  name: test-kitfile
model:
  name: test-model
  path: tmp/path/to/model
  parameters:
    test-bool: true
    test-bool-str: "true"
    test-float: 12.3
    test-negative: -123
    test-number: 123
    test-string: string
"""
DATA_TYPES_JSON = (
    '{"manifestVersion":"1.0.0","package":{"name":"test-kitfile"},"model":{"name":"test-model",'
    '"path":"tmp/path/to/model","parameters":{"test-bool":true,"test-bool-str":"true",'
    '"test-float":12.3,"test-negative":-123,"test-number":123,"test-string":"string"}}}'
)
NESTED_YAML = """\
manifestVersion: 1.0.0
package:
  name: test-kitfile
model:
  name: test-model
  path: tmp/path/to/model
  parameters:
    test-list-of-lists:
      - - a-1
        - a-2
      - - b-1
        - b-2
    test-maps:
      a:
        b:
          c:
            d:
              e: f
    test-nested-list:
      - item-a
      - item-b
      - item-object:
          - subfield-1: 1
          - subfield-2: 2
    test-nested-map:
      test-a: a
      test-b: b
      test-c: c
"""
NESTED_JSON = (
    '{"manifestVersion":"1.0.0","package":{"name":"test-kitfile"},"model":{"name":"test-model",'
    '"path":"tmp/path/to/model","parameters":{"test-list-of-lists":[["a-1","a-2"],["b-1","b-2"]],'
    '"test-maps":{"a":{"b":{"c":{"d":{"e":"f"}}}}},"test-nested-list":["item-a","item-b",'
    '{"item-object":[{"subfield-1":1},{"subfield-2":2}]}],"test-nested-map":{"test-a":"a",'
    '"test-b":"b","test-c":"c"}}}}'
)
LIST_YAML = (
    HEAD + "model:\n  name: test-model\n  path: tmp/path/to/model\n  parameters:\n"
    "    - item-a\n    - item-b\n    - item-c\n"
)
LIST_JSON = (
    '{"manifestVersion":"1.0.0","package":{"name":"test-kitfile"},"model":{"name":"test-model",'
    '"path":"tmp/path/to/model","parameters":["item-a","item-b","item-c"]}}'
)
SINGLE_YAML = (
    HEAD + "model:\n  name: test-model\n  path: tmp/path/to/model\n  parameters: |\n"
    "    test-string\n"
)
SINGLE_JSON = (
    '{"manifestVersion":"1.0.0","package":{"name":"test-kitfile"},"model":{"name":"test-model",'
    '"path":"tmp/path/to/model","parameters":"test-string\\n"}}'
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (DATA_TYPES_YAML, DATA_TYPES_JSON),
        (NESTED_YAML, NESTED_JSON),
        (LIST_YAML, LIST_JSON),
        (SINGLE_YAML, SINGLE_JSON),
    ],
    ids=["data-types", "nested", "list", "single-value"],
)
def test_upstream_parameter_cases_round_trip(text: str, expected: str) -> None:
    kitfile = load(text)
    assert kitfile.to_config_json() == expected.encode()
    assert kitfile.to_yaml() == text


def test_parameters_keep_arbitrary_nesting() -> None:
    kitfile = load(NESTED_YAML)
    params = kitfile.model["parameters"]  # type: ignore[index]
    assert params["test-maps"] == {"a": {"b": {"c": {"d": {"e": "f"}}}}}
    assert params["test-nested-list"][2] == {"item-object": [{"subfield-1": 1}, {"subfield-2": 2}]}
    assert (
        Kitfile.from_config_json(kitfile.to_config_json()).to_config_json() == NESTED_JSON.encode()
    )


# -- config JSON --------------------------------------------------------------------------------

FULL_YAML = """\
docs:
  - description: Read me
    path: README.md
datasets:
  - path: data/train.csv
    parameters: {z: 1, a: 2}
    license: CC-BY
    description: training
    name: train
code:
  - license: MIT
    description: scripts
    path: src
model:
  parameters: {b: x}
  parts:
    - type: lora
      license: MIT
      path: adapters
      name: adapter
  description: the model
  version: "2"
  format: gguf
  framework: llama.cpp
  license: Apache-2.0
  path: model
  name: slm
package:
  authors: [Alice, Bob]
  license: Apache-2.0
  description: a package
  version: 1.0.0
  name: pkg
manifestVersion: 1.0.0
"""


def test_config_json_uses_kits_field_order_whatever_the_yaml_order() -> None:
    assert load(FULL_YAML).to_config_json() == (
        b'{"manifestVersion":"1.0.0","package":{"name":"pkg","version":"1.0.0",'
        b'"description":"a package","license":"Apache-2.0","authors":["Alice","Bob"]},'
        b'"model":{"name":"slm","path":"model","license":"Apache-2.0","framework":"llama.cpp",'
        b'"format":"gguf","version":"2","description":"the model","parts":[{"name":"adapter",'
        b'"path":"adapters","license":"MIT","type":"lora"}],"parameters":{"b":"x"}},'
        b'"code":[{"path":"src","description":"scripts","license":"MIT"}],'
        b'"datasets":[{"name":"train","path":"data/train.csv","description":"training",'
        b'"license":"CC-BY","parameters":{"a":2,"z":1}}],'
        b'"docs":[{"path":"README.md","description":"Read me"}]}'
    )


def test_layer_digests_come_last_in_each_entry_and_never_in_yaml() -> None:
    kitfile = load(HEAD + "model:\n  name: m\n  path: m\ndocs:\n  - path: d\n")
    kitfile.data["model"]["digest"] = "sha256:" + "1" * 64
    kitfile.data["model"]["diffId"] = "sha256:" + "2" * 64
    kitfile.data["docs"][0]["digest"] = "sha256:" + "3" * 64
    assert kitfile.to_config_json() == (
        b'{"manifestVersion":"1.0.0","package":{"name":"test-kitfile"},"model":{"name":"m",'
        b'"path":"m","digest":"sha256:' + b"1" * 64 + b'","diffId":"sha256:' + b"2" * 64 + b'"},'
        b'"docs":[{"path":"d","digest":"sha256:' + b"3" * 64 + b'"}]}'
    )
    assert "sha256" not in kitfile.to_yaml()
    assert "digest" not in json.loads(kitfile.without_layer_info().to_config_json())["model"]


def test_package_is_always_in_json_but_omitted_from_yaml_when_empty() -> None:
    kitfile = load("manifestVersion: 1.0.0\ncode:\n  - path: src\n")
    assert kitfile.to_config_json() == (
        b'{"manifestVersion":"1.0.0","package":{},"code":[{"path":"src"}]}'
    )
    assert kitfile.to_yaml() == "manifestVersion: 1.0.0\ncode:\n  - path: src\n"


def test_docs_path_is_always_written() -> None:
    kitfile = load("manifestVersion: 1.0.0\ndocs:\n  - description: x\n")
    assert kitfile.to_config_json() == (
        b'{"manifestVersion":"1.0.0","package":{},"docs":[{"path":"","description":"x"}]}'
    )
    assert kitfile.to_yaml() == 'manifestVersion: 1.0.0\ndocs:\n  - path: ""\n    description: x\n'


def test_empty_parameters_are_kept_as_go_keeps_a_non_nil_any() -> None:
    kitfile = load(
        HEAD + "model:\n  path: m\n  parameters: {}\ndatasets:\n  - path: d\n    parameters: ~\n"
    )
    assert kitfile.to_config_json() == (
        b'{"manifestVersion":"1.0.0","package":{"name":"test-kitfile"},'
        b'"model":{"path":"m","parameters":{}},"datasets":[{"path":"d"}]}'
    )
    assert kitfile.to_yaml().endswith(
        "model:\n  path: m\n  parameters: {}\ndatasets:\n  - path: d\n"
    )


def test_go_html_escaping_in_config_json() -> None:
    kitfile = load(
        HEAD + 'model:\n  path: m\n  description: "<b>a & b</b>\\u2028\\u2029é\\t"\n'
        '  parameters:\n    "<k>": "x&y"\n'
    )
    assert kitfile.to_config_json() == (
        b'{"manifestVersion":"1.0.0","package":{"name":"test-kitfile"},"model":{"path":"m",'
        b'"description":"\\u003cb\\u003ea \\u0026 b\\u003c/b\\u003e\\u2028\\u2029\xc3\xa9\\t",'
        b'"parameters":{"\\u003ck\\u003e":"x\\u0026y"}}}'
    )
    assert go_json({"a": ["<", 1.5, None, True]}, indent=2) == (
        '{\n  "a": [\n    "\\u003c",\n    1.5,\n    null,\n    true\n  ]\n}'
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (12.3, "12.3"),
        (123.0, "123"),
        (-0.0, "-0"),
        (0.0, "0"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.5e300, "1.5e+300"),
        (0.000001, "0.000001"),
        (1e-7, "1e-7"),
        (2.5e-10, "2.5e-10"),
        (0.1 + 0.2, "0.30000000000000004"),
    ],
)
def test_go_json_float_formatting(value: float, text: str) -> None:
    assert go_float(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (12.3, "12.3"),
        (123.0, "123"),
        (100000.0, "100000"),
        (1234567.0, "1.234567e+06"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (1e21, "1e+21"),
        (-2.5, "-2.5"),
        (float("inf"), ".inf"),
    ],
)
def test_yaml_float_formatting_is_gos_shortest_g(value: float, text: str) -> None:
    assert go_yaml_float(value) == text


@pytest.mark.parametrize(
    ("yaml_value", "json_value"),
    [
        ("yes", '"yes"'),  # YAML 1.1 booleans stay strings in yaml.v3
        ("on", '"on"'),
        ("True", "true"),
        ("~", "null"),
        ("1e3", "1000"),  # a float in YAML 1.2 (PyYAML would say string)
        ("1.2e+3", "1200"),
        ("0x1F", "31"),
        ("0o17", "15"),
        ("0755", "493"),  # yaml.v3 still reads 1.1 octals
        ("1_000", "1000"),
        ("-0b11", "-3"),
        ("08", "8"),
        ("12345678901234567890", "12345678901234567890"),
        ("99999999999999999999", "100000000000000000000"),
        ("1e400", '"1e400"'),
        ("2024-01-01", '"2024-01-01"'),
        ('"12"', '"12"'),
        ("!!str 12", '"12"'),
        (".5", "0.5"),
        ("+12", "12"),
    ],
)
def test_parameter_scalars_resolve_as_yaml_v3_does(yaml_value: str, json_value: str) -> None:
    kitfile = load(HEAD + f"model:\n  path: m\n  parameters:\n    v: {yaml_value}\n")
    assert kitfile.to_config_json().endswith(f'"parameters":{{"v":{json_value}}}}}}}'.encode())


def test_numbers_read_back_from_a_config_print_as_go_float64() -> None:
    """kit decodes config JSON numbers into float64, so `kit info` prints 1234567 as 1.234567e+06."""
    config = (
        b'{"manifestVersion":"1.0.0","package":{},"model":{"path":"m","parameters":'
        b'{"big":1234567,"small":5,"f":0.5}}}'
    )
    kitfile = Kitfile.from_config_json(config)
    assert kitfile.to_yaml() == (
        "manifestVersion: 1.0.0\nmodel:\n  path: m\n  parameters:\n"
        "    big: 1.234567e+06\n    f: 0.5\n    small: 5\n"
    )
    assert kitfile.to_config_json() == (
        b'{"manifestVersion":"1.0.0","package":{},"model":{"path":"m","parameters":'
        b'{"big":1234567,"f":0.5,"small":5}}}'
    )


# -- YAML output --------------------------------------------------------------------------------


def test_yaml_output_indents_sequences_and_writes_authors_in_flow_style() -> None:
    assert load(FULL_YAML).to_yaml() == (
        "manifestVersion: 1.0.0\n"
        "package:\n"
        "  name: pkg\n"
        "  version: 1.0.0\n"
        "  description: a package\n"
        "  license: Apache-2.0\n"
        "  authors: [Alice, Bob]\n"
        "model:\n"
        "  name: slm\n"
        "  path: model\n"
        "  license: Apache-2.0\n"
        "  framework: llama.cpp\n"
        "  format: gguf\n"
        '  version: "2"\n'
        "  description: the model\n"
        "  parts:\n"
        "    - name: adapter\n"
        "      path: adapters\n"
        "      license: MIT\n"
        "      type: lora\n"
        "  parameters:\n"
        "    b: x\n"
        "code:\n"
        "  - path: src\n"
        "    description: scripts\n"
        "    license: MIT\n"
        "datasets:\n"
        "  - name: train\n"
        "    path: data/train.csv\n"
        "    description: training\n"
        "    license: CC-BY\n"
        "    parameters:\n"
        "      a: 2\n"
        "      z: 1\n"
        "docs:\n"
        "  - path: README.md\n"
        "    description: Read me\n"
    )


@pytest.mark.parametrize(
    ("value", "printed"),
    [
        ("plain text", "plain text"),
        ("true", '"true"'),
        ("yes", '"yes"'),
        ("1.0", '"1.0"'),
        ("0755", '"0755"'),
        ("2024-01-01", '"2024-01-01"'),
        ("a: b", "'a: b'"),
        ("#hash", "'#hash'"),
        ("it's", "it's"),
        ("line one\nline two", "|-\n      line one\n      line two"),
        ("two lines\n", "|\n      two lines"),
        ("héllo", "héllo"),
    ],
)
def test_yaml_strings_are_quoted_as_yaml_v3_quotes_them(value: str, printed: str) -> None:
    kitfile = load("manifestVersion: 1.0.0\ncode:\n  - path: src\n")
    kitfile.data["code"][0]["description"] = value
    assert kitfile.to_yaml() == (
        f"manifestVersion: 1.0.0\ncode:\n  - path: src\n    description: {printed}\n"
    )


# -- strict parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "manifestVersion: 1.0.0\nfoo: 1\nmodel:\n  path: x\n",
            "Kitfile: line 2: unknown field 'foo' in Kitfile",
        ),
        (
            "manifestVersion: 1.0.0\nmodel:\n  path: x\n  weights: y\n",
            "Kitfile: line 4: unknown field 'weights' in model",
        ),
        (
            "manifestVersion: 1.0.0\ndatasets:\n  - name: d\n    path: d\n    size: 3\n",
            "Kitfile: line 5: unknown field 'size' in dataset",
        ),
        (
            "manifestVersion: 1.0.0\nmodel:\n  path: x\n  digest: sha256:abc\n",
            "Kitfile: line 4: unknown field 'digest' in model",
        ),
        (
            "manifestVersion: 1.0.0\nmodel:\n  name: [a]\n  path: x\n",
            "Kitfile: line 3: name must be a string, found a list",
        ),
        (
            "manifestVersion: 1.0.0\ncode:\n  path: x\n",
            "Kitfile: line 3: code must be a list, found a mapping",
        ),
        (
            "manifestVersion: 1.0.0\nmodel:\n  - path: x\n",
            "Kitfile: line 3: model must be a mapping, found a list",
        ),
        (
            "manifestVersion: 1.0.0\npackage:\n  authors: Alice\ncode:\n  - path: x\n",
            "Kitfile: line 3: authors must be a list of strings, found a scalar",
        ),
        (
            "- manifestVersion: 1.0.0\n",
            "Kitfile: line 1: the Kitfile must be a mapping, found a list",
        ),
        (
            "manifestVersion: 1.0.0\nmodel:\n  path: x\n  path: y\n",
            'Kitfile: line 4: mapping key "path" already defined at line 3',
        ),
        (
            "manifestVersion: 1.0.0\nmodel:\n  path: x\n  parameters:\n    a: 1\n    a: 2\n",
            'Kitfile: line 6: mapping key "a" already defined at line 5',
        ),
        (
            "manifestVersion: 1.0.0\nmodel:\n  path: x\n  parameters:\n    1: a\n",
            "Kitfile: line 5: parameter keys must be strings (JSON has no other keys), found '1'",
        ),
        (
            "manifestVersion: 1.0.0\n? [a]\n: b\n",
            "Kitfile: line 2: keys in Kitfile must be field names, found a list",
        ),
        (
            "manifestVersion: 1.0.0\nmodel:\n  path: x\n  parameters: &a\n    b: *a\n",
            "Kitfile: line 4: parameters contain a recursive alias",
        ),
        (
            "manifestVersion: 1.0.0\nmodel:\n  path: x\n  parameters:\n    lr: .nan\n",
            "Kitfile: line 5: parameters cannot hold .nan (JSON has no such number)",
        ),
        ("", "Kitfile: the Kitfile is empty"),
        ("# only a comment\n", "Kitfile: the Kitfile is empty"),
    ],
)
def test_strict_parsing_names_line_and_field(text: str, message: str) -> None:
    assert error_of(text) == message


def test_invalid_yaml_is_one_line_with_position() -> None:
    message = error_of("manifestVersion: 1.0.0\nmodel:\n\tpath: x\n")
    assert message.startswith("Kitfile: invalid YAML: while scanning for the next token")
    assert "line 3, column 1" in message
    assert "\n" not in message


def test_non_utf8_kitfile_is_invalid_yaml() -> None:
    message = error_of(b"manifestVersion: 1.0.0\ncode:\n  - path: \xff\xfe\n")
    assert message == (
        "Kitfile: invalid YAML: unacceptable character #x00ff: invalid start byte "
        'in "<byte string>", position 39'
    )


def test_only_the_first_yaml_document_is_read() -> None:
    kitfile = load("manifestVersion: 1.0.0\ncode:\n  - path: a\n---\nnot: [valid, kitfile\n")
    assert kitfile.section("code") == [{"path": "a"}]


def test_merge_keys_and_aliases_in_parameters() -> None:
    kitfile = load(
        HEAD + "model:\n  path: m\n  parameters:\n    base: &b {lr: 1, wd: 2}\n"
        "    run:\n      <<: *b\n      lr: 3\n"
    )
    assert kitfile.to_config_json().endswith(
        b'"parameters":{"base":{"lr":1,"wd":2},"run":{"lr":3,"wd":2}}}}'
    )


def test_null_sections_are_empty() -> None:
    kitfile = load("manifestVersion: 1.0.0\npackage:\n  authors: ~\ncode:\n  - path: a\ndocs: ~\n")
    assert kitfile.package == {"authors": []}
    assert kitfile.section("docs") == []


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model:\n  path: x\n", "manifestVersion is required"),
        (
            "manifestVersion: v99.99.99\nmodel:\n  path: x\n",
            "invalid manifestVersion: expect 1.0.0 but got v99.99.99",
        ),
        (
            "manifestVersion: 1.0.0\nmodel:\n  name: m\n  path: a\ncode:\n  - path: a\n"
            "datasets:\n  - name: d\n    path: a\n",
            "model m, code layer 0 and dataset layer 0 use the same path a",
        ),
        (
            "manifestVersion: 1.0.0\nmodel:\n  path: test-path/\ndatasets:\n  - path: ./test-path\n",
            "model  and dataset layer 0 use the same path test-path",
        ),
        (
            "manifestVersion: 1.0.0\ncode:\n  - path: .\ndocs:\n  - path: ''\n",
            "code layer 0 and docs layer 0 use the same path .",
        ),
        (
            "manifestVersion: 1.0.0\nmodel:\n  name: m\n  path: /abs/model/\n",
            "absolute paths are not supported in a Kitfile (path /abs/model in model m)",
        ),
        (
            "manifestVersion: 1.0.0\ndatasets:\n  - path: data/../../outside\n",
            "paths outside the context directory are not supported in a Kitfile "
            "(path ../outside in dataset layer 0)",
        ),
        (
            "manifestVersion: 1.0.0\nmodel:\n  path: m\n  parts:\n    - name: p\n      path: p\n"
            "      type: bad type\n",
            "modelpart p has invalid type (must be alphanumeric with dots, dashes, and underscores)",
        ),
        (
            "manifestVersion: 1.0.0\nmodel:\n  path: m\n  parts:\n    - name: p\n      path: p\n"
            f"      type: {'t' * 65}\n",
            "modelpart p type is too long (must be fewer than 64 characters)",
        ),
        (
            "manifestVersion: 1.0.0\nmodel:\n  path: m\n  parts:\n    - name: p\n      path: p\n"
            "      type: tÿpe\n",
            "modelpart p has invalid type (must be alphanumeric with dots, dashes, and underscores)",
        ),
        (
            "manifestVersion: 1.0.0\ncode:\n  - path: http://example.com/x\n",
            "invalid path for code (http://example.com/x): HTTP urls are not supported in paths "
            "(http://example.com/x); invalid path for code (http://example.com/x): only local "
            "paths are permitted",
        ),
        (
            "manifestVersion: 1.0.0\nmodel:\n  path: s3://bucket/model\n",
            "invalid path for model: only local paths and ModelKit references are permitted",
        ),
        (
            "manifestVersion: 1.0.0\ndatasets:\n  - path: other-kit:v1\n",
            "invalid path for dataset (other-kit:v1): only local paths are permitted",
        ),
        (
            "manifestVersion: 1.0.0\ndocs:\n  - path: ftp://x/y\n",
            "invalid path for doc (ftp://x/y): only local paths are permitted; invalid path for "
            "doc (ftp://x/y): unrecognized URL in path: ftp://x/y",
        ),
    ],
)
def test_validation_messages(text: str, message: str) -> None:
    assert error_of(text) == f"Kitfile: invalid Kitfile: {message}"


def test_validation_reports_every_problem_sorted() -> None:
    assert error_of(
        "manifestVersion: 2\nmodel:\n  name: m\n  path: /m\ncode:\n  - path: ../c\n"
    ) == (
        "Kitfile: invalid Kitfile: absolute paths are not supported in a Kitfile (path /m in "
        "model m); invalid manifestVersion: expect 1.0.0 but got 2; paths outside the context "
        "directory are not supported in a Kitfile (path ../c in code layer 0)"
    )


def test_a_kitfile_without_layers_is_valid() -> None:
    """kit packs such a Kitfile into a ModelKit with zero layers (upstream test_empty-kitfile)."""
    kitfile = load(HEAD)
    assert kitfile.entries() == []
    assert kitfile.to_config_json() == (
        b'{"manifestVersion":"1.0.0","package":{"name":"test-kitfile"}}'
    )


def test_model_reference_is_valid_and_makes_no_layer() -> None:
    kitfile = load(
        HEAD + "model:\n  path: other-kit:v1\n  parts:\n    - name: p\n      path: extra.bin\n"
    )
    assert [(e.kind, e.path) for e in kitfile.entries()] == [("modelpart", "extra.bin")]


def test_entries_follow_kits_layer_order() -> None:
    entries = load(FULL_YAML).entries()
    assert [(e.kind, e.index, e.path, e.name) for e in entries] == [
        ("model", 0, "model", "slm"),
        ("modelpart", 0, "adapters", "adapter"),
        ("code", 0, "src", "src"),
        ("dataset", 0, "data/train.csv", "train"),
        ("docs", 0, "README.md", "README.md"),
    ]


def test_config_json_that_is_not_a_kitfile_is_refused() -> None:
    with pytest.raises(KitfileError, match="^config is not valid JSON"):
        Kitfile.from_config_json(b"{nope")
    with pytest.raises(KitfileError, match="^config is not a Kitfile: expected a JSON object$"):
        Kitfile.from_config_json(b"[]")
