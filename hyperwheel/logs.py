"""Structured logging: JSON lines for journald, readable lines on a terminal.

Every event passes :func:`redact`, which masks the values of known secrets
wherever they appear and any field whose name says it holds a credential.
"""

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from hyperwheel.secret import Secret

_MASK = "********"
_SENSITIVE_NAMES = ("password", "api_key", "apikey", "secret", "token", "private")
_known_secrets: set[str] = set()


def register_secret(value: Secret | str | None) -> None:
    """Mask this value in every later log event, however it got there."""
    text = value.reveal() if isinstance(value, Secret) else value
    # Very short values would mask ordinary words; they are not real keys.
    if text and len(text) >= 6:
        _known_secrets.add(text)


def redact(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if any(part in key.lower() for part in _SENSITIVE_NAMES):
            event[key] = _MASK
        else:
            event[key] = _mask(value)

    return event


def _mask(value: Any) -> Any:
    if isinstance(value, Secret):
        return _MASK
    if isinstance(value, str):
        for secret in _known_secrets:
            if secret in value:
                value = value.replace(secret, _MASK)
        return value
    if isinstance(value, list | tuple):
        return type(value)(_mask(item) for item in value)
    if isinstance(value, dict):
        return {key: _mask(item) for key, item in value.items()}
    if isinstance(value, BaseException):
        return _mask(f"{type(value).__name__}: {value}")

    return value


def configure(json_lines: bool | None = None, level: int = logging.INFO) -> None:
    """Set up structlog once; ``json_lines=None`` picks by whether stderr is a TTY."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    renderer: structlog.typing.Processor
    if json_lines:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer()

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
