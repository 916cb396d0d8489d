"""DICOM dates and times as naive datetimes on the scanner's clock."""

from datetime import datetime


def combine(date: str | None, time: str | None) -> datetime | None:
    """DA + TM into one datetime; None when the date is missing or malformed."""
    day = (date or "").strip().replace("-", "")
    if len(day) != 8 or not day.isdigit():
        return None

    return from_datetime(day + (time or "").strip().replace(":", ""))


def from_datetime(value: str | None) -> datetime | None:
    """A DT value (``YYYYMMDDhhmmss.ffffff``, offset ignored) or None."""
    text = (value or "").strip()
    for sign in ("+", "-"):
        if sign in text[8:]:
            text = text[: 8 + text[8:].index(sign)]
    whole, _, fraction = text.partition(".")
    if not whole.isdigit() or len(whole) < 8:
        return None
    whole = whole[:14].ljust(14, "0")
    micro = (fraction[:6].ljust(6, "0")) if fraction.isdigit() else "000000"
    try:
        return datetime.strptime(whole + micro, "%Y%m%d%H%M%S%f")
    except ValueError:
        return None
