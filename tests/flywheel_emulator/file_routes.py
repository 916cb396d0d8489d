"""File routes: where uploads land, and info, download, change and delete."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from .blobs import zip_members
from .errors import ApiError, bad_request, not_found
from .keys import require_access
from .render import render_file
from .state import (
    DownloadTicket,
    EmulatorState,
    authenticate,
    file_host,
    json_body,
    query_flag,
    state_of,
)
from .store import Container, FileVersion
from .uploads import receive_signed_upload, upload

FILE_HOSTS = "projects|subjects|sessions|acquisitions|containers"
FILES = f"/api/{{collection:{FILE_HOSTS}}}/{{cid}}/files"
MODIFIED = {"modified": 1, "jobs_spawned": 0}


def add_file_routes(app: web.Application) -> None:
    app.router.add_post(FILES, upload)
    app.router.add_get(FILES + "/{name}", download)
    app.router.add_get(FILES + "/{name}/info", file_info)
    app.router.add_put(FILES + "/{name}", modify_file)
    app.router.add_patch(FILES + "/{name}/info", modify_file_info)
    app.router.add_delete(FILES + "/{name}", delete_file)
    app.router.add_get("/api/files/{file_id}", file_by_id)
    app.router.add_get("/api/files/{file_id}/versions", file_versions)
    app.router.add_put("/__storage/{token}", receive_signed_upload)


async def download(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    ticket_id = request.query.get("ticket")
    if ticket_id:
        return _serve_download_ticket(state, ticket_id)

    grant = authenticate(request)
    container = file_host(request, grant)
    entry = _requested_version(request, state, container)

    if ticket_id == "":
        return _issue_download_ticket(state, container, entry)
    if query_flag(request, "info"):
        return _zip_info(entry)
    if request.query.get("member"):
        raise bad_request("downloading zip members is not emulated")
    return _file_response(entry, view=query_flag(request, "view"))


async def file_info(request: web.Request) -> web.Response:
    grant = authenticate(request)
    container = file_host(request, grant)
    entry = state_of(request).store.live_file(container, request.match_info["name"])
    return web.json_response(render_file(entry, container))


async def modify_file(request: web.Request) -> web.Response:
    grant = authenticate(request)
    state = state_of(request)
    container = file_host(request, grant)
    entry = state.store.live_file(container, request.match_info["name"])

    body = await json_body(request)
    if not isinstance(body, dict) or set(body) - {"type", "modality", "tags"}:
        raise bad_request("file modification takes type, modality and/or tags")
    for name, value in body.items():
        setattr(entry, name, value)
    state.store.touch_file(container, entry)
    return web.json_response(MODIFIED)


async def modify_file_info(request: web.Request) -> web.Response:
    grant = authenticate(request)
    state = state_of(request)
    container = file_host(request, grant)
    entry = state.store.live_file(container, request.match_info["name"])

    update = await json_body(request)
    if (
        not isinstance(update, dict)
        or not update
        or (set(update) - {"set", "replace", "delete"})
    ):
        raise bad_request("info update takes 'set', 'replace' and/or 'delete'")
    state.store.update_info(entry.info, update)
    state.store.touch_file(container, entry)
    return web.json_response(MODIFIED)


async def delete_file(request: web.Request) -> web.Response:
    grant = authenticate(request)
    state = state_of(request)
    container = file_host(request, grant)
    state.store.delete_file(container, request.match_info["name"])
    return web.json_response({"deleted": 1})


async def file_by_id(request: web.Request) -> web.Response:
    grant = authenticate(request)
    state = state_of(request)
    container, versions = state.store.versions_of(request.match_info["file_id"])
    require_access(state.store, grant, container)

    wanted = request.query.get("version")
    chosen = versions[-1] if wanted is None else _pick_version(versions, wanted)
    return web.json_response(render_file(chosen, container))


async def file_versions(request: web.Request) -> web.Response:
    grant = authenticate(request)
    state = state_of(request)
    container, versions = state.store.versions_of(request.match_info["file_id"])
    require_access(state.store, grant, container)
    return web.json_response(
        [
            {
                "file_id": entry.file_id,
                "version": entry.version,
                "created": entry.created,
                "deleted": entry.deleted,
                "origin": entry.origin,
            }
            for entry in versions
        ]
    )


def _requested_version(
    request: web.Request, state: EmulatorState, container: Container
) -> FileVersion:
    name = request.match_info["name"]
    wanted = request.query.get("version")
    if wanted is None:
        return state.store.live_file(container, name)
    try:
        version = int(wanted)
    except ValueError as error:
        raise bad_request("version must be an integer") from error
    return state.store.file_version(container, name, version)


def _pick_version(versions: list[FileVersion], wanted: str) -> FileVersion:
    for entry in versions:
        if str(entry.version) == wanted:
            return entry
    raise not_found(f"version {wanted} not found")


def _issue_download_ticket(
    state: EmulatorState, container: Container, entry: FileVersion
) -> web.Response:
    ticket = DownloadTicket(
        id=state.ids.new(),
        container_id=container.id,
        file_name=entry.name,
        version=entry.version,
    )
    state.download_tickets[ticket.id] = ticket
    return web.json_response(
        {"ticket": ticket.id, "filename": entry.name, "file_cnt": 1, "size": entry.size}
    )


def _serve_download_ticket(state: EmulatorState, ticket_id: str) -> web.StreamResponse:
    ticket = state.download_tickets.pop(ticket_id, None)
    if ticket is None:
        raise ApiError(404, f"download ticket {ticket_id} not found")
    container = state.store.get(ticket.container_id)
    entry = state.store.file_version(container, ticket.file_name, ticket.version)
    return _file_response(entry, view=False)


def _zip_info(entry: FileVersion) -> web.Response:
    if entry.zip_member_count is None:
        raise bad_request(f"file {entry.name} is not a zip archive")
    return web.json_response(
        {"comment": "", "members": zip_members(entry.storage_path)}
    )


def _file_response(entry: FileVersion, view: bool) -> web.FileResponse:
    content_type = entry.mimetype if view else "application/octet-stream"
    disposition = "inline" if view else "attachment"
    return web.FileResponse(
        entry.storage_path,
        headers={
            "Content-Type": content_type,
            "Content-Disposition": (
                f"{disposition}; filename*=UTF-8''{quote(entry.name, safe='')}"
            ),
        },
    )
