"""Flywheel API routes for the hierarchy: auth, config, lookups, containers."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .attributes import settable_attributes
from .errors import ApiError, bad_request, forbidden
from .keys import KeyGrant, may_touch, require_access
from .listing import apply_list_query
from .render import render_container
from .resolver import Resolver
from .state import (
    accessible,
    authenticate,
    json_object,
    state_of,
)
from .store import CHILD_KIND, Container, ContainerKind, Store, kind_from_plural
from .timestamps import now_iso

COLLECTIONS = "groups|projects|subjects|sessions|acquisitions"
CREATABLE = "subjects|sessions|acquisitions"
MODIFIED = {"modified": 1, "jobs_spawned": 0}


def add_container_routes(app: web.Application) -> None:
    app.router.add_get("/api/auth/status", auth_status)
    app.router.add_get("/api/users/self", current_user)
    app.router.add_get("/api/config", site_config)
    app.router.add_post("/api/lookup", lookup)
    app.router.add_post("/api/resolve", resolve)
    app.router.add_get("/api/containers/{cid}", get_any_container)
    app.router.add_post("/api/{collection:groups|projects}", refuse_seeded_creation)
    app.router.add_get(f"/api/{{collection:{COLLECTIONS}}}", list_collection)
    app.router.add_post(f"/api/{{collection:{CREATABLE}}}", create_container)
    app.router.add_get(f"/api/{{collection:{COLLECTIONS}}}/{{cid}}", get_container)
    app.router.add_put(f"/api/{{collection:{CREATABLE}}}/{{cid}}", modify_container)
    app.router.add_patch(
        f"/api/{{collection:{COLLECTIONS}|containers}}/{{cid}}/info", modify_info
    )
    app.router.add_get(
        f"/api/{{collection:{COLLECTIONS}}}/{{cid}}/{{children:{COLLECTIONS}}}",
        list_children,
    )


async def auth_status(request: web.Request) -> web.Response:
    grant = authenticate(request)
    return web.json_response(
        {
            "origin": grant.origin,
            "user_id": grant.user,
            "user_is_admin": False,
            "is_device": False,
            "roles": [],
        }
    )


async def current_user(request: web.Request) -> web.Response:
    grant = authenticate(request)
    return web.json_response(
        {
            "_id": grant.user,
            "email": grant.user,
            "firstname": "",
            "lastname": "",
            "roles": [],
            "root": False,
            "disabled": False,
        }
    )


async def site_config(request: web.Request) -> web.Response:
    """Public, like Flywheel's: clients read it before they authenticate."""
    state = state_of(request)
    origin = f"{request.scheme}://{request.host}"
    return web.json_response(
        {
            "site": {
                "id": "flywheel-emulator",
                "name": "Flywheel emulator",
                "api_url": f"{origin}/api",
            },
            "features": {
                "signed_url": state.signed_url,
                "multipart_signed_url": False,
            },
            "signed_url": state.signed_url,
            "created": now_iso(),
            "modified": now_iso(),
        }
    )


async def lookup(request: web.Request) -> web.Response:
    grant = authenticate(request)
    path = _path_from(await json_object(request))
    node = Resolver(state_of(request).store, grant).lookup(path)
    return web.json_response(node)


async def resolve(request: web.Request) -> web.Response:
    grant = authenticate(request)
    path = _path_from(await json_object(request))
    resolution = Resolver(state_of(request).store, grant).resolve(path)
    return web.json_response(resolution)


async def get_any_container(request: web.Request) -> web.Response:
    grant = authenticate(request)
    container = accessible(request, grant, request.match_info["cid"])
    store = state_of(request).store
    return web.json_response(render_container(store, container, with_type=True))


async def get_container(request: web.Request) -> web.Response:
    grant = authenticate(request)
    kind = kind_from_plural(request.match_info["collection"])
    container = accessible(request, grant, request.match_info["cid"], kind)
    return web.json_response(render_container(state_of(request).store, container))


async def list_collection(request: web.Request) -> web.Response:
    grant = authenticate(request)
    store = state_of(request).store
    kind = kind_from_plural(request.match_info["collection"])

    visible = [c for c in store.of_kind(kind) if may_touch(store, grant, c)]
    return _listing(request, store, visible)


async def list_children(request: web.Request) -> web.Response:
    grant = authenticate(request)
    store = state_of(request).store
    parent_kind = kind_from_plural(request.match_info["collection"])
    child_kind = kind_from_plural(request.match_info["children"])
    parent = accessible(request, grant, request.match_info["cid"], parent_kind)

    if not _is_descendant_kind(parent_kind, child_kind):
        raise ApiError(404, f"{parent_kind}s have no {child_kind}s")
    found = store.descendants(parent, child_kind)
    visible = [c for c in found if may_touch(store, grant, c)]
    return _listing(request, store, visible)


