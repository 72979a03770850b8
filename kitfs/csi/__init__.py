"""kitfs as a Kubernetes CSI node plugin: ModelKits mounted lazily and verified into pods.

``kitfs csi`` serves the CSI v1 Identity and Node services over gRPC on a unix socket
(:mod:`kitfs.csi.server`). Each published volume is one kitfs mount daemon, forked by a resident
spawner process that has the daemon code loaded already (:mod:`kitfs.csi.spawner`), so a publish on a
warm cache returns in a fraction of a second and one volume's failure leaves the others alone.
:mod:`kitfs.csi.volumes` keeps the per-target bookkeeping (idempotency, repair of a volume whose
daemon died, what survives a plugin restart) and :mod:`kitfs.csi.spec` turns a request's attributes
into mount settings. The protobuf messages (``csi.proto``, package ``csi.v1``) are written here and
their Python modules generated beside it.
"""

from __future__ import annotations

DRIVER_NAME = "kitfs.kitops.dev"
