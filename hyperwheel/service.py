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
from hyperwheel.follower import ChangeFollower
from hyperwheel.orthanc import OrthancClient
from hyperwheel.settings import Settings
from hyperwheel.staging import Stager
from hyperwheel.store import StateStore

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

    asyncio.run(_serve(settings))

    return 0


async def _serve(settings: Settings) -> None:
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
        follower = ChangeFollower(
            orthanc,
            store,
            stager,
            poll_interval=settings.orthanc.poll_interval,
            reconcile_interval=settings.orthanc.reconcile_interval,
        )
        log.info(
            "service.started",
            version=__version__,
            orthanc=settings.orthanc.url,
            staging=str(settings.paths.staging),
            state=str(settings.paths.state),
        )

        following = asyncio.create_task(follower.run(), name="follower")
        stopped = asyncio.create_task(stop.wait(), name="stop-signal")
        await asyncio.wait({following, stopped}, return_when=asyncio.FIRST_COMPLETED)

        log.info("service.stopping")
        await _stop_tasks([following])
        stopped.cancel()
        if following.done() and not following.cancelled() and following.exception():
            log.error("service.follower_died", problem=repr(following.exception()))

    log.info("service.stopped")


async def _stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    running = [t for t in tasks if not t.done()]
    for task in running:
        task.cancel()
    if running:
        await asyncio.wait(running, timeout=_DRAIN_SECONDS)
