"""Is the service doing its job? The answer behind ``/healthz``.

Unhealthy means a person should look: the change follower stopped, the state
store does not answer, or Orthanc has been unreachable for longer than
``metrics.unhealthy_after``. A tripped disk guard is reported but stays
healthy: the service waits correctly, and has its own metric and alert.
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hyperwheel import metrics
from hyperwheel.disk_guard import DiskGuard
from hyperwheel.orthanc import OrthancClient
from hyperwheel.store import StateStore

_STORE_TIMEOUT = 5.0


@dataclass
class HealthReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def text(self) -> str:
        lines = self.problems or ["ok"]

        return "\n".join([*lines, *self.notes]) + "\n"


class Health:
    def __init__(
        self,
        store: StateStore,
        orthanc: OrthancClient,
        guard: DiskGuard,
        follower_running: Callable[[], bool],
        unhealthy_after: float,
    ) -> None:
        self._store = store
        self._orthanc = orthanc
        self._guard = guard
        self._follower_running = follower_running
        self._unhealthy_after = unhealthy_after

    async def check(self) -> HealthReport:
        report = HealthReport()

        if not self._follower_running():
            report.problems.append("the change follower has stopped")

        try:
            await asyncio.wait_for(self._store.ping(), _STORE_TIMEOUT)
        except Exception as error:  # any failure of the store is the answer
            report.problems.append(f"the state store does not answer: {error!r}")

        down_since = self._orthanc.unreachable_since
        down_for = 0.0 if down_since is None else time.monotonic() - down_since
        metrics.ORTHANC_UP.set(0 if down_since is not None else 1)
        if down_for > self._unhealthy_after:
            report.problems.append(
                f"Orthanc at {self._orthanc.url} unreachable for {down_for:.0f} s"
            )

        if self._guard.active:
            report.notes.append(
                f"disk guard active: less than {self._guard.min_free_bytes} bytes "
                f"free under {self._guard.root}; staging and raw pulls wait"
            )

        metrics.HEALTHY.set(1 if report.healthy else 0)
        return report
