"""Making files durable: the writes, the rename and the folder entry."""

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a folder by path (a folder's entry list is data too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_folders(root: Path, relative: Path, mode: int = 0o750) -> Path:
    """Create ``root/relative`` folder by folder, fsyncing each new entry."""
    current = root
    for part in relative.parts:
        child = current / part
        try:
            child.mkdir(mode=mode)
        except FileExistsError:
            pass
        else:
            fsync_path(current)
        current = child

    return current


def replace_durably(temporary: Path, final: Path) -> None:
    """Rename into place and fsync the folder that now holds it.

    The temporary folder is not synced: after a power cut a leftover there is
    only a stray partial file, and those are cleared at start-up.
    """
    temporary.replace(final)
    fsync_path(final.parent)
