"""The HTML status page: escaped, complete, and readable in a real browser."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hyperwheel.status import render_table
from hyperwheel.status_page import HELD_COLOUR, PURGED_COLOUR, render_page
from tests.helpers import browser
from tests.helpers.browser import colour_fraction, dump_dom, read_png, screenshot

NOW = datetime(2024, 5, 6, 12, 0, 0, tzinfo=UTC)

LONG_REASON = (
    "PatientName differs between series 3 (Doe^Jane) and series 7 (Doe^John); "
    "refusing to guess which subject this session belongs to. Fix the tags in "
    "Orthanc, then run `hyperwheel release` on this study to try again."
)


def study(**overrides: Any) -> dict[str, Any]:
    """One row in ``study_json`` shape plus ``progress``; overrides win."""
    row: dict[str, Any] = {
        "study_instance_uid": "1.2.826.0.1.3680043.8.498.10",
        "orthanc_id": "0a1b2c3d-4e5f6a7b-8c9d0e1f-2a3b4c5d-6e7f8a9b",
        "route": "brain/portable",
        "route_problem": None,
        "state": "PURGED",
        "held_reason": None,
        "held_from": None,
        "updated_at": "2024-05-06T11:57:00.000Z",
        "created_at": "2024-05-06T10:00:00.000Z",
        "subject": "sub-001",
        "session": "ses-01",
        "cycle": 1,
        "files": 412,
        "bytes": 1_234_567_890,
        "attempts": 0,
        "last_error": None,
        "progress": None,
    }

    return row | overrides


def three_studies() -> list[dict[str, Any]]:
    return [
        study(),
        study(
            study_instance_uid="1.2.826.0.1.3680043.8.498.11",
            state="HELD",
            held_reason=LONG_REASON,
            held_from="STABLE",
            subject="sub-002",
            updated_at="2024-05-06T09:55:00.000Z",
        ),
        study(
            study_instance_uid="1.2.826.0.1.3680043.8.498.12",
            state="RRDF_SYNCED",
            subject="sub-003",
            session="ses-02",
            updated_at="2024-05-06T11:59:30.000Z",
            progress={"step": "upload", "done_bytes": 400, "total_bytes": 1000},
        ),
    ]


def test_dicom_values_are_escaped() -> None:
    """A hostile subject label shows as text; the page carries no script tag."""
    page = render_page([study(subject="<script>alert(1)</script>")], NOW)

    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower()


def test_every_study_field_is_escaped() -> None:
    """Markup in any text field, route problem and progress step included."""
    hostile = '<b x="1">&'
    page = render_page(
        [
            study(
                study_instance_uid=hostile,
                route=None,
                route_problem=hostile,
                state=hostile,
                session=hostile,
                held_reason=hostile,
                progress={"step": hostile, "done_bytes": 1, "total_bytes": 2},
            )
        ],
        NOW,
        health=hostile,
    )

    assert "<b " not in page
    assert page.count("&lt;b x=&quot;1&quot;&gt;&amp;") >= 7


def test_empty_list_says_no_studies_yet() -> None:
    """A fresh install shows a friendly line instead of an empty table."""
    page = render_page([], NOW)

    assert "no studies yet" in page.lower()
    assert "<table" not in page


def test_held_reason_is_shown_in_full() -> None:
    """The operator reads why a study is held without opening the terminal."""
    page = render_page(three_studies(), NOW)

    assert LONG_REASON in page


def test_last_error_shows_when_not_held() -> None:
    """A retrying study's note column carries its last error."""
    page = render_page([study(state="STABLE", last_error="Orthanc timed out")], NOW)

    assert "Orthanc timed out" in page


def test_progress_bar_has_value_and_max() -> None:
    """A study in upload gets a progress bar and ``x of y`` text."""
    page = render_page(three_studies(), NOW)

    assert '<progress value="400" max="1000">' in page
    assert "upload 400 B of 1.0 kB" in page


def test_header_has_time_counts_health_and_refresh() -> None:
    """Header: name, render time, one count per state, health; page refreshes."""
    page = render_page(three_studies(), NOW, refresh_seconds=7, health="healthy")

    assert "<h1>hyperwheel</h1>" in page
    assert "2024-05-06 12:00:00 UTC" in page
    for count in ("PURGED 1", "HELD 1", "RRDF_SYNCED 1"):
        assert count in page
    assert "healthy" in page
    assert '<meta http-equiv="refresh" content="7">' in page


def test_rows_show_size_and_age() -> None:
    """Sizes and ages are humanised from ``bytes`` and ``updated_at``."""
    page = render_page(three_studies(), NOW)

    assert ">1.2 GB<" in page
    assert ">3m<" in page
    assert ">2h 5m<" in page
    assert ">30s<" in page


def test_page_renders_in_chromium(tmp_path: Path) -> None:
    """Chromium draws the HELD and PURGED badges and keeps every label."""
    page = tmp_path / "status.html"
    # No health line: "healthy" is drawn in the PURGED green and would count too.
    page.write_text(render_page(three_studies(), NOW))
    png = tmp_path / "status.png"

    screenshot(page.as_uri(), png)
    dom = dump_dom(page.as_uri())

    assert read_png(png).width == 1280
    # One badge covers about 0.05 % of the window; each state has two (row, header).
    assert colour_fraction(png, HELD_COLOUR) > 0.0005
    assert colour_fraction(png, PURGED_COLOUR) > 0.0005
    for label in ("sub-001", "sub-002", "sub-003"):
        assert label in dom
    assert LONG_REASON in dom


def test_missing_chromium_fails_instead_of_skipping(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """CI installs Chromium, so its absence is an error with the fix in it."""
    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "no-chromium")

    with pytest.raises(pytest.fail.Exception, match="install the chromium package"):
        dump_dom("about:blank")


def test_terminal_table_aligns_columns_and_keeps_the_held_reason_whole() -> None:
    """`hyperwheel status`: human sizes and ages, progress, the reason uncut."""
    reason = "upload: no route for 'x' in /etc/hyperwheel/routing.json " * 3
    rows = [
        study(
            state="HELD",
            held_reason=reason,
            bytes=1_500_000_000,
            updated_at="2024-05-06T10:00:00.000Z",
        ),
        study(
            orthanc_id="b",
            study_instance_uid="1.2.3",
            state="RRDF_SYNCED",
            progress={"step": "upload", "done_bytes": 400, "total_bytes": 1000},
            updated_at="2024-05-06T11:55:00.000Z",
        ),
    ]

    lines = render_table(rows, NOW).splitlines()

    header, held, uploading = lines
    assert header.index("STATE") == held.index("HELD") == uploading.index("RRDF")
    assert "1.5 GB" in held and "2h" in held and held.endswith(reason.rstrip())
    assert "upload 40% (400 B of 1.0 kB)" in uploading and "5m" in uploading
