"""Request plumbing shared by every route: journal, faults, error replies."""

from __future__ import annotations

import contextlib
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from .admin_routes import ADMIN_PREFIX
from .errors import ApiError, error_response
from .faults import FaultRule
from .state import RECORD_KEY, EmulatorState, note_fault, state_of

LOG = logging.getLogger(__name__)
CHUNK_SIZE = 1 << 20
BEFORE_KINDS = frozenset({"error", "delay", "timeout", "revoke_key"})
AFTER_KINDS = frozenset({"error_after_commit"})


def is_admin(request: web.Request) -> bool:
    return request.path.startswith(ADMIN_PREFIX)


@web.middleware
async def journal_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    if is_admin(request):
        return await handler(request)

    record = state_of(request).journal.open(
        method=request.method,
        path=request.path,
        query=dict(request.query),
        authorized="Authorization" in request.headers,
    )
    request[RECORD_KEY] = record
    started = time.monotonic()
    try:
        response = await handler(request)
        record.status = response.status
        return response
    finally:
        record.duration_ms = round((time.monotonic() - started) * 1000, 3)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Every failure leaves as Flywheel-style JSON, never as an HTML page."""
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error.status, error.message)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return error_response(error.status, error.reason)
    except Exception as error:
        LOG.exception("emulator failed on %s %s", request.method, request.path)
        return error_response(500, f"emulator error: {error!r}")


@web.middleware
async def fault_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    if is_admin(request):
        return await handler(request)

    state = state_of(request)
    early = state.faults.fire(BEFORE_KINDS, request.method, request.path)
    for rule in early:
        note_fault(request, rule.kind)
        refusal = await _before_handling(request, state, rule)
        if refusal is not None:
            return refusal

    response = await handler(request)

    for rule in early:
        if rule.kind == "timeout" and rule.after_commit:
            await state.pause(rule.seconds)

    if response.status < 400:
        late = state.faults.fire(AFTER_KINDS, request.method, request.path)
        if late:
            note_fault(request, late[0].kind)
            return _injected_error(late[0])
    return response


async def _before_handling(
    request: web.Request, state: EmulatorState, rule: FaultRule
) -> web.Response | None:
    if rule.kind == "delay" or (rule.kind == "timeout" and not rule.after_commit):
        await state.pause(rule.seconds)
        return None

    if rule.kind == "revoke_key":
        _revoke_callers_key(request, state)
        await _drain(request)
        return error_response(rule.status, "API key has been revoked")

    if rule.kind == "error":
        # Read the body first so the client finishes sending and sees the status
        # instead of a broken connection.
        await _drain(request)
        return _injected_error(rule)
    return None


def _revoke_callers_key(request: web.Request, state: EmulatorState) -> None:
    _, _, key = request.headers.get("Authorization", "").strip().partition(" ")
    with contextlib.suppress(KeyError):
        state.keys.set_revoked(key.strip(), revoked=True)


def _injected_error(rule: FaultRule) -> web.Response:
    response = error_response(rule.status, f"emulated fault: {rule.kind}")
    if rule.retry_after is not None:
        response.headers["Retry-After"] = f"{rule.retry_after:g}"
    return response


async def _drain(request: web.Request) -> None:
    async for _ in request.content.iter_chunked(CHUNK_SIZE):
        pass
