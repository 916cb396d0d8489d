"""Soak for leaks: does the service's memory stay flat over many studies?

STUDIES studies of INSTANCES instances (two series each, default 100 x 50)
go through a real Orthanc, a real sshd (one raw file per study) and the
Flywheel emulator, which misbehaves on FAULT_RATE (5 %) of the API requests
by a seeded draw: 503s, 503s after committing, slow answers and uploads
answered but dropped. Studies are sent as a scanner sends them through a
day, at most IN_FLIGHT ahead of those finished. The service runs with the
shipped poll interval (1 s); its RSS (VmRSS in /proc/PID/status) is sampled
every second.

* rss_warm_mb: RSS with the service idle once the first WARMUP studies (a
  fifth of them by default) are finished: imports done, caches and pools
  filled, every code path taken.
* rss_end_mb: RSS with the service idle once every study is finished.
* rss_growth_mb: rss_end_mb - rss_warm_mb. Target: <= 10.
* rss_peak_mb (VmHWM), faults (how many fired), step_failures, held,
  violations (of the campaign invariant, see tests/helpers/invariants.py).

Exit status 1 when a study is left unfinished or the invariant is violated.
"""

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from _support import memory_mb, summary

from tests.flywheel_emulator.fixtures import BRAIN_KEY, default_seed
from tests.flywheel_emulator.threaded import RunningEmulator, running_emulator
from tests.helpers.dicom import SeriesSpec, StudySpec, send, write_study
from tests.helpers.invariants import check_invariants, sent_instances
from tests.helpers.orthanc import OrthancServer
from tests.helpers.service import ServiceProcess
from tests.helpers.sshd import SshdServer, raw_file, scanner_section
from tests.helpers.waiting import wait_until
from tests.helpers.workspace import ROUTE, Workspace

