"""The plugin's records of the volumes it published, one JSON file per target path under the
state directory, so that a restarted plugin finds its volumes (and their credentials) again.

A record holds what is needed to mount the volume again (reference, settings, the directory of its
credentials) and to answer idempotent calls (volume id, fingerprint); never a secret. Records are
written atomically with mode 0600 in a 0700 directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kitfs.atomic import write_atomic
from kitfs.csi.access import ensure_salt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VolumeRecord:
    """One published target."""

    volume_id: str
    target: str
    reference: str
    fingerprint: str
    settings: dict[str, Any] = field(default_factory=dict)
    docker_config: str | None = None
    pid: int = 0


class StateDir:
    """``volumes/<key>.json`` records and ``secrets/<key>/config.json`` credentials."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.volumes = root / "volumes"
        self.secrets = root / "secrets"
        self.grants = root / "grants"

    def ensure(self) -> StateDir:
        for directory in (self.root, self.volumes, self.secrets):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(directory, 0o700)
        ensure_salt(self.grants)
        return self

    @staticmethod
    def key(target: str | Path) -> str:
        return hashlib.sha256(str(target).encode()).hexdigest()[:32]

    def secret_dir(self, target: str | Path) -> Path:
        return self.secrets / self.key(target)

    def load(self, target: str | Path) -> VolumeRecord | None:
        return self._read(self.volumes / f"{self.key(target)}.json")

    def save(self, record: VolumeRecord) -> None:
        body = json.dumps(asdict(record), indent=2, sort_keys=True).encode()
        write_atomic(self.volumes / f"{self.key(record.target)}.json", body, mode=0o600)

    def remove(self, target: str | Path) -> None:
        (self.volumes / f"{self.key(target)}.json").unlink(missing_ok=True)

    def records(self) -> Iterator[VolumeRecord]:
        for path in sorted(self.volumes.glob("*.json")):
            record = self._read(path)
            if record is not None:
                yield record

    def _read(self, path: Path) -> VolumeRecord | None:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return VolumeRecord(**raw)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.warning("ignoring the unreadable volume record %s: %s", path, exc)
            return None
