"""Deterministic ``<acquisition>.dicom.zip`` archives, streamed from disk.

The same members always give the same bytes: names sorted, one fixed
timestamp, fixed permissions, no compression (the Pi's CPU is the scarce
part; DICOM from the scanner is small). So an archive rebuilt after a crash
hashes the same, and Flywheel's "same name, same hash" check recognises it.
The sha384 is computed as the archive is written; nothing is held in memory.
"""

import hashlib
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Member:
    """A file on disk and its name inside the archive."""

    source: Path
    name: str


@dataclass(frozen=True)
class BuiltZip:
    path: Path
    size: int
    sha384: str
    members: int


class _HashingWriter:
    """A forward-only file: zipfile sees no ``seek`` and writes descriptors."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.hasher = hashlib.sha384()
        self.size = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.hasher.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def build_zip(members: Sequence[Member], target: Path) -> BuiltZip:
    """Write the archive to ``target`` (fsynced) and return its size and hash."""
    ordered = sorted(members, key=lambda m: m.name)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        writer = _HashingWriter(fd)
        with zipfile.ZipFile(writer, "w", zipfile.ZIP_STORED) as archive:
            for member in ordered:
                _add(archive, member)
        os.fsync(fd)
    finally:
        os.close(fd)

    return BuiltZip(target, writer.size, writer.hasher.hexdigest(), len(ordered))


def _add(archive: zipfile.ZipFile, member: Member) -> None:
    info = zipfile.ZipInfo(member.name, date_time=_FIXED_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    info.create_system = 3
    info.file_size = member.source.stat().st_size
    with open(member.source, "rb") as source, archive.open(info, "w") as sink:
        while chunk := source.read(_CHUNK):
            sink.write(chunk)
