"""A record of the requests the emulator saw, so tests can count retries."""

from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RequestRecord:
    sequence: int
    method: str
    path: str
    query: dict[str, str]
    authorized: bool
    user: str | None = None
    status: int | None = None
    faults: list[str] = field(default_factory=list)
    duration_ms: float | None = None

    def describe(self) -> dict[str, Any]:
        return asdict(self)


class RequestJournal:
    """Entries are made when a request arrives and completed when it ends.

    Held requests (the ``timeout`` fault) therefore show up straight away,
    with ``status`` still null.
    """

    def __init__(self, capacity: int = 20_000) -> None:
        self._lock = threading.Lock()
        self._entries: deque[RequestRecord] = deque(maxlen=capacity)
        self._sequence = itertools.count(1)

    def open(
        self, method: str, path: str, query: dict[str, str], authorized: bool
    ) -> RequestRecord:
        with self._lock:
            record = RequestRecord(
                sequence=next(self._sequence),
                method=method,
                path=path,
                query=query,
                authorized=authorized,
            )
            self._entries.append(record)
            return record

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [record.describe() for record in self._entries]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
