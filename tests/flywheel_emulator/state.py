"""Everything one running emulator knows, and per-request helpers to reach it."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from .blobs import BlobStore, StoredBlob
from .errors import ApiError, bad_request, not_found
from .faults import FaultPlan
from .ids import ObjectIdFactory
from .journal import RequestJournal, RequestRecord
from .keys import KeyGrant, KeyRing, require_access
from .render import render_dump
from .store import Container, ContainerKind, Store


@dataclass
class UploadTicket:
    """A signed-URL upload between its opening and its close."""

    id: str
    container_id: str
    key: str
    filenames: list[str]
    metadata: Any
    tokens: dict[str, str]
    received: dict[str, StoredBlob] = field(default_factory=dict)


@dataclass
class DownloadTicket:
    id: str
    container_id: str
    file_name: str
    version: int


@dataclass
class EmulatorState:
    ids: ObjectIdFactory
    store: Store
    blobs: BlobStore
    keys: KeyRing
    faults: FaultPlan
    journal: RequestJournal
    signed_url: bool
    stopping: asyncio.Event
    upload_tickets: dict[str, UploadTicket] = field(default_factory=dict)
    download_tickets: dict[str, DownloadTicket] = field(default_factory=dict)

    def dump(self) -> dict[str, Any]:
        """The whole tree with every file version, and which keys are revoked."""
        document = render_dump(self.store)
        document["api_keys"] = [
            {"user": grant.user, "revoked": grant.revoked}
            for grant in self.keys.grants()
        ]
        return document

    def ticket_for_token(self, token: str) -> tuple[UploadTicket, str]:
        for ticket in self.upload_tickets.values():
            for name, known in ticket.tokens.items():
                if known == token:
                    return ticket, name
        raise ApiError(404, "upload URL is unknown or already used")

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the emulator stops."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            return
        raise ApiError(503, "emulator is shutting down")


STATE_KEY = web.AppKey("flywheel_emulator_state", EmulatorState)
RECORD_KEY = web.RequestKey("flywheel_emulator_record", RequestRecord)


def state_of(request: web.Request) -> EmulatorState:
    return request.app[STATE_KEY]


def record_of(request: web.Request) -> RequestRecord | None:
    return request.get(RECORD_KEY)


def note_fault(request: web.Request, kind: str) -> None:
    record = record_of(request)
    if record is not None:
        record.faults.append(kind)


def authenticate(request: web.Request) -> KeyGrant:
    grant = state_of(request).keys.authenticate(request.headers.get("Authorization"))
    record = record_of(request)
    if record is not None:
        record.user = grant.user
    return grant


def accessible(
    request: web.Request,
    grant: KeyGrant,
    container_id: str,
    kind: ContainerKind | None = None,
) -> Container:
    state = state_of(request)
    container = state.store.get(container_id, kind)
    require_access(state.store, grant, container)
    return container


def file_host(request: web.Request, grant: KeyGrant) -> Container:
    """The container named in a ``.../{collection}/{cid}/files`` path."""
    collection = request.match_info["collection"]
    kind = None if collection == "containers" else collection[:-1]
    container = accessible(request, grant, request.match_info["cid"])
    if (kind is not None and container.kind != kind) or container.kind == "group":
        raise not_found(f"{kind or 'container'} {container.id} not found")
    return container


async def json_body(request: web.Request) -> Any:
    try:
        text = await request.text()
    except web.HTTPRequestEntityTooLarge as error:
        raise ApiError(413, "request body too large") from error
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise bad_request(f"request body is not JSON: {error.msg}") from error


async def json_object(request: web.Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    return body


def query_flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("true", "1", "yes")


def write_snapshot(path: Path, document: dict[str, Any]) -> None:
    """Replace the snapshot atomically so a reader never sees half a file."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(document, indent=2, sort_keys=True), "utf-8")
    partial.replace(path)
