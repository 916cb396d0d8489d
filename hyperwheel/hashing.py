"""Digests of whole files, read in chunks so memory stays flat."""

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of the file at ``path`` (``sha384``, ``sha256``, …)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)

    return digest.hexdigest()
