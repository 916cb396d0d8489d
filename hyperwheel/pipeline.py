"""The study pipeline: one task per study with work due, a few at a time.

Each state with work to do has a :class:`Step`. The pipeline starts a step
for every study in that state whose next try is due, never two for one
study, and at most ``concurrency`` at once.

Error handling: a step raising :class:`PermanentError` holds the study with
the reason. Any other failure (a :class:`TransientError`, an ``OSError``, a
bug) is logged, counted on the study (attempts, last error, failing since)
and tried again after capped exponential backoff with jitter (5 s doubling
to 10 min); the step's ``give_up`` then decides when to hold it instead.
A hold whose cause may be fixed elsewhere (a refused API key) carries a
re-check time, and is released by itself then. A study that changed state
while its step ran (a late instance reopened
it) is simply looked at again.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from hyperwheel import metrics
from hyperwheel.backoff import backoff_delay
from hyperwheel.errors import PermanentError
from hyperwheel.store import StateStore, StudyRecord
from hyperwheel.study import UNFINISHED, StudyState
from statemachine import InvalidTransition

log = structlog.get_logger(__name__)

# Also how soon a `hyperwheel retry` from another process is noticed.
_IDLE_CHECK = 5.0
_RETRY_BASE = 5.0
_RETRY_CAP = 600.0

GiveUp = Callable[[StudyRecord, datetime], str | None]


def never_give_up(_study: StudyRecord, _now: datetime) -> str | None:
    return None


@dataclass(frozen=True)
class Step:
    """The work that moves a study out of one state."""

    name: str
    run: Callable[[StudyRecord], Awaitable[None]]
    give_up: GiveUp = never_give_up


def give_up_after(seconds: float, advice: str) -> GiveUp:
    """Hold once the step has kept failing for ``seconds``."""

    def decide(study: StudyRecord, now: datetime) -> str | None:
        if study.failing_since is None:
            return None
        since = _parse(study.failing_since)
        if now - since < timedelta(seconds=seconds):
            return None
        return (
            f"{study.last_error} (failing since {study.failing_since}, "
            f"gave up after {seconds:.0f} s); {advice}"
        )

    return decide


def give_up_after_attempts(attempts: int) -> GiveUp:
    """Hold once the step has failed ``attempts`` times in a row."""

    def decide(study: StudyRecord, _now: datetime) -> str | None:
        if study.attempts < attempts:
            return None
        return f"{study.last_error} (failed {study.attempts} times)"

    return decide


class Pipeline:
    """Runs due steps until cancelled; :meth:`wake` makes it look now."""

    def __init__(
        self,
        store: StateStore,
        steps: dict[StudyState, Step],
        ready: asyncio.Event,
        concurrency: int = 2,
    ) -> None:
        self._store = store
        self._steps = steps
        self._ready = ready
        self._slots = asyncio.Semaphore(concurrency)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        # Raw files are matched against every study hyperwheel knows, so no
        # step starts before the follower has registered all of Orthanc's.
        await self._ready.wait()
        try:
            while True:
                self._wake.clear()
                next_due = await self._start_due_steps()
                timeout = min(_IDLE_CHECK, max(0.0, next_due))
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            await self._cancel_running()

    async def _start_due_steps(self) -> float:
        """Start what is due; seconds until the next try that is not yet."""
        now = datetime.now(UTC)
        next_due = _IDLE_CHECK
        # Purged studies pile up over the years; only these states matter here.
        studies = await self._store.studies(StudyState.HELD, *UNFINISHED)
        for study in studies:
            if study.state is StudyState.HELD and _due(study.next_try_at, now):
                await self._store.release(
                    study.id, reason="released automatically to check again"
                )
                self.wake()
                continue
            if study.state not in self._steps or study.id in self._running:
                continue
            if study.next_try_at is not None:
                wait = (_parse(study.next_try_at) - now).total_seconds()
                if wait > 0:
                    next_due = min(next_due, wait)
                    continue
            task = asyncio.create_task(self._run_step(study), name=f"study-{study.id}")
            self._running[study.id] = task
            task.add_done_callback(self._finished)

        return next_due

    def _finished(self, task: asyncio.Task[None]) -> None:
        for study_id, running in list(self._running.items()):
            if running is task:
                del self._running[study_id]
        self.wake()

    async def _run_step(self, study: StudyRecord) -> None:
        step = self._steps[study.state]
        bound = log.bind(study=study.id, step=step.name)
        async with self._slots:
            fresh = await self._store.study(study.id)
            if fresh is None or fresh.state is not study.state:
                return
            started = time.monotonic()
            try:
                # Every event logged inside the step names its study.
                with structlog.contextvars.bound_contextvars(study=study.id):
                    await step.run(fresh)
            except InvalidTransition as error:
                bound.info("pipeline.study_moved_meanwhile", problem=str(error))
            except PermanentError as error:
                metrics.STEP_ERRORS.labels(step.name, type(error).__name__).inc()
                recheck_at = None
                if error.recheck_after is not None:
                    later = datetime.now(UTC) + timedelta(seconds=error.recheck_after)
                    recheck_at = _iso(later)
                await self._store.hold(study.id, f"{step.name}: {error}", recheck_at)
            except Exception as error:
                # Every other failure, bugs included, is counted and retried.
                metrics.STEP_ERRORS.labels(step.name, type(error).__name__).inc()
                await self._failed(fresh, step, error, bound)
            finally:
                elapsed = time.monotonic() - started
                metrics.STEP_DURATION.labels(step.name).observe(elapsed)

    async def _failed(
        self,
        study: StudyRecord,
        step: Step,
        error: Exception,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        problem = str(error) or type(error).__name__
        delay = backoff_delay(study.attempts + 1, base=_RETRY_BASE, cap=_RETRY_CAP)
        next_try = datetime.now(UTC) + timedelta(seconds=delay)
        bound.warning(
            "pipeline.step_failed",
            problem=problem,
            kind=type(error).__name__,
            attempt=study.attempts + 1,
            retry_in_s=round(delay, 1),
        )
        await self._store.note_failure(study.id, problem, _iso(next_try))
        await self._store.add_event(study.id, f"{step.name}.failed", problem)

        updated = await self._store.study(study.id)
        if updated is None:
            return
        reason = step.give_up(updated, datetime.now(UTC))
        if reason is not None:
            await self._store.hold(study.id, f"{step.name}: {reason}")

    async def _cancel_running(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)


def _due(stamp: str | None, now: datetime) -> bool:
    return stamp is not None and _parse(stamp) <= now


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
