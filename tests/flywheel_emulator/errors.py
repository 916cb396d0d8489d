"""Errors shaped the way Flywheel reports them: JSON with message and status."""

from __future__ import annotations

from aiohttp import web


class ApiError(Exception):
    """A request failure that becomes a Flywheel-style JSON error reply."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def forbidden(message: str) -> ApiError:
    return ApiError(403, message)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def error_response(status: int, message: str) -> web.Response:
    body = {"message": message, "status_code": status}
    return web.json_response(body, status=status)
