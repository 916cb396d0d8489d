"""Byte progress of the pulls and uploads running now, for the status page.

Held in memory only: after a restart the store says what is done, and the
step in flight reports afresh.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class StepProgress:
    step: str
    total_bytes: int
    done_bytes: int = 0

    def add(self, count: int) -> None:
        self.done_bytes = min(self.total_bytes, self.done_bytes + count)

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "done_bytes": self.done_bytes,
            "total_bytes": self.total_bytes,
        }


_in_flight: dict[str, StepProgress] = {}


@contextmanager
def tracking(
    study_id: str, step: str, total_bytes: int, done_bytes: int = 0
) -> Iterator[StepProgress]:
    """Publish the progress of one study's step while the block runs."""
    progress = StepProgress(step, total_bytes, min(done_bytes, total_bytes))
    _in_flight[study_id] = progress
    try:
        yield progress
    finally:
        if _in_flight.get(study_id) is progress:
            del _in_flight[study_id]


def of(study_id: str) -> dict[str, Any] | None:
    progress = _in_flight.get(study_id)

    return progress.as_json() if progress else None
