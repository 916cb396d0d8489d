"""The read-only HTML status page: one self-refreshing document, no scripts.

Every value taken from a study is escaped: labels and UIDs come from DICOM tags,
which whoever runs the scanner controls.
"""

import html
from collections import Counter
from datetime import datetime
from typing import Any

from hyperwheel.humanize import human_age, human_bytes

# Badge colours; the browser test counts HELD and PURGED pixels in a screenshot.
STATE_COLOURS: dict[str, tuple[int, int, int]] = {
    "RECEIVING": (100, 116, 139),
    "STABLE": (29, 78, 216),
    "RRDF_SYNCED": (109, 40, 217),
    "UPLOADED": (3, 105, 161),
    "VERIFIED": (15, 118, 110),
    "PURGED": (21, 128, 61),
    "HELD": (185, 28, 28),
}
HELD_COLOUR = STATE_COLOURS["HELD"]
PURGED_COLOUR = STATE_COLOURS["PURGED"]

_COLUMNS = ("Study", "State", "Route", "Subject", "Session", "Files", "Size", "Age")
_EMPTY = (
    '<p class="empty">No studies yet. Each appears here once Orthanc receives it.</p>'
)

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; color: #1f2937; margin: 16px 24px; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 12px; }
h1 { font-size: 20px; margin: 0 8px 0 0; }
.muted { color: #6b7280; }
.health { font-weight: 600; color: #b91c1c; }
.health.ok { color: #15803d; }
table { border-collapse: collapse; width: 100%; margin-top: 14px; }
th { text-align: left; font-weight: 600; color: #4b5563; background: #f3f4f6; }
th, td { padding: 5px 8px; border-bottom: 1px solid #e5e7eb; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.uid { font: 12px ui-monospace, monospace; overflow-wrap: anywhere; width: 30ch;
  min-width: 16ch; }
td.note { overflow-wrap: anywhere; min-width: 16ch; }
tr.held td { background: #fef2f2; }
.problem { color: #b91c1c; }
.badge { display: inline-block; padding: 1px 7px; border-radius: 4px; color: #fff;
  font-size: 12px; font-weight: 600; white-space: nowrap; background: #6b7280; }
progress { width: 120px; vertical-align: middle; margin-right: 6px; }
.step { display: inline-block; }
.empty { margin-top: 40px; font-size: 16px; color: #6b7280; }
""" + "".join(
    f".s-{state} {{ background: #{r:02x}{g:02x}{b:02x}; }}\n"
    for state, (r, g, b) in STATE_COLOURS.items()
)


def render_page(
    studies: list[dict[str, Any]],
    now: datetime,
    *,
    refresh_seconds: int = 5,
    health: str | None = None,
) -> str:
    """A complete HTML5 document for ``studies`` (``study_json`` plus progress).

    ``now`` must be timezone-aware: ages are measured from ``updated_at``, which
    the store writes in UTC.
    """
    counts = Counter(str(study.get("state")) for study in studies)
    order = [*STATE_COLOURS, *sorted(counts.keys() - STATE_COLOURS.keys())]
    badges = [_badge(s, f"{s} {counts[s]}") for s in order if counts[s]]
    # An empty span would still take a flex gap in the header.
    summary = f"<span>{' '.join(badges)}</span>" if badges else ""
    header = (
        "<header><h1>hyperwheel</h1>"
        f'<span class="muted">{_e(now.strftime("%Y-%m-%d %H:%M:%S %Z"))}</span>'
        f"{summary}{_health(health)}</header>"
    )

    if studies:
        head = "".join(f"<th>{name}</th>" for name in _COLUMNS)
        rows = "\n".join(_row(study, now) for study in studies)
        body = f"<table><tr>{head}<th>Note</th></tr>\n{rows}\n</table>"
    else:
        body = _EMPTY

    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">'
        "<title>hyperwheel status</title>"
        f"<style>{_CSS}</style></head>\n"
        f"<body>{header}\n{body}\n</body></html>\n"
    )


def _row(study: dict[str, Any], now: datetime) -> str:
    state = str(study.get("state"))
    uid = study.get("study_instance_uid") or study.get("orthanc_id")
    note = study.get("held_reason") or study.get("last_error") or ""
    route = _e(study.get("route"))
    if not study.get("route") and study.get("route_problem"):
        route = f'<span class="problem">{_e(study["route_problem"])}</span>'

    cells = [
        # Long UIDs wrap at their dots rather than mid-number.
        f'<td class="uid">{_e(uid).replace(".", ".<wbr>")}',
        f"<td>{_badge(state, state)}",
        f"<td>{route}",
        f"<td>{_e(study.get('subject'))}",
        f"<td>{_e(study.get('session'))}",
        f'<td class="num">{_e(study.get("files"))}',
        f'<td class="num">{_e(human_bytes(int(study.get("bytes") or 0)))}',
        f'<td class="num">{_e(_age(study.get("updated_at"), now))}',
        f'<td class="note">{_progress(study.get("progress"))}{_e(note)}',
    ]
    row_class = ' class="held"' if state == "HELD" else ""

    return f"<tr{row_class}>" + "</td>".join(cells) + "</td></tr>"


def _progress(progress: dict[str, Any] | None) -> str:
    if not progress:
        return ""
    total = max(0, int(progress.get("total_bytes") or 0))
    done = min(max(0, int(progress.get("done_bytes") or 0)), total)
    step = progress.get("step") or "transfer"
    text = f"{step} {human_bytes(done)} of {human_bytes(total)}"
    bar = ""
    # A zero maximum is invalid HTML, so an unknown total shows the text alone.
    if total:
        bar = f'<progress value="{done}" max="{total}"></progress>'
        text += f" ({100 * done // total}%)"

    return f'<div>{bar}<span class="step">{_e(text)}</span></div>'


def _badge(state: str, text: str) -> str:
    # Only known state names reach the class attribute; anything else stays grey.
    css_class = f"badge s-{state}" if state in STATE_COLOURS else "badge"

    return f'<span class="{css_class}">{_e(text)}</span>'


def _health(health: str | None) -> str:
    if health is None:
        return ""
    css_class = "health ok" if health == "healthy" else "health"

    return f'<span class="{css_class}">{_e(health)}</span>'


def _age(updated_at: str | None, now: datetime) -> str:
    if not updated_at:
        return "-"
    then = datetime.fromisoformat(updated_at)

    return human_age((now - then).total_seconds())


def _e(value: object) -> str:
    """Escaped text for element content and quoted attributes; None reads ``-``."""
    return "-" if value is None else html.escape(str(value), quote=True)
