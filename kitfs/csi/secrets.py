"""Registry credentials from a volume's ``nodePublishSecretRef``: a ``kubernetes.io/dockerconfigjson``
Secret (key ``.dockerconfigjson``) or the older ``.dockercfg``.

Only user names and passwords (``auth`` or ``username``/``password``) are kept: a Secret cannot name
credential helpers, which would run programs on the node. The result is written as a docker
``config.json`` in a 0700 directory under the plugin's state directory, mode 0600, for the volume's
daemon (``DOCKER_CONFIG``), and removed when the volume is unpublished. Nothing here logs a secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kitfs.atomic import write_atomic
from kitfs.csi.errors import CsiError

DOCKERCONFIGJSON = ".dockerconfigjson"
DOCKERCFG = ".dockercfg"


def docker_auths(secrets: Mapping[str, str]) -> dict[str, dict[str, str]] | None:
    """The ``auths`` of a dockerconfigjson (or dockercfg) Secret; None when there is none."""
    if not secrets:
        return None
    if DOCKERCONFIGJSON in secrets:
        raw = _json(secrets[DOCKERCONFIGJSON], DOCKERCONFIGJSON)
        auths = raw.get("auths")
    elif DOCKERCFG in secrets:
        auths = _json(secrets[DOCKERCFG], DOCKERCFG)
    else:
        raise CsiError(
            "INVALID_ARGUMENT",
            "the volume's secret has no .dockerconfigjson key: create it with `kubectl create "
            "secret docker-registry`",
        )
    if not isinstance(auths, dict):
        raise CsiError("INVALID_ARGUMENT", "the volume's secret has no auths object")
    kept = {}
    for registry, entry in auths.items():
        credentials = _credentials(entry)
        if isinstance(registry, str) and credentials:
            kept[registry] = credentials
    if not kept:
        raise CsiError(
            "INVALID_ARGUMENT",
            "the volume's secret names no registry with a user name and password",
        )
    return kept


def _json(text: str, key: str) -> dict[str, Any]:
    try:
        raw = json.loads(text)
    except ValueError:
        raise CsiError("INVALID_ARGUMENT", f"the volume's secret: {key} is not JSON") from None
    if not isinstance(raw, dict):
        raise CsiError("INVALID_ARGUMENT", f"the volume's secret: {key} is not a JSON object")
    return raw


def _credentials(entry: Any) -> dict[str, str] | None:
    if not isinstance(entry, dict):
        return None
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, sep, _ = base64.b64decode(auth, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return {"auth": auth} if sep and user else None
    name, password = entry.get("username"), entry.get("password")
    if isinstance(name, str) and name and isinstance(password, str):
        token = base64.b64encode(f"{name}:{password}".encode()).decode("ascii")
        return {"auth": token}
    return None


def write_docker_config(directory: Path, auths: Mapping[str, Mapping[str, str]]) -> Path:
    """``directory/config.json`` (0600, in a 0700 directory) holding ``auths``; returns directory."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    body = json.dumps({"auths": dict(auths)}, indent=2).encode()
    write_atomic(directory / "config.json", body, mode=0o600)
    return directory


def remove_docker_config(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
