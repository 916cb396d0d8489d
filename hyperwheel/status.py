"""What ``hyperwheel status`` shows: one row per study, or one study's history."""

import json
import urllib.request
from datetime import UTC, datetime
from typing import Any

from hyperwheel import progress
from hyperwheel.humanize import human_age, human_bytes
from hyperwheel.settings import MetricsSettings
from hyperwheel.store import StateStore, StudyEvent, StudyRecord
from statemachine import JournalEntry

_LIVE_TIMEOUT = 1.0
# A service listening on every address is reached on loopback.
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104


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
        # Filled in the service's process only, for the steps it runs now.
        "progress": progress.of(record.id),
    }


async def snapshot(store: StateStore) -> list[dict[str, Any]]:
    """What ``status --json`` prints and ``/status.json`` serves."""
    return [study_json(s) for s in await store.studies()]


def render_table(studies: list[dict[str, Any]], now: datetime | None = None) -> str:
    """Aligned columns for a terminal; the note (a held reason) is never cut."""
    if not studies:
        return "no studies yet"
    now = now or datetime.now(UTC)
    header = (
        "STUDY",
        "STATE",
        "ROUTE",
        "SUBJECT",
        "SESSION",
        "FILES",
        "SIZE",
        "AGE",
        "PROGRESS",
        "NOTE",
    )
    rows = [header]
    for study in studies:
        note = study["held_reason"] or study["route_problem"] or study["last_error"]
        rows.append(
            (
                study["study_instance_uid"] or study["orthanc_id"],
                study["state"],
                study["route"] or "-",
                study["subject"] or "-",
                study["session"] or "-",
                str(study["files"]),
                human_bytes(study["bytes"]),
                human_age(_seconds_since(study["updated_at"], now)),
                _progress_text(study.get("progress")),
                note or "",
            )
        )

    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())

    return "\n".join(lines)


def live_progress(settings: MetricsSettings) -> dict[str, Any]:
    """The progress of steps in flight by study, asked of the running service.

    Only the service knows how far a pull or upload has got; without it
    (stopped, or another machine's store) there is none to show.
    """
    host = "127.0.0.1" if settings.host in _WILDCARDS else settings.host
    if ":" in host:
        host = f"[{host}]"
    # No proxy: the environment's would not know our loopback service.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(
            f"http://{host}:{settings.port}/status.json", timeout=_LIVE_TIMEOUT
        ) as reply:
            live = json.load(reply)
        return {s["orthanc_id"]: s["progress"] for s in live if s.get("progress")}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def with_progress(
    studies: list[dict[str, Any]], progress: dict[str, Any]
) -> list[dict[str, Any]]:
    return [{**s, "progress": progress.get(s["orthanc_id"])} for s in studies]


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


def _seconds_since(timestamp: str, now: datetime) -> float:
    then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))

    return (now - then).total_seconds()


def _progress_text(progress: dict[str, Any] | None) -> str:
    if not progress:
        return "-"
    done, total = progress["done_bytes"], progress["total_bytes"]
    percent = 100 * done // total if total else 100

    return (
        f"{progress['step']} {percent}% ({human_bytes(done)} of {human_bytes(total)})"
    )
