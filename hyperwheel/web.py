"""The service's own HTTP server: ``/metrics``, ``/healthz``, ``/status.json``
and the status page at ``/``. Read-only; it listens on ``metrics.listen``.
"""

import asyncio
import json
from datetime import UTC, datetime

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from hyperwheel import metrics, status
from hyperwheel.disk_guard import DiskGuard
from hyperwheel.follower import ChangeFollower
from hyperwheel.health import Health
from hyperwheel.orthanc import OrthancClient
from hyperwheel.status_page import render_page
from hyperwheel.store import StateStore

log = structlog.get_logger(__name__)

# A scrape must answer even while Orthanc does not.
_ORTHANC_PEEK_TIMEOUT = 2.0


class StatusServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        store: StateStore,
        orthanc: OrthancClient,
        follower: ChangeFollower,
        guard: DiskGuard,
        health: Health,
    ) -> None:
        self._host = host
        self._port = port
        self._store = store
        self._orthanc = orthanc
        self._follower = follower
        self._guard = guard
        self._health = health
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/status.json", self._status_json)

        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        log.info("web.listening", host=self._host, port=self._port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, _request: web.Request) -> web.Response:
        metrics.describe_studies(await self._store.studies())
        await self._health.check()
        await asyncio.to_thread(self._guard.free_bytes)
        await self._describe_feed()

        return web.Response(
            body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _healthz(self, _request: web.Request) -> web.Response:
        report = await self._health.check()

        return web.Response(text=report.text(), status=200 if report.healthy else 503)

    async def _status_json(self, _request: web.Request) -> web.Response:
        studies = await status.snapshot(self._store)

        return web.Response(
            text=json.dumps(studies, indent=2), content_type="application/json"
        )

    async def _page(self, _request: web.Request) -> web.Response:
        studies = await status.snapshot(self._store)
        report = await self._health.check()
        health = "; ".join(report.problems) if report.problems else "healthy"
        page = render_page(studies, datetime.now(UTC), health=health)

        return web.Response(text=page, content_type="text/html")

    async def _describe_feed(self) -> None:
        cursor = self._follower.cursor
        metrics.FEED_CURSOR.set(cursor)
        try:
            last = await asyncio.wait_for(
                self._orthanc.last_change(), _ORTHANC_PEEK_TIMEOUT
            )
        except TimeoutError:
            return
        metrics.FEED_LAG.set(max(0, last - cursor))
