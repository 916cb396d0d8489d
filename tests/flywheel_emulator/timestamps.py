"""Timestamps in the ISO-8601 UTC form Flywheel replies with."""

from __future__ import annotations

from datetime import UTC, datetime

from .errors import bad_request


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def normalize_timestamp(value: object) -> str:
    """Parse a client-supplied timestamp and render it in UTC.

    Naive timestamps are taken as UTC, which is what Flywheel assumes when a
    client leaves the offset out.
    """
    if not isinstance(value, str):
        raise bad_request(f"timestamp must be an ISO-8601 string, got {value!r}")

    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise bad_request(f"timestamp {value!r} is not ISO-8601") from error

    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat(timespec="microseconds")
