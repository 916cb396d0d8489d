"""``hyperwheel run``: start the parts, wait for SIGTERM, stop them in order.

Shutdown order: stop following changes (no new work), give in-flight steps
ten seconds to reach a safe point and cancel the rest (every step is safe to
cancel: files are renamed into place only when complete, and the store only
records what is on disk), then close the Orthanc client and the store, in
reverse order of opening, collecting every error.
"""

import asyncio
import signal
from contextlib import AsyncExitStack

import structlog

from hyperwheel import __version__, crashpoints, logs
from hyperwheel.flywheel_gateway import FlywheelGateway
from hyperwheel.flywheel_sink import FlywheelSink
from hyperwheel.follower import ChangeFollower
from hyperwheel.orthanc import OrthancClient
from hyperwheel.pipeline import (
    GiveUp,
    Pipeline,
    Step,
    give_up_after,
    give_up_after_attempts,
    never_give_up,
)
from hyperwheel.purge import Purger
from hyperwheel.rrdf_sync import RawDataSync
from hyperwheel.scanner import ScannerClient
from hyperwheel.settings import Settings
from hyperwheel.staging import Stager
from hyperwheel.store import StateStore
from hyperwheel.study import StudyState

log = structlog.get_logger(__name__)

_DRAIN_SECONDS = 10.0


def run_service(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; 0 after a clean stop."""
    logs.configure()
    logs.register_secret(settings.orthanc.password)
    try:
        crashpoints.configured()
    except ValueError as error:
        log.error("service.bad_crash_point", problem=str(error))
        return 2

    clean = asyncio.run(_serve(settings))

    # Non-zero lets systemd restart a service whose follower or pipeline died.
    return 0 if clean else 1


async def _serve(settings: Settings) -> bool:
    """Run until stopped; False when a part died of an unexpected error."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    async with AsyncExitStack() as resources:
        store = await StateStore.open(settings.paths.state)
        resources.push_async_callback(store.close)
        orthanc = OrthancClient(
            settings.orthanc.url, settings.orthanc.username, settings.orthanc.password
        )
        resources.push_async_callback(orthanc.close)

        stager = Stager(
            orthanc,
            store,
            settings.paths.staging,
            min_free_bytes=settings.paths.min_free_bytes,
        )
        stager.prepare()
        scanner = None
        if settings.scanner is not None:
            scanner = ScannerClient(settings.scanner)
            resources.push_async_callback(scanner.close)

        gateway = FlywheelGateway()
        resources.callback(gateway.close)

        async def stable(_study_id: str) -> None:
            pipeline.wake()

        follower = ChangeFollower(
            orthanc,
            store,
            stager,
            poll_interval=settings.orthanc.poll_interval,
            reconcile_interval=settings.orthanc.reconcile_interval,
            on_stable=stable,
        )
        steps = _steps(settings, store, scanner, gateway, orthanc)
        pipeline = Pipeline(store, steps, follower.ready)
        log.info(
            "service.started",
            version=__version__,
            orthanc=settings.orthanc.url,
            staging=str(settings.paths.staging),
            state=str(settings.paths.state),
        )

        following = asyncio.create_task(follower.run(), name="follower")
        working = asyncio.create_task(pipeline.run(), name="pipeline")
        stopped = asyncio.create_task(stop.wait(), name="stop-signal")
        await asyncio.wait(
            {following, working, stopped}, return_when=asyncio.FIRST_COMPLETED
        )

        log.info("service.stopping")
        # No new work first, then the steps in flight; clients close last.
        await _stop_tasks([following])
        await _stop_tasks([working])
        stopped.cancel()
        died = [
            task
            for task in (following, working)
            if task.done() and not task.cancelled() and task.exception()
        ]
        for task in died:
            log.error(
                "service.task_died",
                task=task.get_name(),
                problem=repr(task.exception()),
            )

    log.info("service.stopped")

    return not died


def _steps(
    settings: Settings,
    store: StateStore,
    scanner: ScannerClient | None,
    gateway: FlywheelGateway,
    orthanc: OrthancClient,
) -> dict[StudyState, Step]:
    raw = RawDataSync(store, settings.paths.staging, settings.scanner, scanner)
    give_up: GiveUp = never_give_up
    if settings.scanner is not None:
        give_up = give_up_after(
            settings.scanner.give_up_after,
            "`hyperwheel retry --skip-rrdf STUDY` sends it on without raw data",
        )

    sink = FlywheelSink(store, settings, gateway)
    attempts = give_up_after_attempts(settings.flywheel.max_attempts)
    purger = Purger(store, settings, orthanc, sink)

    return {
        StudyState.STABLE: Step("raw data", raw.run, give_up),
        StudyState.RRDF_SYNCED: Step("upload", sink.upload, attempts),
        StudyState.UPLOADED: Step("verify", sink.verify, attempts),
        StudyState.VERIFIED: Step("purge", purger.run, attempts),
    }


async def _stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    running = [t for t in tasks if not t.done()]
    for task in running:
        task.cancel()
    if running:
        await asyncio.wait(running, timeout=_DRAIN_SECONDS)