START = datetime(2026, 12, 3, 7, 0)
COMMITTING = r"^/api/(subjects|sessions|acquisitions)$|/files$"
# Seconds of quiet before an idle reading, and readings taken then.
_SETTLE_S = 5.0
_IDLE_READINGS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--instances", type=int, default=50, help="per study")
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--warmup", type=int, help="studies; default a fifth")
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    warmup = args.warmup or max(1, args.studies // 5)

    with tempfile.TemporaryDirectory(prefix="hyperwheel-soak-") as folder:
        ok = run(Path(folder), args, warmup)
    sys.exit(0 if ok else 1)


@dataclass
class Sampler:
    """VmRSS of one process every second, on a thread of its own."""

    pid: int
    samples: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> "Sampler":
        threading.Thread(target=self._run, name="rss-sampler", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.samples.append(memory_mb(self.pid))
            except (OSError, KeyError):
                return


def run(folder: Path, args: argparse.Namespace, warmup: int) -> bool:
    studies = [study(n, args.instances) for n in range(args.studies)]
    with ExitStack() as stack:
        emulator = stack.enter_context(
            running_emulator(default_seed(), data_dir=folder / "flywheel")
        )
        sshd = SshdServer(folder / "sshd")
        stack.callback(sshd.stop)
        sshd.start()
        for spec in studies:
            first = spec.series[0].start + timedelta(seconds=45)
            raw_file(sshd, f"scan_{first:%Y%m%d_%H%M%S}.h5", 256 * 1024)
        orthanc = OrthancServer(folder / "orthanc")
        stack.callback(orthanc.stop)
        orthanc.start()
        workspace = routed_workspace(folder / "hyperwheel", orthanc, emulator, sshd)
        service = ServiceProcess(workspace)
        stack.callback(service.stop)
        service.start()
        wait_until(lambda: "follower.ready" in service.log(), 60, "service ready")
        assert service.process is not None
        sampler = Sampler(service.process.pid).start()
        stack.callback(sampler.stop)
        emulator.admin.set_faults(fault_rules(args.fault_rate), seed=args.seed)

        started = time.monotonic()
        sent: dict[str, str] = {}
        rss_start = memory_mb(service.process.pid)
        feed(studies[:warmup], folder, orthanc, workspace, service, sent, args)
        rss_warm = idle_rss(service)
        print(f"warm after {warmup} studies: {rss_warm:.1f} MB", flush=True)
        feed(studies[warmup:], folder, orthanc, workspace, service, sent, args)
        rss_end = idle_rss(service)
        seconds = time.monotonic() - started
        peak = memory_mb(service.process.pid, "VmHWM")
        sampler.stop()

        fired = sum(rule["fired"] for rule in emulator.admin.faults()["rules"])
        emulator.admin.clear_faults()
        service.stop()
        violations = check_invariants(
            sent=sent, orthanc=orthanc, emulator=emulator, workspace=workspace
        )
        for violation in violations:
            print(violation)
        states = [row["state"] for row in workspace.studies()]
        failures = workspace.query(
            "SELECT COUNT(*) AS n FROM study_events WHERE event LIKE '%.failed'"
        )[0]["n"]

    print("rss every 30 s:", " ".join(f"{s:.0f}" for s in sampler.samples[::30]))
    summary(
        studies=args.studies,
        instances=args.studies * args.instances,
        fault_rate=args.fault_rate,
        faults=fired,
        step_failures=failures,
        purged=states.count("PURGED"),
        held=states.count("HELD"),
        seconds=round(seconds, 1),
        rss_start_mb=round(rss_start, 1),
        rss_warm_mb=round(rss_warm, 1),
        rss_end_mb=round(rss_end, 1),
        rss_growth_mb=round(rss_end - rss_warm, 1),
        rss_peak_mb=round(peak, 1),
        violations=len(violations),
    )

    return not violations and states.count("PURGED") == args.studies


def study(number: int, instances: int) -> StudySpec:
    """Two series, ten minutes apart; a study every 40 minutes, day and night."""
    start = START + timedelta(minutes=40 * number)
    first = instances // 2
    return StudySpec(
        patient_id=f"SOAK{number:04d}",
        study_date=start.strftime("%Y%m%d"),
        study_time=start.strftime("%H%M%S"),
        series=[
            SeriesSpec("1", "T1", start, instances=first),
            SeriesSpec(
                "2", "T2", start + timedelta(minutes=10), instances=instances - first
            ),
        ],
    )


def fault_rules(rate: float) -> list[Mapping[str, Any]]:
    """About ``rate`` of the requests misbehave, in four ways."""
    share = rate / 4
    return [
        {"kind": "error", "status": 503, "probability": share},
        {
            "kind": "error_after_commit",
            "methods": ["POST"],
            "path": COMMITTING,
            "probability": share,
        },
        {"kind": "delay", "seconds": 0.5, "probability": share},
        {"kind": "drop_upload", "probability": share},
    ]


def routed_workspace(
    folder: Path, orthanc: OrthancServer, emulator: RunningEmulator, sshd: SshdServer
) -> Workspace:
    workspace = Workspace(folder, orthanc_url=orthanc.url, poll_interval=1.0)
    workspace.routes = {"prisma": ROUTE}
    workspace.keys = {"prisma": emulator.sdk_key(BRAIN_KEY)}
    workspace.extra_toml = scanner_section(sshd)
    return workspace.write()


def feed(
    studies: list[StudySpec],
    folder: Path,
    orthanc: OrthancServer,
    workspace: Workspace,
    service: ServiceProcess,
    sent: dict[str, str],
    args: argparse.Namespace,
) -> None:
    """Send the studies, at most ``in_flight`` unfinished at once, and wait
    until every one of them is PURGED or HELD."""

    def unfinished() -> int:
        if not service.running():
            raise RuntimeError(f"the service exited:\n{service.log()[-3000:]}")
        states = {
            row["study_instance_uid"]: row["state"] for row in workspace.studies()
        }
        sent_studies = set(sent.values())
        return sum(states.get(uid) not in ("PURGED", "HELD") for uid in sent_studies)

    for spec in studies:
        wait_until(lambda: unfinished() < args.in_flight, 600, "a free slot", 0.2)
        paths = write_study(spec, folder / "sent" / str(spec.patient_id))
        send(paths, orthanc.dicom_port)
        sent.update(sent_instances(paths))
        if len(set(sent.values())) % 10 == 0 and service.process is not None:
            rss = memory_mb(service.process.pid)
            print(f"{len(set(sent.values()))} sent, rss {rss:.1f} MB", flush=True)
    wait_until(lambda: unfinished() == 0, 1200, "every study finished", 0.5)


def idle_rss(service: ServiceProcess) -> float:
    """Median RSS over a few seconds of quiet, after a settling pause."""
    assert service.process is not None
    time.sleep(_SETTLE_S)
    readings = []
    for _ in range(_IDLE_READINGS):
        readings.append(memory_mb(service.process.pid))
        time.sleep(1.0)
    return statistics.median(readings)


if __name__ == "__main__":
    main()
