"""``hyperwheel run``: start the parts, wait for SIGTERM, stop them in order.

Shutdown order: tell systemd we are stopping, stop following changes (no new
work), give in-flight steps ten seconds to reach a safe point and cancel the
rest (every step is safe to cancel: files are renamed into place only when
complete, and the store only records what is on disk), then close the web
server, the clients and the store, in reverse order of opening. A Flywheel
call stuck in its thread cannot be cancelled; the process exits without
waiting for it, and verification after the restart settles what it did.
"""

import asyncio
import os
import signal
import sys
import threading
from contextlib import AsyncExitStack, suppress
from typing import Any

import structlog

from hyperwheel import __version__, crashpoints, logs
from hyperwheel.disk_guard import DiskGuard
from hyperwheel.flywheel_gateway import FlywheelGateway
from hyperwheel.flywheel_sink import FlywheelSink
from hyperwheel.follower import ChangeFollower
from hyperwheel.health import Health
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
from hyperwheel.sdnotify import Notifier
from hyperwheel.settings import Settings, inspect_settings
from hyperwheel.staging import Stager
from hyperwheel.store import StateStore
from hyperwheel.study import StudyState
from hyperwheel.web import StatusServer

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

    clean = asyncio.run(_serve(settings, Notifier()))

    # Non-zero lets systemd restart a service whose follower or pipeline died.
    code = 0 if clean else 1
    _exit_now_if_threads_hang(code)

    return code


async def _serve(settings: Settings, notifier: Notifier) -> bool:
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

        guard = DiskGuard(settings.paths.staging, settings.paths.min_free_bytes)
        loop.add_signal_handler(signal.SIGHUP, _reload, settings, guard)
        stager = Stager(orthanc, store, settings.paths.staging, guard=guard)
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
        steps = _steps(settings, store, scanner, gateway, orthanc, guard)
        pipeline = Pipeline(store, steps, follower.ready)
        following = asyncio.create_task(follower.run(), name="follower")

        health = Health(
            store,
            orthanc,
            guard,
            follower_running=lambda: not following.done(),
            unhealthy_after=settings.metrics.unhealthy_after,
        )
        server = StatusServer(
            settings.metrics.host,
            settings.metrics.port,
            store=store,
            orthanc=orthanc,
            follower=follower,
            guard=guard,
            health=health,
        )
        await server.start()
        resources.push_async_callback(server.stop)

        log.info(
            "service.started",
            version=__version__,
            orthanc=settings.orthanc.url,
            staging=str(settings.paths.staging),
            state=str(settings.paths.state),
            listen=settings.metrics.listen,
        )
        notifier.ready(f"following {settings.orthanc.url}")

        working = asyncio.create_task(pipeline.run(), name="pipeline")
        beating = asyncio.create_task(_watchdog(notifier, store), name="watchdog")
        stopped = asyncio.create_task(stop.wait(), name="stop-signal")
        await asyncio.wait(
            {following, working, stopped}, return_when=asyncio.FIRST_COMPLETED
        )

        notifier.stopping()
        log.info("service.stopping")
        # No new work first, then the steps in flight; clients close last.
        await _stop_tasks([following])
        await _stop_tasks([working])
        await _stop_tasks([beating, stopped])
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


async def _watchdog(notifier: Notifier, store: StateStore) -> None:
    """Beat while the loop runs and the store answers, and only then.

    Orthanc, the scanner and Flywheel are left out on purpose: a restart
    would not bring them back, and /healthz reports them.
    """
    interval = notifier.watchdog_interval
    if interval is None:
        return
    while True:
        try:
            await asyncio.wait_for(store.ping(), interval)
        except Exception as error:  # no beat is the whole answer
            log.error("service.store_unresponsive", problem=repr(error))
        else:
            notifier.watchdog()
        await asyncio.sleep(interval)


def _reload(settings: Settings, guard: DiskGuard) -> None:
    """SIGHUP: apply a changed paths.min_free_bytes; the rest needs a restart."""
    fresh, problems = inspect_settings(settings.source)
    if fresh is None:
        log.error(
            "service.reload_refused",
            config=str(settings.source),
            problems=[f"{p.key}: {p.reason}" for p in problems],
        )
        return

    guard.set_threshold(fresh.paths.min_free_bytes)
    log.info(
        "service.reloaded",
        config=str(settings.source),
        min_free_bytes=fresh.paths.min_free_bytes,
        note="other settings take effect at the next start",
    )


def _exit_now_if_threads_hang(code: int) -> None:
    """Leave at once when a worker thread is stuck in a call (a hung upload).

    The interpreter would otherwise wait for it at exit, and a stop that
    hangs gets the service killed by systemd after TimeoutStopSec anyway.
    """
    main = threading.main_thread()
    stuck = [t for t in threading.enumerate() if t is not main and not t.daemon]
    if not stuck:
        return
    log.warning("service.left_stuck_threads", threads=[t.name for t in stuck])
    with suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _steps(
    settings: Settings,
    store: StateStore,
    scanner: ScannerClient | None,
    gateway: FlywheelGateway,
    orthanc: OrthancClient,
    guard: DiskGuard,
) -> dict[StudyState, Step]:
    raw = RawDataSync(store, settings.paths.staging, settings.scanner, scanner, guard)
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


async def _stop_tasks(tasks: list[asyncio.Task[Any]]) -> None:
    running = [t for t in tasks if not t.done()]
    for task in running:
        task.cancel()
    if running:
        await asyncio.wait(running, timeout=_DRAIN_SECONDS)
