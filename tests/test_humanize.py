"""Human sizes and ages, shared by the status page and ``hyperwheel status``."""

import pytest

from hyperwheel.humanize import human_age, human_bytes


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (1_234_567, "1.2 MB"),
        (9_940_000, "9.9 MB"),
        (9_960_000, "10 MB"),
        (340_400_000, "340 MB"),
        (999_400_000, "999 MB"),
        (999_600_000, "1.0 GB"),
        (1_200_000_000, "1.2 GB"),
        (4 * 10**12, "4.0 TB"),
        (5 * 10**18, "5000 PB"),
        (-5, "0 B"),
    ],
)
def test_human_bytes(n: int, text: str) -> None:
    """Decimal units, one decimal below 10, never a four-digit figure but in PB."""
    assert human_bytes(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (59.9, "59s"),
        (60, "1m"),
        (180, "3m"),
        (3599, "59m"),
        (3600, "1h"),
        (2 * 3600 + 5 * 60 + 30, "2h 5m"),
        (86399, "23h 59m"),
        (86400, "1d"),
        (4 * 86400 + 7 * 3600, "4d"),
        (-30, "0s"),
    ],
)
def test_human_age(seconds: float, text: str) -> None:
    """Largest unit first; hours keep their minutes; clock skew reads as 0s."""
    assert human_age(seconds) == text
