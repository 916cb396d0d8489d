"""Run every benchmark, one after another, and print one table of the figures
that have a target, each beside the alternative it is measured against.

Each benchmark prints ``key=value`` pairs on its last line; this script reads
them and checks the targets written in the benchmarks' docstrings. ``--quick``
passes smaller sizes, for a smoke run; the published figures come from a run
without it. Exit status 1 when a target is missed, so a scheduled run can
raise its hand.
"""

import argparse
import operator
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Target:
    figure: str
    against: str
    compare: Callable[[float, float], bool]
    bound: float | str  # a number, or the name of another figure (a difference)

    def describe(self) -> str:
        sign = "≥" if self.compare is operator.ge else "≤"
        return f"{sign} {self.bound}"


@dataclass(frozen=True)
class Benchmark:
    script: str
    quick_args: tuple[str, ...]
    targets: tuple[Target, ...]


_GE, _LE = operator.ge, operator.le

BENCHMARKS = (
    Benchmark(
        "ingest.py",
        ("--instances", "200"),
        (
            Target("ratio", "Orthanc's own ingest rate", _GE, 1.0),
            Target("last_lag_s", "last instance stored in Orthanc", _LE, 2.0),
        ),
    ),
    Benchmark(
        "idle.py",
        ("--seconds", "20"),
        (
            Target("cpu_s_per_min", "-", _LE, 0.6),
            Target("rss_mb", "-", _LE, 80.0),
        ),
    ),
    Benchmark(
        "sftp_pull.py",
        ("--files", "4", "--rounds", "1"),
        (
            Target("ratio_vs_sftp_cli", "OpenSSH sftp CLI", _GE, 0.9),
            Target("ratio_vs_paramiko", "paramiko get", _GE, 2.0),
        ),
    ),
    Benchmark(
        "pull_memory.py",
        ("--mb", "200"),
        (Target("growth_mb", "RSS before the pull", _LE, 50.0),),
    ),
    Benchmark(
        "upload.py",
        ("--megabytes", "100"),
        (
            Target("ratio_vs_curl", "curl multipart POST", _GE, 0.8),
            Target("verify_requests", "acquisitions + 3", _LE, "verify_bound"),
        ),
    ),
    Benchmark(
        "end_to_end.py",
        ("--series", "3", "--instances", "20", "--raw-mb", "10"),
        (Target("overhead_ratio", "sftp CLI + curl + plain deletes", _LE, 1.5),),
    ),
    Benchmark(
        "soak.py",
        ("--studies", "20", "--instances", "20"),
        (Target("rss_growth_mb", "RSS after warm-up", _LE, 10.0),),
    ),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--only", nargs="*", help="benchmark names, e.g. idle")
    args = parser.parse_args()

    rows: list[tuple[str, str, str, str, str, str]] = []
    missed = False
    for benchmark in BENCHMARKS:
        name = benchmark.script.removesuffix(".py")
        if args.only and name not in args.only:
            continue
        figures, seconds = _run(benchmark, args.quick)
        print(f"{name}: {seconds:.0f} s", flush=True)
        for target in benchmark.targets:
            value = figures.get(target.figure)
            met = value is not None and target.compare(
                float(value), _bound(target, figures)
            )
            missed |= not met
            rows.append(
                (
                    name,
                    target.figure,
                    "-" if value is None else str(value),
                    target.describe(),
                    target.against,
                    "met" if met else "MISSED",
                )
            )

    print()
    print(_table(("benchmark", "figure", "value", "target", "against", ""), rows))
    sys.exit(1 if missed else 0)


def _run(benchmark: Benchmark, quick: bool) -> tuple[dict[str, str], float]:
    command = [sys.executable, str(HERE / benchmark.script)]
    if quick:
        command += benchmark.quick_args
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        print(result.stdout[-2000:], result.stderr[-2000:], sep="\n")
        return {}, elapsed

    pairs = (item.partition("=") for item in lines[-1].split())
    figures = {key: value for key, _, value in pairs}
    if "verify_requests" in figures and "acquisitions" in figures:
        figures["verify_bound"] = str(int(figures["acquisitions"]) + 3)

    return figures, elapsed


def _bound(target: Target, figures: dict[str, str]) -> float:
    if isinstance(target.bound, str):
        return float(figures.get(target.bound, "nan"))
    return target.bound


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


if __name__ == "__main__":
    main()
