"""registries.conf (containers-registries.conf(5)) as kitfs reads it: which file, what it means,
and one clear line naming the file and line when it is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import cli, fails

from kitfs.oci.registries_conf import RegistriesConfError, config_path, load, parse

GOOD = """\
unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "origin.example:5000/team"
location = "origin.example:5000/team"
insecure = true

[[registry.mirror]]
location = "mirror-a.local/team"

[[registry.mirror]]
location = "mirror-b.local:5000/cache/team"
insecure = true

[[registry]]
location = "origin.example:5000"

[[registry]]
prefix = "*.corp.example"

[[registry.mirror]]
location = "corp-mirror.local"
"""


def test_longest_prefix_wins_and_mirrors_keep_their_order(tmp_path: Path) -> None:
    conf = parse(GOOD, tmp_path / "registries.conf")
    entry = conf.find("origin.example:5000/team/model")
    assert entry is not None and entry.insecure
    assert [m.location for m in entry.mirrors] == [
        "mirror-a.local/team",
        "mirror-b.local:5000/cache/team",
    ]
    assert [m.insecure for m in entry.mirrors] == [False, True]
    assert entry.rewrite("origin.example:5000/team/model", entry.mirrors[1].location) == (
        "mirror-b.local:5000/cache/team/model"
    )
    other = conf.find("origin.example:5000/other/model")
    assert other is not None and other.mirrors == ()
    assert conf.find("origin.example:5000/teamster/x") is other  # a prefix matches whole components
    assert conf.find("elsewhere.example/x") is None


def test_wildcard_prefix_matches_hosts_under_the_domain(tmp_path: Path) -> None:
    conf = parse(GOOD, tmp_path / "registries.conf")
    entry = conf.find("reg.corp.example/ml/model")
    assert entry is not None and entry.wildcard
    assert (
        entry.rewrite("reg.corp.example/ml/model", "corp-mirror.local")
        == "corp-mirror.local/ml/model"
    )
    assert conf.find("corp.example.evil/ml/model") is None


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ('[[registry]]\nlocation = "a"\ninsecure = tru\n', 3, "not valid TOML"),
        (
            '[[registry]]\nlocation = "a"\n\n[[registry]]\nlocaton = "b"\n',
            4,
            "unknown key 'locaton'",
        ),
        (
            '[[registry]]\nlocation = "a"\n[[registry]]\ninsecure = "yes"\nlocation = "b"\n',
            3,
            "insecure must be true or false",
        ),
        ('\n\n[[registry]]\nprefix = "*.x.example"\nlocation = "m"\n', 3, "wildcard"),
        (
            '[[registry]]\nlocation = "a"\n[[registry.mirror]]\ninsecure = true\n',
            1,
            "needs a location",
        ),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file_and_line(
    tmp_path: Path, text: str, line: int, reason: str
) -> None:
    path = tmp_path / "registries.conf"
    with pytest.raises(RegistriesConfError) as caught:
        parse(text, path)
    message = str(caught.value)
    assert message.startswith(f"{path}: line {line}: "), message
    assert reason in message and "\n" not in message


def test_version_1_tables_are_refused_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(RegistriesConfError, match=r"version 1 .*\[\[registry\]\]"):
        parse('[registries.search]\nregistries = ["docker.io"]\n', tmp_path / "r.conf")


def test_the_cli_prints_the_parse_error_as_one_line(tmp_path: Path) -> None:
    conf = tmp_path / "registries.conf"
    conf.write_text('[[registry]]\nlocation = "127.0.0.1:1"\n[[registry.mirror]\nlocation = "x"\n')
    line = fails(
        cli(
            tmp_path / "home",
            "info",
            "--remote",
            "127.0.0.1:1/a/b:v1",
            "--registries-conf",
            str(conf),
        ),
        code=2,
    )
    assert line.startswith(f"kitfs: {conf}: line 3: ")


def test_search_order_flag_then_environment_then_user_then_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag, env, user = (
        tmp_path / "flag.conf",
        tmp_path / "env.conf",
        tmp_path / "cfg" / "kitfs" / "registries.conf",
    )
    for path in (flag, env, user):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("KITFS_REGISTRIES_CONF", str(env))
    assert config_path(str(flag)) == flag
    assert config_path(None) == env
    monkeypatch.delenv("KITFS_REGISTRIES_CONF")
    assert config_path(None) == user
    user.unlink()
    assert config_path(None) in (None, Path("/etc/kitfs/registries.conf"))
    monkeypatch.setenv("KITFS_REGISTRIES_CONF", str(tmp_path / "missing.conf"))
    with pytest.raises(RegistriesConfError, match="KITFS_REGISTRIES_CONF names .* does not exist"):
        load(None)
