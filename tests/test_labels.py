"""Labels and routing keys, by example and by property."""

from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperwheel import dicomtime, labels
from hyperwheel.staging import inside


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ("T1 axial", "T1 axial"),
        ("../../etc/passwd", "_.._etc_passwd"),
        ("a/b\\c", "a_b_c"),
        ("  .hidden", "hidden"),
        ("", "unknown"),
        (None, "unknown"),
        ("...", "unknown"),
        ("Übung 日本語", "Übung 日本語"),
        ("x" * 300, "x" * 100),
        ("Doe^John", "Doe^John"),
        ("t2*  (fat-sat), v+1", "t2_  (fat-sat), v+1"),
    ],
)
def test_sanitize_examples(raw: str | None, label: str) -> None:
    """Section 7's rule on typical and hostile values."""
    assert labels.sanitize(raw) == label


@given(st.text())
def test_sanitized_label_is_one_safe_component(value: str) -> None:
    """Never empty, never a dot name, never a separator, short, idempotent."""
    label = labels.sanitize(value)

    assert label and label not in (".", "..")
    assert "/" not in label and "\\" not in label and "\x00" not in label
    assert len(label) <= 100 and len(label.encode()) <= 200
    assert labels.sanitize(label) == label
    assert inside(Path("/staging"), Path(label, label)).is_relative_to("/staging")


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("  prisma ", "prisma"),
        ("Prisma", "Prisma"),
        ("first\\second", "first"),
        ("   ", None),
        (None, None),
    ],
)
def test_routing_key_is_the_first_trimmed_value(
    value: str | None, key: str | None
) -> None:
    """Spaces trimmed, case kept, first of several values."""
    assert labels.routing_key(value) == key


def test_study_route_needs_series_to_agree() -> None:
    """One key across series routes; disagreement or a blank is a stated problem."""
    assert labels.study_route(["a", "a"]) == ("a", None)
    route, problem = labels.study_route(["a", "b"])
    assert route is None and problem is not None and "a, b" in problem
    route, problem = labels.study_route(["a", None])
    assert route is None and problem is not None and "empty" in problem


@pytest.mark.parametrize(
    ("date", "time", "label"),
    [
        ("20261203", "101500", "2026-12-03_10_15_00"),
        ("20261203", "101500.123456", "2026-12-03_10_15_00"),
        ("20261203", None, "2026-12-03_00_00_00"),
        ("20261203", "1015", "2026-12-03_10_15_00"),
        (None, "101500", "0000-00-00_10_15_00"),
        ("garbage", "xx", "0000-00-00_00_00_00"),
    ],
)
def test_session_label(date: str | None, time: str | None, label: str) -> None:
    """YYYY-MM-DD_hh_mm_ss with the documented fallbacks."""
    assert labels.session_label(date, time) == label


def test_acquisition_label_fallbacks() -> None:
    """Number and description; number alone; 0 when the number is missing."""
    assert labels.acquisition_label("3", "FLAIR") == "3 - FLAIR"
    assert labels.acquisition_label("3", "  ") == "3"
    assert labels.acquisition_label(None, "FLAIR") == "0 - FLAIR"


def test_dicom_times_parse_on_the_scanner_clock() -> None:
    """DA+TM and DT become naive datetimes; offsets are ignored, junk is None."""
    assert dicomtime.combine("20261203", "101500.5") == datetime(
        2026, 12, 3, 10, 15, 0, 500000
    )
    assert dicomtime.from_datetime("20261203101500+0100") == datetime(
        2026, 12, 3, 10, 15
    )
    assert dicomtime.combine("2026", "1015") is None
    assert dicomtime.from_datetime("") is None
