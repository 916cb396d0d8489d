"""What the benchmarks share: the repo on sys.path, /proc readings, a summary line."""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    """A /proc/PID/status memory line (VmRSS now, VmHWM peak) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def summary(**figures: float | int | str) -> None:
    """The last line: key=value pairs a script can parse."""
    print(" ".join(f"{key}={value}" for key, value in figures.items()))
