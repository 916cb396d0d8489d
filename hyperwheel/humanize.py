"""Sizes and ages as a person reads them, for the status page and ``status``."""

# Decimal units, as disk and network tools print them: 1 GB is 10**9 bytes.
_BYTE_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def human_bytes(n: int) -> str:
    """``512 B``, ``1.2 GB``, ``340 MB``: one decimal only below 10 of a unit."""
    value = float(max(0, n))
    unit = _BYTE_UNITS[0]
    for unit in _BYTE_UNITS:
        # 999.5 would print as "1000", so it already counts as the next unit.
        if value < 999.5 or unit == _BYTE_UNITS[-1]:
            break
        value /= 1000

    if unit == "B":
        return f"{int(value)} B"
    if value < 9.95:
        return f"{value:.1f} {unit}"

    return f"{value:.0f} {unit}"


def human_age(seconds: float) -> str:
    """``45s``, ``3m``, ``2h 5m``, ``4d``; a negative age (clock skew) is ``0s``."""
    whole = max(0, int(seconds))
    if whole >= 86400:
        return f"{whole // 86400}d"
    if whole >= 3600:
        hours, minutes = whole // 3600, whole % 3600 // 60
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if whole >= 60:
        return f"{whole // 60}m"

    return f"{whole}s"
