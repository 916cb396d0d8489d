"""Ingest: can staging keep up with Orthanc receiving a study?

Sends 1,000 instances with dcmtk's storescu to a real Orthanc while
``hyperwheel run`` follows it with its default poll interval, then compares
Orthanc's receive rate (instances over the storescu run) with hyperwheel's
staging rate (instances over the span between the first and the last staged
file's write time), and reports how long after the last instance arrived the
store listed it as staged (files are recorded in batches, after the write).

Targets: ratio >= 1.0 and last_lag_s <= 2.
"""

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _support import summary

from tests.helpers.dicom import SeriesSpec, StudySpec, send, write_study
from tests.helpers.orthanc import OrthancServer
from tests.helpers.service import ServiceProcess
from tests.helpers.waiting import wait_until
from tests.helpers.workspace import Workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=1000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hyperwheel-ingest-") as folder:
        run(Path(folder), args.instances)


def run(folder: Path, count: int) -> None:
    per_series = count // 4
    start = datetime(2026, 12, 3, 9, 0)
    study = StudySpec(
        series=[
            SeriesSpec(str(n), f"series {n}", start, instances=per_series)
            for n in range(1, 5)
        ]
    )
    paths = write_study(study, folder / "sent")
    orthanc = OrthancServer(folder / "orthanc").start()
    workspace = Workspace(
        folder / "hyperwheel", orthanc_url=orthanc.url, poll_interval=1.0
    ).write()
    service = ServiceProcess(workspace).start()
    try:
        wait_until(lambda: "follower.ready" in service.log(), 30, "service ready")

        sent_at = time.time()
        send(paths, orthanc.dicom_port)
        received_at = time.time()
        wait_until(lambda: len(workspace.files()) >= len(paths), 120, "all staged")

        files = workspace.files()
        written = sorted(
            (workspace.staging / f["staged_path"]).stat().st_mtime for f in files
        )
        recorded = max(_epoch(f["staged_at"]) for f in files)
    finally:
        service.stop()
        orthanc.stop()

    orthanc_rate = len(paths) / (received_at - sent_at)
    staging_rate = len(paths) / max(written[-1] - written[0], 1e-6)
    print(f"{len(paths)} instances of {paths[0].stat().st_size} bytes")
    summary(
        instances=len(paths),
        orthanc_rate=round(orthanc_rate, 1),
        staging_rate=round(staging_rate, 1),
        ratio=round(staging_rate / orthanc_rate, 2),
        last_lag_s=round(recorded - received_at, 2),
    )


def _epoch(stamp: str) -> float:
    return (
        datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC).timestamp()
    )


if __name__ == "__main__":
    main()
