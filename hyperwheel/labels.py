"""Labels for the staging tree and Flywheel, and the routing key.

One rule makes every label (DESIGN section 7), and the same label names the
staging folder and the Flywheel container, so what a person sees on disk is
what they find on Flywheel.
"""

from collections.abc import Iterable

MAX_CHARS = 100
# Linux refuses names over 255 bytes; 100 four-byte letters would be 400.
MAX_BYTES = 200
UNKNOWN = "unknown"
_KEPT_PUNCTUATION = frozenset(" ._+-^,()")


def sanitize(value: str | None) -> str:
    """Make ``value`` a safe, non-empty single path component.

    Letters, decimal digits, space and ``._+-^,()`` are kept; anything else,
    path separators included, becomes ``_``. Leading dots are removed, so no
    result is ``.`` or ``..``, and applying the rule twice changes nothing.
    """
    text = "".join(_keep_or_replace(char) for char in value or "")
    text = text.lstrip(". ")[:MAX_CHARS]
    while len(text.encode("utf-8")) > MAX_BYTES:
        text = text[:-1]
    text = text.rstrip(" ")

    return text or UNKNOWN


def sanitize_file_name(value: str) -> str:
    """The same character rule for a file name, allowed up to 200 bytes."""
    text = "".join(_keep_or_replace(char) for char in value).lstrip(". ")
    while len(text.encode("utf-8")) > MAX_BYTES:
        text = text[:-1]
    text = text.rstrip(" ")

    return text or UNKNOWN


def _keep_or_replace(char: str) -> str:
    if char.isalpha() or char.isdecimal() or char in _KEPT_PUNCTUATION:
        return char

    return "_"


def routing_key(operators_name: str | None) -> str | None:
    """The first OperatorsName value with spaces trimmed; None when empty."""
    if operators_name is None:
        return None
    first = operators_name.split("\\", 1)[0].strip()

    return first or None


def study_route(series_keys: Iterable[str | None]) -> tuple[str | None, str | None]:
    """The study's routing key from its series' keys, or why there is none."""
    keys = set(series_keys)
    named = sorted(k for k in keys if k is not None)
    if not keys:
        return None, "no series yet"
    if len(named) > 1:
        return None, "series disagree on OperatorsName: " + ", ".join(named)
    if None in keys:
        return None, "OperatorsName is empty in at least one series"

    return named[0], None


def session_label(study_date: str | None, study_time: str | None) -> str:
    """``YYYY-MM-DD_hh_mm_ss``; a missing time is midnight, a bad date zeros."""
    date = (study_date or "").strip().replace("-", "")
    if len(date) == 8 and date.isdigit():
        day = f"{date[0:4]}-{date[4:6]}-{date[6:8]}"
    else:
        day = "0000-00-00"

    clock = (study_time or "").strip().replace(":", "").split(".", 1)[0]
    if not clock.isdigit() or len(clock) not in (2, 4, 6):
        clock = ""
    clock = clock.ljust(6, "0")

    return sanitize(f"{day}_{clock[0:2]}_{clock[2:4]}_{clock[4:6]}")


def acquisition_label(series_number: str | None, description: str | None) -> str:
    number = (series_number or "").strip() or "0"
    text = (description or "").strip()

    return sanitize(f"{number} - {text}" if text else number)
