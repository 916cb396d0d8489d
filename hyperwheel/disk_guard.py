"""Stop filling the disk before it is full, and go on by itself once it is not.

Staging and raw pulls ask :meth:`DiskGuard.wait_for_space` before they
write. Below ``paths.min_free_bytes`` they wait: Orthanc and the scanner
still hold everything, so waiting loses nothing, while uploads, verification
and purges go on and free space. The threshold can be changed while running
(``systemctl reload``), so an operator can let a nearly full machine go on.
"""

import asyncio
import contextlib
import shutil
import time
from pathlib import Path

import structlog

from hyperwheel import metrics

log = structlog.get_logger(__name__)

_RECHECK_SECONDS = 5.0
_FRESH = 1.0


class DiskGuard:
    def __init__(
        self, root: Path, min_free_bytes: int, recheck: float = _RECHECK_SECONDS
    ) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes
        self.active = False
        self._recheck = recheck
        self._changed = asyncio.Event()
        self._room_seen_at = -_FRESH

    def free_bytes(self) -> int:
        free = shutil.disk_usage(self.root).free
        metrics.STAGING_FREE.set(free)

        return free

    def set_threshold(self, min_free_bytes: int) -> None:
        self._room_seen_at = -_FRESH
        if min_free_bytes != self.min_free_bytes:
            log.info(
                "disk_guard.threshold_changed",
                old=self.min_free_bytes,
                new=min_free_bytes,
            )
        self.min_free_bytes = min_free_bytes
        self._changed.set()

    async def wait_for_space(self, waiting: str) -> None:
        """Return at once while there is room; otherwise when there is again."""
        # Staging asks once per instance; a second-old answer is good enough
        # and spares a thread hop and a statvfs on that path.
        if not self.active and time.monotonic() - self._room_seen_at < _FRESH:
            return
        while True:
            free = await asyncio.to_thread(self.free_bytes)
            if free >= self.min_free_bytes:
                self._release(free)
                self._room_seen_at = time.monotonic()
                return

            self._trip(free, waiting)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self._recheck)

    def _trip(self, free: int, waiting: str) -> None:
        if self.active:
            return
        self.active = True
        metrics.DISK_GUARD.set(1)
        log.error(
            "disk_guard.tripped",
            free_bytes=free,
            min_free_bytes=self.min_free_bytes,
            root=str(self.root),
            waiting=waiting,
            hint="staging and raw pulls wait until space returns; nothing is lost",
        )

    def _release(self, free: int) -> None:
        if not self.active:
            return
        self.active = False
        metrics.DISK_GUARD.set(0)
        log.warning("disk_guard.released", free_bytes=free, root=str(self.root))