async def refuse_seeded_creation(request: web.Request) -> web.Response:
    """Groups and projects come from the seed; uploaders may never make them."""
    grant = authenticate(request)
    collection = request.match_info["collection"]
    raise forbidden(f"user {grant.user} may not create {collection}")


async def create_container(request: web.Request) -> web.Response:
    grant = authenticate(request)
    state = state_of(request)
    kind = kind_from_plural(request.match_info["collection"])
    body = await json_object(request)

    attributes = settable_attributes(kind, body, creating=True)
    parent = _placement(state.store, grant, kind, body)
    if kind == "subject":
        _require_unique_subject(state.store, parent, attributes["code"])

    created = state.store.create(kind, parent, attributes)
    return web.json_response({"_id": created.id})


async def modify_container(request: web.Request) -> web.Response:
    grant = authenticate(request)
    state = state_of(request)
    kind = kind_from_plural(request.match_info["collection"])
    container = accessible(request, grant, request.match_info["cid"], kind)
    body = await json_object(request)

    changes = settable_attributes(kind, body, creating=False)
    if kind == "subject" and "code" in changes:
        parent = state.store.get(container.parents["project"], "project")
        _require_unique_subject(state.store, parent, changes["code"], container)

    state.store.update_attributes(container, changes)
    return web.json_response(MODIFIED)


async def modify_info(request: web.Request) -> web.Response:
    grant = authenticate(request)
    state = state_of(request)
    container = accessible(request, grant, request.match_info["cid"])
    if container.kind == "group":
        raise bad_request("groups have no info in this emulator")

    update = await json_object(request)
    _check_info_update(update)
    info = container.attributes.setdefault("info", {})
    state.store.update_info(info, update)
    state.store.touch(container)
    return web.json_response(MODIFIED)


def _listing(
    request: web.Request, store: Store, containers: list[Container]
) -> web.Response:
    documents = [render_container(store, c) for c in containers]
    return web.json_response(apply_list_query(documents, request.query))


def _is_descendant_kind(parent: ContainerKind, child: ContainerKind) -> bool:
    kind: ContainerKind | None = CHILD_KIND.get(parent)
    while kind is not None:
        if kind == child:
            return True
        kind = CHILD_KIND.get(kind)
    return False


def _path_from(body: dict[str, Any]) -> list[str]:
    path = body.get("path")
    if not isinstance(path, list) or not all(isinstance(p, str) for p in path):
        raise bad_request("path must be a list of strings")
    return [element for element in path if element != ""]


def _placement(
    store: Store, grant: KeyGrant, kind: ContainerKind, body: dict[str, Any]
) -> Container:
    """The parent a new container goes under, checked for the caller's rights."""
    if kind == "subject":
        parent = store.get(_required_id(body, "project"), "project")
    elif kind == "acquisition":
        parent = store.get(_required_id(body, "session"), "session")
    else:
        parent = _session_subject(store, grant, body)

    require_access(store, grant, parent)
    return parent


def _session_subject(store: Store, grant: KeyGrant, body: dict[str, Any]) -> Container:
    """Sessions hang under a subject, given by id or found/created by code."""
    reference = body.get("subject")
    project_id = body.get("project")
    if isinstance(reference, str):
        reference = {"_id": reference}
    if not isinstance(reference, dict):
        raise bad_request("a session needs a subject (id or {code/label})")

    subject_id = reference.get("_id")
    if isinstance(subject_id, str):
        subject = store.get(subject_id, "subject")
        if project_id is not None and subject.parents["project"] != project_id:
            raise bad_request("the session's subject belongs to another project")
        return subject

    if not isinstance(project_id, str):
        raise bad_request("a session with a new subject needs a project")
    project = store.get(project_id, "project")
    require_access(store, grant, project)

    subject_fields = {k: v for k, v in reference.items() if k != "_id"}
    attributes = settable_attributes("subject", subject_fields, creating=True)
    for existing in store.children(project):
        if existing.attributes.get("code") == attributes["code"]:
            return existing
    return store.create("subject", project, attributes)


def _required_id(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise bad_request(f"field {name!r} (an id) is required")
    return value


def _require_unique_subject(
    store: Store, project: Container, code: str, itself: Container | None = None
) -> None:
    for existing in store.children(project):
        if existing is not itself and existing.attributes.get("code") == code:
            raise ApiError(409, f"subject code {code} already exists in project")


def _check_info_update(update: dict[str, Any]) -> None:
    if not set(update) or set(update) - {"set", "replace", "delete"}:
        raise bad_request("info update takes 'set', 'replace' and/or 'delete'")
    for name in ("set", "replace"):
        if name in update and not isinstance(update[name], dict):
            raise bad_request(f"info {name} must be an object")
    if "delete" in update and not isinstance(update["delete"], list):
        raise bad_request("info delete must be a list of keys")
