"""Idle footprint: what ``hyperwheel run`` costs a Raspberry Pi doing nothing.

Starts a real Orthanc and the service with the shipped defaults (1 s poll,
300 s reconcile), waits until it is following, then measures CPU time and
resident memory over 60 s of quiet.

Targets: cpu_s_per_min < 0.6 and rss_mb < 80.
"""

import argparse
import tempfile
import time
from pathlib import Path

from _support import cpu_seconds, memory_mb, summary

from tests.helpers.orthanc import OrthancServer
from tests.helpers.service import ServiceProcess
from tests.helpers.waiting import wait_until
from tests.helpers.workspace import Workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hyperwheel-idle-") as folder:
        run(Path(folder), args.seconds)


def run(folder: Path, seconds: float) -> None:
    orthanc = OrthancServer(folder / "orthanc").start()
    workspace = Workspace(
        folder / "hyperwheel", orthanc_url=orthanc.url, poll_interval=1.0
    ).write()
    service = ServiceProcess(workspace).start()
    try:
        wait_until(lambda: "follower.ready" in service.log(), 30, "service ready")
        assert service.process is not None
        pid = service.process.pid

        before = cpu_seconds(pid)
        time.sleep(seconds)
        used = cpu_seconds(pid) - before
        rss = memory_mb(pid)
        peak = memory_mb(pid, "VmHWM")
    finally:
        service.stop()
        orthanc.stop()

    summary(
        seconds=seconds,
        cpu_s_per_min=round(used * 60 / seconds, 3),
        rss_mb=round(rss, 1),
        peak_rss_mb=round(peak, 1),
    )


if __name__ == "__main__":
    main()
