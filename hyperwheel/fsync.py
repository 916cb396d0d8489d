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


def fsync_folders(root: Path, folders: set[Path]) -> None:
    """fsync each folder and every folder between it and ``root``, once each."""
    pending = set()
    for folder in folders:
        while folder != root and folder.is_relative_to(root):
            pending.add(folder)
            folder = folder.parent
    pending.add(root)
    for folder in sorted(pending, key=lambda f: len(f.parts), reverse=True):
        if folder.exists():
            fsync_path(folder)
