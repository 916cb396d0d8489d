"""Uploads: multipart, and Flywheel's signed-URL ticket flow.

The ticket flow mirrors Flywheel's: ``POST .../files?ticket=`` opens a ticket
and hands out one URL per file, the client PUTs each body to its URL without
credentials, then ``POST .../files?ticket=<id>`` closes the ticket and stores
the files.  Here the URLs point back at this server under ``/__storage/``,
standing in for the cloud bucket.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from .blobs import StoredBlob
from .errors import bad_request, not_found
from .keys import KeyGrant
from .render import render_file
from .state import (
    EmulatorState,
    UploadTicket,
    authenticate,
    file_host,
    json_body,
    note_fault,
    state_of,
)
from .store import Container, FileDetails

CHUNK_SIZE = 1 << 20


@dataclass
class ReceivedFile:
    name: str
    blob: StoredBlob
    details: FileDetails


async def upload(request: web.Request) -> web.Response:
    grant = authenticate(request)
    container = file_host(request, grant)

    if "ticket" in request.query:
        ticket_id = request.query["ticket"]
        if not ticket_id:
            return await _open_ticket(request, grant, container)
        return await _close_ticket(request, grant, container, ticket_id)

    if request.content_type != "multipart/form-data":
        raise bad_request("file uploads must be multipart/form-data")
    return await _multipart_upload(request, grant, container)


async def _multipart_upload(
    request: web.Request, grant: KeyGrant, container: Container
) -> web.Response:
    state = state_of(request)
    metadata: Any = None
    received: list[tuple[str, StoredBlob]] = []

    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise bad_request("nested multipart bodies are not supported")
            if part.filename:
                blob = await state.blobs.receive(_part_chunks(part))
                received.append((part.filename, blob))
            elif part.name == "metadata":
                metadata = _parse_metadata(await part.text())
            else:
                await part.release()
    except BaseException:
        for _, blob in received:
            state.blobs.discard(blob)
        raise

    if not received:
        raise bad_request("No files selected for upload")

    files = [
        ReceivedFile(name, blob, _details_for(name, metadata, len(received)))
        for name, blob in received
    ]
    stored = _commit(request, grant, container, files)
    return web.json_response(stored)


async def _open_ticket(
    request: web.Request, grant: KeyGrant, container: Container
) -> web.Response:
    state = state_of(request)
    if not state.signed_url:
        raise bad_request("signed URL uploads are not enabled on this site")

    body = await json_body(request)
    filenames = body.get("filenames") if isinstance(body, dict) else None
    if (
        not isinstance(filenames, list)
        or not filenames
        or not all(isinstance(name, str) and name for name in filenames)
    ):
        raise bad_request("ticket request needs a non-empty list of filenames")

    ticket = UploadTicket(
        id=state.ids.new(),
        container_id=container.id,
        key=grant.key,
        filenames=list(filenames),
        metadata=body.get("metadata"),
        tokens={name: secrets.token_urlsafe(24) for name in filenames},
    )
    state.upload_tickets[ticket.id] = ticket

    origin = f"{request.scheme}://{request.host}"
    urls = {
        name: f"{origin}/__storage/{token}" for name, token in ticket.tokens.items()
    }
    return web.json_response({"ticket": ticket.id, "urls": urls, "headers": {}})


async def receive_signed_upload(request: web.Request) -> web.Response:
    """The stand-in for the storage bucket: no API key, the URL is the grant."""
    state = state_of(request)
    ticket, name = state.ticket_for_token(request.match_info["token"])

    blob = await state.blobs.receive(request.content.iter_chunked(CHUNK_SIZE))
    expected = request.content_length
    if expected is not None and expected != blob.size:
        state.blobs.discard(blob)
        raise bad_request(f"received {blob.size} bytes, expected {expected}")

    previous = ticket.received.get(name)
    if previous is not None:
        state.blobs.discard(previous)
    ticket.received[name] = blob
    return web.Response(status=200)


async def _close_ticket(
    request: web.Request, grant: KeyGrant, container: Container, ticket_id: str
) -> web.Response:
    state = state_of(request)
    ticket = state.upload_tickets.get(ticket_id)
    if ticket is None or ticket.container_id != container.id or ticket.key != grant.key:
        raise not_found(f"upload ticket {ticket_id} not found")

    missing = [name for name in ticket.filenames if name not in ticket.received]
    if missing:
        raise bad_request(f"files never uploaded to their signed URL: {missing}")
    del state.upload_tickets[ticket_id]

    files = [
        ReceivedFile(name, blob, _details_for(name, ticket.metadata, 1))
        for name, blob in ticket.received.items()
    ]
    _check_declared_sizes(state, files, ticket.metadata)

    empty_reply = state.faults.fire(
        frozenset({"empty_ticket_reply"}), request.method, request.path
    )
    if empty_reply:
        note_fault(request, "empty_ticket_reply")
        if not empty_reply[0].commit:
            for received in files:
                state.blobs.discard(received.blob)
            return web.json_response([])

    stored = _commit(request, grant, container, files)
    return web.json_response([] if empty_reply else stored)


def _commit(
    request: web.Request,
    grant: KeyGrant,
    container: Container,
    files: list[ReceivedFile],
) -> list[dict[str, Any]]:
    """Store received files as new versions, honouring upload faults."""
    state = state_of(request)
    upload_faults = frozenset({"drop_upload", "null_hash"})
    fired = {
        rule.kind
        for rule in state.faults.fire(upload_faults, request.method, request.path)
    }
    for kind in sorted(fired):
        note_fault(request, kind)

    replies = []
    for received in files:
        entry = state.store.add_file_version(
            container,
            received.name,
            received.blob,
            received.details,
            origin=grant.origin,
            hash_is_reported="null_hash" not in fired,
            keep="drop_upload" not in fired,
        )
        if "drop_upload" in fired:
            state.blobs.discard(received.blob)
        replies.append(render_file(entry, container))
    return replies


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(CHUNK_SIZE):
        yield chunk


def _parse_metadata(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else None
    except json.JSONDecodeError as error:
        raise bad_request(f"metadata is not JSON: {error.msg}") from error


def _details_for(name: str, metadata: Any, file_count: int) -> FileDetails:
    """Pick this file's metadata: a list matches by name, an object applies."""
    if isinstance(metadata, list):
        chosen = next(
            (m for m in metadata if isinstance(m, dict) and m.get("name") == name), None
        )
    elif isinstance(metadata, dict) and (
        file_count == 1 or metadata.get("name") == name
    ):
        chosen = metadata
    else:
        chosen = None
    return _details(chosen or {})


def _details(metadata: dict[str, Any]) -> FileDetails:
    info = metadata.get("info", {})
    tags = metadata.get("tags", [])
    classification = metadata.get("classification", {})
    if not isinstance(info, dict):
        raise bad_request("file metadata info must be an object")
    if not isinstance(tags, list):
        raise bad_request("file metadata tags must be a list")
    if not isinstance(classification, dict):
        raise bad_request("file metadata classification must be an object")
    return FileDetails(
        type=_optional_text(metadata, "type"),
        modality=_optional_text(metadata, "modality"),
        classification=classification,
        tags=[str(tag) for tag in tags],
        info=info,
    )


def _optional_text(metadata: dict[str, Any], name: str) -> str | None:
    value = metadata.get(name)
    if value is not None and not isinstance(value, str):
        raise bad_request(f"file metadata {name} must be a string")
    return value


def _check_declared_sizes(
    state: EmulatorState, files: list[ReceivedFile], metadata: Any
) -> None:
    declared = metadata.get("size") if isinstance(metadata, dict) else None
    if declared is None or len(files) != 1 or declared == files[0].blob.size:
        return
    state.blobs.discard(files[0].blob)
    raise bad_request(f"uploaded {files[0].blob.size} bytes but declared {declared}")
