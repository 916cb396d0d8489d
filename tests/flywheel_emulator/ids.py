"""Identifiers that look and sort like the Mongo ObjectIds Flywheel hands out."""

from __future__ import annotations

import itertools
import re
import secrets
import time

OBJECT_ID_PATTERN = re.compile(r"^[0-9a-f]{24}$")


class ObjectIdFactory:
    """Makes 24-hex-digit ids that increase in creation order.

    Clients page through listings with ``after_id``, which only works when ids
    sort the way containers were created, so the layout follows ObjectId:
    seconds, a per-emulator random part, then a counter.
    """

    def __init__(self) -> None:
        self._instance_part = secrets.token_bytes(5)
        self._counter = itertools.count()

    def new(self) -> str:
        seconds = int(time.time()).to_bytes(4, "big")
        count = (next(self._counter) % 0x1000000).to_bytes(3, "big")
        return (seconds + self._instance_part + count).hex()


def is_object_id(value: str) -> bool:
    return OBJECT_ID_PATTERN.match(value) is not None
