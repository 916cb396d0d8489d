"""Test-only controls under ``/__admin/``, which Flywheel itself never serves.

They need no API key and are never subject to faults, so a test can always
steer the emulator and inspect it, however badly the API is behaving.
"""

from __future__ import annotations

from aiohttp import web

from .errors import bad_request, not_found
from .faults import FaultRuleError, parse_plan
from .state import json_body, json_object, state_of

ADMIN_PREFIX = "/__admin/"


def add_admin_routes(app: web.Application) -> None:
    app.router.add_get("/__admin/health", health)
    app.router.add_get("/__admin/dump", dump)
    app.router.add_get("/__admin/faults", get_faults)
    app.router.add_post("/__admin/faults", set_faults)
    app.router.add_delete("/__admin/faults", clear_faults)
    app.router.add_get("/__admin/features", get_features)
    app.router.add_post("/__admin/features", set_features)
    app.router.add_post("/__admin/keys/revoke", revoke_key)
    app.router.add_post("/__admin/keys/restore", restore_key)
    app.router.add_get("/__admin/requests", get_requests)
    app.router.add_delete("/__admin/requests", clear_requests)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def dump(request: web.Request) -> web.Response:
    return web.json_response(state_of(request).dump())


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(state_of(request).faults.describe())


async def set_faults(request: web.Request) -> web.Response:
    """Replace all rules; the RNG restarts from the (possibly new) seed."""
    state = state_of(request)
    try:
        rules, seed = parse_plan(await json_object(request))
    except FaultRuleError as error:
        raise bad_request(str(error)) from error
    state.faults.replace(rules, seed)
    return web.json_response(state.faults.describe())


async def clear_faults(request: web.Request) -> web.Response:
    state = state_of(request)
    state.faults.replace([])
    return web.json_response(state.faults.describe())


async def get_features(request: web.Request) -> web.Response:
    return web.json_response({"signed_url": state_of(request).signed_url})


async def set_features(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await json_object(request)
    if set(body) - {"signed_url"} or not isinstance(body.get("signed_url"), bool):
        raise bad_request('features take {"signed_url": true|false}')
    state.signed_url = body["signed_url"]
    return web.json_response({"signed_url": state.signed_url})


async def revoke_key(request: web.Request) -> web.Response:
    return await _set_revoked(request, revoked=True)


async def restore_key(request: web.Request) -> web.Response:
    return await _set_revoked(request, revoked=False)


async def _set_revoked(request: web.Request, revoked: bool) -> web.Response:
    body = await json_body(request)
    key = body.get("key") if isinstance(body, dict) else None
    if not isinstance(key, str):
        raise bad_request('expected {"key": "<api key>"}')
    try:
        grant = state_of(request).keys.set_revoked(key, revoked)
    except KeyError as error:
        raise not_found("no such api key in the seed") from error
    return web.json_response({"user": grant.user, "revoked": grant.revoked})


async def get_requests(request: web.Request) -> web.Response:
    return web.json_response(state_of(request).journal.describe())


async def clear_requests(request: web.Request) -> web.Response:
    state_of(request).journal.clear()
    return web.json_response([])
