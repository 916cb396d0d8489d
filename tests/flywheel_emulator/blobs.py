"""File contents on disk, written as they stream in and hashed on the way."""

from __future__ import annotations

import hashlib
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

HASH_PREFIX = "v0-sha384-"


def flywheel_hash(sha384_hex: str) -> str:
    return HASH_PREFIX + sha384_hex


@dataclass(frozen=True)
class StoredBlob:
    path: Path
    size: int
    sha384_hex: str

    @property
    def flywheel_hash(self) -> str:
        return flywheel_hash(self.sha384_hex)


class BlobStore:
    """Keeps every uploaded body as its own file under ``root``.

    Uploads may be near a gigabyte, so bodies go straight to disk chunk by
    chunk and are never held whole in memory.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    async def receive(self, chunks: AsyncIterator[bytes]) -> StoredBlob:
        path = self.root / uuid.uuid4().hex
        digest = hashlib.sha384()
        size = 0

        try:
            with path.open("wb") as handle:
                async for chunk in chunks:
                    digest.update(chunk)
                    handle.write(chunk)
                    size += len(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

        return StoredBlob(path=path, size=size, sha384_hex=digest.hexdigest())

    def discard(self, blob: StoredBlob) -> None:
        blob.path.unlink(missing_ok=True)


def zip_member_count(path: Path) -> int | None:
    """Count archive members the way Flywheel reports them, None if not a zip."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            return sum(1 for member in archive.infolist() if not member.is_dir())
    except zipfile.BadZipFile:
        return None


def zip_members(path: Path) -> list[dict[str, object]]:
    with zipfile.ZipFile(path) as archive:
        return [
            {
                "path": member.filename,
                "size": member.file_size,
                "timestamp": _zip_timestamp(member.date_time),
                "comment": member.comment.decode("utf-8", "replace"),
            }
            for member in archive.infolist()
            if not member.is_dir()
        ]


def _zip_timestamp(date_time: tuple[int, int, int, int, int, int]) -> str:
    year, month, day, hour, minute, second = date_time
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
