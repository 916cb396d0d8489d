"""Which study and series a raw file belongs to, by time (DESIGN section 7).

Everything here is pure: times are naive datetimes on the scanner's clock,
and the caller persists and journals each decision.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

_STAMP = re.compile(r"(?<!\d)(\d{8})[_T](\d{6})(?!\d)")


@dataclass(frozen=True)
class SeriesStart:
    series_id: str
    start: datetime


@dataclass(frozen=True)
class StudyWindow:
    """A study's series starts (sorted) and when its last image was taken."""

    study_id: str
    series: tuple[SeriesStart, ...]
    end: datetime

    @property
    def start(self) -> datetime:
        return self.series[0].start

    def contains(self, moment: datetime, tolerance: timedelta) -> bool:
        return self.start - tolerance <= moment <= self.end + tolerance


def file_time(name: str, mtime: float, zone: ZoneInfo | None) -> tuple[datetime, str]:
    """The file's time on the scanner clock: its name's stamp, else its mtime.

    mtimes are UTC seconds and are moved into the scanner's zone (``None``:
    this machine's zone).
    """
    match = _STAMP.search(name)
    if match is not None:
        try:
            return datetime.strptime(match[1] + match[2], "%Y%m%d%H%M%S"), "name"
        except ValueError:
            pass

    moment = datetime.fromtimestamp(mtime, UTC).astimezone(zone)

    return moment.replace(tzinfo=None), "mtime"


def choose_study(
    moment: datetime, windows: list[StudyWindow], tolerance: timedelta
) -> StudyWindow | None:
    """The study whose window holds ``moment``; the rule settles overlaps.

    Among several, the one with the latest first series start not after the
    file's time wins (the scan that was running); if every candidate starts
    after it, the earliest does.
    """
    candidates = [w for w in windows if w.series and w.contains(moment, tolerance)]
    if not candidates:
        return None
    started = [w for w in candidates if w.start <= moment]
    if started:
        return max(started, key=lambda w: (w.start, w.study_id))

    return min(candidates, key=lambda w: (w.start, w.study_id))


def choose_series(moment: datetime, window: StudyWindow) -> SeriesStart:
    """The series with the latest start not after ``moment``, else the first."""
    started = [s for s in window.series if s.start <= moment]

    return started[-1] if started else window.series[0]


def build_window(
    study_id: str,
    series_starts: dict[str, datetime | None],
    acquired: list[tuple[str, datetime | None, datetime | None]],
) -> StudyWindow | None:
    """A study's window from its series and instances.

    ``series_starts`` maps series id to SeriesDate+SeriesTime (or None);
    ``acquired`` lists (series id, AcquisitionDateTime, ContentDate+Time) per
    instance. A series without a start falls back to its earliest
    acquisition; the end is the latest acquisition if any instance has one,
    else the latest content time, else the last series start.
    """
    starts = []
    for series_id, start in series_starts.items():
        own = [a for s, a, _ in acquired if s == series_id and a is not None]
        start = start or (min(own) if own else None)
        if start is not None:
            starts.append(SeriesStart(series_id, start))
    if not starts:
        return None
    starts.sort(key=lambda s: (s.start, s.series_id))

    acquisitions = [a for _, a, _ in acquired if a is not None]
    contents = [c for _, _, c in acquired if c is not None]
    end = max(acquisitions or contents or [starts[-1].start])

    return StudyWindow(study_id, tuple(starts), max(end, starts[-1].start))
