"""What ``hyperwheel status`` shows: one row per study, or one study's history."""

import json
from datetime import UTC, datetime
from typing import Any

from hyperwheel.store import StateStore, StudyEvent, StudyRecord
from statemachine import JournalEntry


def study_json(record: StudyRecord) -> dict[str, Any]:
    """The stable ``--json`` shape; scripts and the status page rely on it."""
    return {
        "study_instance_uid": record.study_instance_uid,
        "orthanc_id": record.id,
        "route": record.route,
        "route_problem": record.route_problem,
        "state": record.state.name,
        "held_reason": record.held_reason,
        "held_from": record.held_from.name if record.held_from else None,
        "updated_at": record.updated_at,
        "created_at": record.created_at,
        "subject": record.subject_label,
        "session": record.session_label,
        "cycle": record.cycle,
        "files": record.file_count,
        "bytes": record.byte_count,
        "attempts": record.attempts,
        "last_error": record.last_error,
    }


async def status_json(store: StateStore) -> str:
    return json.dumps([study_json(s) for s in await store.studies()], indent=2)


def render_table(records: list[StudyRecord], now: datetime | None = None) -> str:
    if not records:
        return "no studies yet"
    now = now or datetime.now(UTC)
    header = ("STUDY", "STATE", "ROUTE", "SUBJECT", "SESSION", "FILES", "AGE", "NOTE")
    rows = [header]
    for record in records:
        note = record.held_reason or record.route_problem or record.last_error or ""
        rows.append(
            (
                record.study_instance_uid or record.id,
                record.state.name,
                record.route or "-",
                record.subject_label or "-",
                record.session_label or "-",
                str(record.file_count),
                _age(record.updated_at, now),
                note,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())

    return "\n".join(lines)


def render_history(
    record: StudyRecord, journal: list[JournalEntry], events: list[StudyEvent]
) -> str:
    lines = [
        f"study {record.study_instance_uid or '-'} (orthanc {record.id})",
        f"state {record.state.name}, cycle {record.cycle}, route {record.route or '-'}",
    ]
    if record.route_problem:
        lines.append(f"route problem: {record.route_problem}")
    if record.held_reason:
        lines.append(f"held: {record.held_reason}")
    if record.last_error:
        lines.append(
            f"last error (attempt {record.attempts}, next try "
            f"{record.next_try_at or '-'}): {record.last_error}"
        )
    lines.append("")
    lines.append("transitions:")
    for entry in journal:
        source = entry.from_state or "-"
        lines.append(f"  {entry.at}  {source} -> {entry.to_state}  {entry.reason}")
    if events:
        lines.append("")
        lines.append("decisions:")
        for event in events:
            lines.append(f"  {event.at}  {event.event}  {event.detail}")

    return "\n".join(lines)


def _age(timestamp: str, now: datetime) -> str:
    then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"

    return f"{seconds}s"
