"""Following Orthanc: the change feed, and a reconcile that covers its gaps.

The feed alone loses things (DESIGN section 4): a DELETE erases earlier
changes, and a study that was unstable when Orthanc stopped never gets its
StableStudy. So :meth:`ChangeFollower.reconcile` compares every study Orthanc
holds with the store at start-up and every ``reconcile_interval`` seconds.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from hyperwheel.crashpoints import crash_point
from hyperwheel.errors import HyperwheelError, NotFound
from hyperwheel.orthanc import Change, OrthancClient
from hyperwheel.staging import Stager
from hyperwheel.store import StateStore
from hyperwheel.study import StudyState

log = structlog.get_logger(__name__)

CURSOR_KEY = "orthanc.changes_cursor"
_BATCH = 200
_FAILURE_PAUSE = 5.0

StudyCallback = Callable[[str], Awaitable[None]]


class ChangeFollower:
    """Turns Orthanc's changes into staged files and STABLE studies.

    Error handling: Orthanc being down is waited out inside the client. Any
    other failure while handling a batch (a full disk, an unreadable file) is
    logged and the same batch is tried again after five seconds; the cursor
    only moves once a batch is fully handled, so nothing is skipped.
    """

    def __init__(
        self,
        orthanc: OrthancClient,
        store: StateStore,
        stager: Stager,
        *,
        poll_interval: float,
        reconcile_interval: float,
        on_stable: StudyCallback | None = None,
    ) -> None:
        self._orthanc = orthanc
        self._store = store
        self._stager = stager
        self._poll_interval = poll_interval
        self._reconcile_interval = reconcile_interval
        self._on_stable = on_stable
        self.ready = asyncio.Event()
        self.cursor = 0
        self.orthanc_last = 0

    async def run(self) -> None:
        """Reconcile, then follow the feed until cancelled."""
        self.cursor = int(await self._store.get_meta(CURSOR_KEY) or 0)
        await self._retrying(self.reconcile)
        self.ready.set()
        log.info("follower.ready", cursor=self.cursor)

        next_reconcile = time.monotonic() + self._reconcile_interval
        while True:
            done = await self._retrying(self.poll_once)
            if time.monotonic() >= next_reconcile:
                await self._retrying(self.reconcile)
                next_reconcile = time.monotonic() + self._reconcile_interval
            if done:
                await asyncio.sleep(self._poll_interval)

    async def poll_once(self) -> bool:
        """Handle one batch of changes; True when the feed is drained."""
        batch = await self._orthanc.changes(self.cursor, _BATCH)
        await self._handle(batch.changes)

        crash_point("follower.before_cursor")
        if batch.last != self.cursor:
            await self._store.set_meta(CURSOR_KEY, str(batch.last))
            self.cursor = batch.last
        crash_point("follower.after_cursor")
        self.orthanc_last = max(self.orthanc_last, batch.last)

        return batch.done

    async def reconcile(self) -> None:
        """Adopt unknown studies, stage what is missing, mark stable ones."""
        study_ids = await self._orthanc.studies()
        for study_id in study_ids:
            try:
                await self._reconcile_study(study_id)
            except NotFound:
                log.info("follower.study_gone", study=study_id)
        log.info("follower.reconciled", studies=len(study_ids))

    async def mark_stable(self, study_id: str) -> None:
        """Orthanc says the study is stable: check it is all staged, then move."""
        try:
            instance_ids = await self._orthanc.study_instance_ids(study_id)
        except NotFound:
            log.info("follower.study_gone", study=study_id)
            return
        await self._stager.stage_many(instance_ids)

        record = await self._store.study(study_id)
        if record is None or record.state is not StudyState.RECEIVING:
            return
        staged = await self._store.staged_files(study_id, record.cycle)
        staged_sources = {f.source for f in staged}
        missing = set(instance_ids) - staged_sources
        if missing:
            # Gone from Orthanc between the listing and the staging.
            log.warning(
                "follower.stable_incomplete", study=study_id, missing=len(missing)
            )
            return

        await self._stager.make_durable(study_id, record.cycle)
        await self._store.move(
            study_id,
            StudyState.STABLE,
            f"Orthanc reports the study stable; {len(staged)} instances staged",
        )
        if self._on_stable is not None:
            await self._on_stable(study_id)

    async def _reconcile_study(self, study_id: str) -> None:
        study = await self._orthanc.study(study_id)
        instance_ids = await self._orthanc.study_instance_ids(study_id)
        record = await self._store.study(study_id)
        staged: set[str] = set()
        if record is not None:
            files = await self._store.staged_files(study_id, record.cycle)
            staged = {f.source for f in files}

        missing = [i for i in instance_ids if i not in staged]
        if missing:
            written = await self._stager.stage_many(missing)
            log.info("follower.adopted", study=study_id, staged=written)
        if study.get("IsStable"):
            await self.mark_stable(study_id)

    async def _handle(self, changes: list[Change]) -> None:
        # New instances are staged concurrently, but a StableStudy waits for
        # every instance announced before it, so STABLE never overtakes one.
        pending: list[str] = []
        for change in changes:
            if change.change_type == "NewInstance":
                pending.append(change.resource_id)
            elif change.change_type == "StableStudy":
                await self._stager.stage_many(pending)
                pending = []
                await self.mark_stable(change.resource_id)
        await self._stager.stage_many(pending)

    async def _retrying(self, step: Callable[[], Awaitable[object]]) -> bool:
        while True:
            try:
                return bool(await step())
            except HyperwheelError as error:
                problem = f"{type(error).__name__}: {error}"
            except OSError as error:
                problem = f"{type(error).__name__}: {error}"
            log.error(
                "follower.step_failed",
                step=step.__name__,
                problem=problem,
                retry_in_s=_FAILURE_PAUSE,
            )
            await asyncio.sleep(_FAILURE_PAUSE)
