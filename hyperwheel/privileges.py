"""Run CLI commands as the owner of the state store.

``hyperwheel status`` and ``retry`` may be run by root. SQLite creates its
``-wal`` and ``-shm`` files as whoever opens the database first; if that were
root, the service (user ``orthanc``) could no longer open its own store. So
root first becomes the store's owner, and the files stay the service's.
"""

import os
from pathlib import Path


def act_as_store_owner(state_path: Path) -> None:
    """When root, switch to the uid/gid owning the store (or its folder)."""
    if os.geteuid() != 0:
        return
    target = state_path if state_path.exists() else state_path.parent
    if not target.exists():
        return
    info = target.stat()
    if info.st_uid == 0:
        return

    os.setgroups([])
    os.setgid(info.st_gid)
    os.setuid(info.st_uid)
