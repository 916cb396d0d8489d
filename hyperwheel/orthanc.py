"""Orthanc's REST API, as far as hyperwheel needs it.

Error handling: a refused connection, a timeout or a 5xx is retried forever
with capped exponential backoff (0.5 s doubling to 30 s, jittered), logging a
warning each time, because Orthanc being restarted is routine and the service
must outlive it. 401/403 are retried the same way but logged as errors: a
changed password needs a person, yet must not stop the process. A 404 raises
:class:`NotFound`; any other 4xx raises :class:`PermanentError`.
"""

import asyncio
import base64
import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from hyperwheel.backoff import backoff_delay
from hyperwheel.errors import NotFound, PermanentError
from hyperwheel.secret import Secret

log = structlog.get_logger(__name__)

_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_read=60)


def resource_id(*uids: str) -> str:
    """Orthanc's id for a resource, from its identifying DICOM values.

    Orthanc derives ids from SHA-1 of PatientID, StudyInstanceUID,
    SeriesInstanceUID and SOPInstanceUID joined by ``|`` (as many as the
    level needs), in five dash-separated groups. Callers check the result
    against an id Orthanc gave them before trusting it.
    """
    digest = hashlib.sha1("|".join(uids).encode(), usedforsecurity=False).hexdigest()

    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


@dataclass(frozen=True)
class Change:
    seq: int
    change_type: str
    resource_type: str
    resource_id: str


@dataclass(frozen=True)
class ChangeBatch:
    changes: list[Change]
    last: int
    done: bool


class OrthancClient:
    """One aiohttp session to one Orthanc; safe to share between tasks."""

    def __init__(
        self,
        url: str,
        username: str | None = None,
        password: Secret | None = None,
        *,
        max_backoff: float = 30.0,
    ) -> None:
        # Orthanc gzips replies by default; on a Pi that costs CPU on both ends
        # of a loopback socket for no gain.
        headers = {"Accept-Encoding": "identity"}
        if username is not None and password is not None:
            token = f"{username}:{password.reveal()}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        self.url = url.rstrip("/")
        self._session = aiohttp.ClientSession(headers=headers, timeout=_TIMEOUT)
        self._max_backoff = max_backoff
        self.last_contact: float | None = None
        self.unreachable_since: float | None = None

    async def close(self) -> None:
        await self._session.close()

    # Reads

    async def system(self) -> dict[str, Any]:
        return dict(await self._json("GET", "/system"))

    async def changes(self, since: int, limit: int = 200) -> ChangeBatch:
        document = await self._json(
            "GET", "/changes", params={"since": str(since), "limit": str(limit)}
        )
        changes = [
            Change(c["Seq"], c["ChangeType"], c["ResourceType"], c["ID"])
            for c in document["Changes"]
        ]

        return ChangeBatch(changes, int(document["Last"]), bool(document["Done"]))

    async def last_change(self) -> int:
        """The sequence number of Orthanc's newest change."""
        document = await self._json("GET", "/changes", params={"last": ""})

        return int(document["Last"])

    async def studies(self) -> list[str]:
        return list(await self._json("GET", "/studies"))

    async def study(self, study_id: str) -> dict[str, Any]:
        return dict(await self._json("GET", f"/studies/{study_id}"))

    async def study_instance_ids(self, study_id: str) -> list[str]:
        instances = await self._json("GET", f"/studies/{study_id}/instances")

        return [instance["ID"] for instance in instances]

    async def series(self, series_id: str) -> dict[str, Any]:
        return dict(await self._json("GET", f"/series/{series_id}"))

    async def instance(self, instance_id: str) -> dict[str, Any]:
        return dict(await self._json("GET", f"/instances/{instance_id}"))

    async def simplified_tags(self, instance_id: str) -> dict[str, Any]:
        return dict(
            await self._json("GET", f"/instances/{instance_id}/simplified-tags")
        )

    @asynccontextmanager
    async def instance_file(
        self, instance_id: str
    ) -> AsyncIterator[aiohttp.StreamReader]:
        """The DICOM file as a stream; the caller restarts on a broken read."""
        async with self._response("GET", f"/instances/{instance_id}/file") as reply:
            yield reply.content

    # Writes

    async def delete_instance(self, instance_id: str) -> bool:
        """Delete one instance; False when it was already gone."""
        try:
            async with self._response("DELETE", f"/instances/{instance_id}"):
                return True
        except NotFound:
            return False

    # Plumbing

    async def _json(
        self, method: str, path: str, params: dict[str, str] | None = None
    ) -> Any:
        async with self._response(method, path, params) as reply:
            return await reply.json(content_type=None)

    @asynccontextmanager
    async def _response(
        self, method: str, path: str, params: dict[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        attempt = 0
        while True:
            attempt += 1
            problem: str
            try:
                reply = await self._session.request(
                    method, self.url + path, params=params
                )
            except (aiohttp.ClientError, TimeoutError) as error:
                problem = f"{type(error).__name__}: {error}"
            else:
                if reply.status < 400:
                    self._reached()
                    try:
                        yield reply
                    finally:
                        reply.release()
                    return
                reply.release()
                if reply.status == 404:
                    self._reached()
                    raise NotFound(f"orthanc: {method} {path}: 404 not found")
                if reply.status not in (401, 403) and reply.status < 500:
                    raise PermanentError(f"orthanc: {method} {path}: {reply.status}")
                problem = f"HTTP {reply.status}"

            await self._wait_before_retry(method, path, attempt, problem)

    async def _wait_before_retry(
        self, method: str, path: str, attempt: int, problem: str
    ) -> None:
        if self.unreachable_since is None:
            self.unreachable_since = time.monotonic()
        delay = backoff_delay(attempt, cap=self._max_backoff)
        denied = problem in ("HTTP 401", "HTTP 403")
        report = log.error if denied else log.warning
        report(
            "orthanc.denied" if denied else "orthanc.unreachable",
            method=method,
            path=path,
            problem=problem,
            attempt=attempt,
            retry_in_s=round(delay, 2),
            hint="check orthanc.username/password" if denied else None,
        )
        await asyncio.sleep(delay)

    def _reached(self) -> None:
        if self.unreachable_since is not None:
            log.info(
                "orthanc.reachable_again",
                after_s=round(time.monotonic() - self.unreachable_since, 1),
            )
        self.unreachable_since = None
        self.last_contact = time.monotonic()
