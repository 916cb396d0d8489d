"""The raw-file matching rule of DESIGN section 7, case by case."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from hyperwheel.rrdf_match import (
    StudyWindow,
    build_window,
    choose_series,
    choose_study,
    file_time,
)

DAY = datetime(2026, 12, 3)
TOLERANCE = timedelta(seconds=120)


def at(clock: str, day: datetime = DAY) -> datetime:
    hours, minutes = (int(part) for part in clock.split(":"))
    return day.replace(hour=hours, minute=minutes)


def window(study_id: str, starts: list[str], last_image: str) -> StudyWindow:
    series = {f"{study_id}-s{n}": at(s) for n, s in enumerate(starts, start=1)}
    acquired = [(sid, start, None) for sid, start in series.items()]
    acquired.append((list(series)[-1], at(last_image), None))
    built = build_window(study_id, series, acquired)
    assert built is not None
    return built


STUDY = window("a", ["10:00", "10:10", "10:20"], "10:25")


@pytest.mark.parametrize(
    ("clock", "series"),
    [("09:59", "a-s1"), ("10:01", "a-s1"), ("10:12", "a-s2"), ("10:24", "a-s3")],
)
def test_file_goes_to_the_series_running_at_its_time(clock: str, series: str) -> None:
    """09:59 (within tolerance), 10:01, 10:12, 10:24 -> series 1, 1, 2, 3."""
    owner = choose_study(at(clock), [STUDY], TOLERANCE)

    assert owner is STUDY
    assert choose_series(at(clock), owner).series_id == series


@pytest.mark.parametrize(
    "moment", [at("13:00"), at("10:01", DAY - timedelta(days=1)), at("09:57")]
)
def test_files_outside_every_window_stay_on_the_scanner(moment: datetime) -> None:
    """13:00, the day before, and beyond the tolerance match no study."""
    assert choose_study(moment, [STUDY], TOLERANCE) is None


def test_back_to_back_studies_each_file_has_one_owner() -> None:
    """Overlapping windows: the study started most recently before the file wins."""
    first = window("first", ["10:00", "10:10"], "10:29")
    second = window("second", ["10:30", "10:40"], "10:50")
    studies = [first, second]

    assert choose_study(at("10:29"), studies, TOLERANCE) is first
    assert choose_study(at("10:31"), studies, TOLERANCE) is second
    # In the gap's slack, before the second started, the first still owns it.
    assert (
        choose_study(at("10:30") - timedelta(seconds=30), studies, TOLERANCE) is first
    )


def test_file_before_every_candidate_goes_to_the_earliest() -> None:
    """Within tolerance before two studies' starts, the earlier study takes it."""
    early = window("early", ["10:01"], "10:05")
    late = window("late", ["10:02"], "10:06")

    assert choose_study(at("10:00"), [late, early], TOLERANCE) is early


def test_name_stamp_wins_over_mtime_in_both_spellings() -> None:
    """YYYYMMDD_HHMMSS and YYYYMMDDTHHMMSS in the name are the file's time."""
    assert file_time("scan_20261203_101200.h5", 0, None) == (
        datetime(2026, 12, 3, 10, 12),
        "name",
    )
    assert file_time("x20261203T101200y.h5", 0, None)[0] == datetime(
        2026, 12, 3, 10, 12
    )


def test_mtime_is_read_in_the_scanner_zone() -> None:
    """A UTC mtime becomes scanner-local time, whatever this machine's zone."""
    mtime = datetime(2026, 12, 3, 9, 12, tzinfo=UTC).timestamp()

    moment, source = file_time("raw.h5", mtime, ZoneInfo("Europe/Berlin"))

    assert (moment, source) == (datetime(2026, 12, 3, 10, 12), "mtime")
    assert choose_series(moment, STUDY).series_id == "a-s2"


def test_series_without_start_uses_its_earliest_acquisition() -> None:
    """No SeriesDate/Time: the series starts at its first AcquisitionDateTime."""
    built = build_window(
        "b",
        {"s1": at("10:00"), "s2": None},
        [
            ("s1", at("10:01"), None),
            ("s2", at("10:15"), None),
            ("s2", at("10:18"), None),
        ],
    )
    assert built is not None
    assert [s.start for s in built.series] == [at("10:00"), at("10:15")]
    assert built.end == at("10:18")


def test_study_end_falls_back_to_content_time() -> None:
    """Without any AcquisitionDateTime the end is the latest content time."""
    built = build_window("c", {"s1": at("10:00")}, [("s1", None, at("10:30"))])

    assert built is not None and built.end == at("10:30")
