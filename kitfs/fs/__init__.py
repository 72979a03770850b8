"""The mount: a ModelKit as a lazy, verified, read-only FUSE file system (pyfuse3 on trio).

``tree`` builds the inode tree (pure), ``source`` finds manifests and blobs, ``layerstore`` fetches,
verifies, decompresses and indexes layers through the cache (``kitfs.storage.cache``),
``operations`` answers the kernel, ``mount`` runs the daemon, ``mounthelper`` is ``mount.kitfs``.
"""
