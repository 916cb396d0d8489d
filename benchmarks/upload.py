"""Upload: does hyperwheel send a study to Flywheel as fast as curl?

A real Orthanc receives a study of SERIES series while a real sshd serves one
random raw ``.h5`` file per series (MEGABYTES in all), stamped just after the
series started so hyperwheel files it beside that series. ``hyperwheel run``
takes the study through to VERIFIED on the Flywheel emulator.

* sink_mb_s: bytes of the study's zips and raw files over the time from
  RRDF_SYNCED to UPLOADED in the study journal (finding containers, building
  the zips and uploading them, as the service does it). prepare_s is the
  part before the first upload (up to the last zip being built).
* curl_mb_s: the same staged files POSTed to the same emulator by ``curl``,
  one multipart request per file, one after another, into a fresh acquisition.
* verify_requests: Flywheel API requests of the verify step; acquisitions:
  how many the session has (the step should need about one request each).
* step_failures: failed pipeline steps of the study; with any, the figures
  include retries and the verify count may miss an earlier round.

Targets: ratio_vs_curl >= 0.8 and verify_requests <= acquisitions + 3.
"""

import argparse
import getpass
import json
import os
import re
import subprocess
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _support import summary

from tests.flywheel_emulator.fixtures import BRAIN_KEY, default_seed
from tests.flywheel_emulator.threaded import RunningEmulator, running_emulator
from tests.helpers.dicom import SeriesSpec, StudySpec, send, write_study
from tests.helpers.orthanc import OrthancServer
from tests.helpers.service import ServiceProcess
from tests.helpers.sshd import SshdServer
from tests.helpers.waiting import wait_until
from tests.helpers.workspace import Workspace

ROUTE = "fw://radiology/Brain MRI"
START = datetime(2026, 12, 3, 9, 0)
RAW_FOLDER = f"rrdf_{START:%Y%m%d_%H%M%S}"
CHUNK = 8 << 20
CONTAINER_ID = re.compile(r"[0-9a-f]{24}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=int, default=500)
    parser.add_argument("--series", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hyperwheel-upload-") as folder:
        run(Path(folder), args.megabytes, args.series)


def run(folder: Path, megabytes: int, series: int) -> None:
    study = study_spec(series)
    with running_emulator(default_seed(), data_dir=folder / "flywheel") as emulator:
        workspace = upload_with_service(folder, emulator, study, megabytes)
        rows = study_rows(workspace, study.uid)
        verify_requests = requests_of_verify_step(emulator)
        acquisitions = acquisition_count(emulator, rows["session"])
        curl_seconds = upload_with_curl(workspace, emulator, rows)

    size = sum(f["size"] for f in rows["files"])
    sink_mb_s = size / rows["upload_seconds"] / 1e6
    curl_mb_s = size / curl_seconds / 1e6
    for request, count in Counter(verify_requests).items():
        print(f"verify step: {count} x {request}")
    summary(
        megabytes=round(size / 1e6),
        files=len(rows["files"]),
        upload_s=round(rows["upload_seconds"], 2),
        prepare_s=round(rows["prepare_seconds"], 2),
        curl_s=round(curl_seconds, 2),
        sink_mb_s=round(sink_mb_s, 1),
        curl_mb_s=round(curl_mb_s, 1),
        ratio_vs_curl=round(sink_mb_s / curl_mb_s, 2),
        verify_requests=len(verify_requests),
        acquisitions=acquisitions,
        step_failures=rows["step_failures"],
    )


def study_spec(series: int) -> StudySpec:
    """Series ten minutes apart; each one's images 30, 60 and 90 s after it."""
    return StudySpec(
        study_time=START.strftime("%H%M%S"),
        series=[
            SeriesSpec(str(n), f"series {n}", START + timedelta(minutes=10 * n))
            for n in range(1, series + 1)
        ],
    )


def upload_with_service(
    folder: Path, emulator: RunningEmulator, study: StudySpec, megabytes: int
) -> Workspace:
    """Send the study and its raw files through ``hyperwheel run`` to VERIFIED."""
    with ExitStack() as stack:
        sshd = SshdServer(folder / "sshd")
        stack.callback(sshd.stop)
        sshd.start()
        write_raw_files(sshd.root / RAW_FOLDER, study, megabytes)

        orthanc = OrthancServer(folder / "orthanc")
        stack.callback(orthanc.stop)
        orthanc.start()

        workspace = Workspace(folder / "hyperwheel", orthanc_url=orthanc.url)
        workspace.routes = {"prisma": ROUTE}
        workspace.keys = {"prisma": emulator.sdk_key(BRAIN_KEY)}
        workspace.extra_toml = scanner_section(sshd)
        workspace.write()
        service = ServiceProcess(workspace)
        stack.callback(service.stop)
        service.start()

        send(write_study(study, folder / "sent"), orthanc.dicom_port)
        wait_until(
            lambda: finished(workspace, study.uid),
            120 + megabytes / 5,
            "the study to be VERIFIED",
            interval=0.2,
        )
        if not workspace.reached(study.uid, "VERIFIED"):
            raise RuntimeError(f"study held: {workspace.studies()[0]['held_reason']}")

    return workspace


def write_raw_files(root: Path, study: StudySpec, megabytes: int) -> None:
    """One random file per series, stamped a minute after the series began."""
    root.mkdir(parents=True)
    size = megabytes * 1_000_000 // len(study.series)
    for series in study.series:
        stamp = series.start + timedelta(minutes=1)
        with open(root / f"scan_{stamp:%Y%m%d_%H%M%S}.h5", "wb") as raw:
            for offset in range(0, size, CHUNK):
                raw.write(os.urandom(min(CHUNK, size - offset)))


def scanner_section(sshd: SshdServer) -> str:
    return "\n".join(
        [
            "[scanner]",
            'host = "127.0.0.1"',
            f"port = {sshd.port}",
            f'username = "{getpass.getuser()}"',
            f'client_keys = ["{sshd.client_key}"]',
            f'known_hosts = "{sshd.known_hosts}"',
            f'rrdf_root = "{sshd.root}"',
            "",
        ]
    )


def finished(workspace: Workspace, study_uid: str) -> bool:
    return workspace.reached(study_uid, "VERIFIED") or (
        workspace.state_of(study_uid) == "HELD"
    )


def study_rows(workspace: Workspace, study_uid: str) -> dict[str, Any]:
    """Upload time, session and uploaded files, as the service recorded them."""
    [study] = workspace.query(
        "SELECT id, fw_session_id FROM studies WHERE study_instance_uid = ?",
        study_uid,
    )
    entered = {
        row["to_state"]: _epoch(row["at"])
        for row in workspace.query(
            "SELECT to_state, at FROM study_journal WHERE entity = ? ORDER BY seq",
            study["id"],
        )
    }
    files = workspace.query(
        "SELECT kind, staged_path, size, flywheel_name, staged_at FROM files "
        "WHERE study_id = ? AND kind IN ('zip', 'raw') ORDER BY staged_path",
        study["id"],
    )
    failures = workspace.query(
        "SELECT event FROM study_events WHERE study_id = ? AND event LIKE '%.failed'",
        study["id"],
    )
    zipped = max(_epoch(f["staged_at"]) for f in files if f["kind"] == "zip")
    return {
        "session": study["fw_session_id"],
        "step_failures": len(failures),
        "upload_seconds": entered["UPLOADED"] - entered["RRDF_SYNCED"],
        "prepare_seconds": zipped - entered["RRDF_SYNCED"],
        "files": files,
    }


def requests_of_verify_step(emulator: RunningEmulator) -> list[str]:
    """``METHOD path`` of each API request the verify step made.

    The emulator's request journal has no times, only order. Each step begins
    by looking its project up, and verify comes last, so its requests are
    those from the last lookup on.
    """
    seen = [
        f"{r['method']} {CONTAINER_ID.sub('{id}', r['path'])}"
        for r in emulator.admin.requests()
        if not r["path"].startswith(("/__admin", "/__storage"))
    ]
    lookups = [n for n, request in enumerate(seen) if request == "POST /api/lookup"]
    return seen[lookups[-1] :]


def acquisition_count(emulator: RunningEmulator, session_id: str) -> int:
    sessions = [
        session
        for group in emulator.admin.dump()["groups"]
        for project in group["projects"]
        for subject in project["subjects"]
        for session in subject["sessions"]
        if session["_id"] == session_id
    ]
    return len(sessions[0]["acquisitions"])


def upload_with_curl(
    workspace: Workspace, emulator: RunningEmulator, rows: dict[str, Any]
) -> float:
    """Seconds for curl to POST every staged file into a fresh acquisition."""
    body = {"label": "curl baseline", "session": rows["session"]}
    created = curl(
        f"{emulator.api_url}/acquisitions",
        "--header",
        "Content-Type: application/json",
        "--data",
        json.dumps(body),
    )
    url = f"{emulator.api_url}/acquisitions/{json.loads(created)['_id']}/files"

    started = time.perf_counter()
    for file in rows["files"]:
        path = workspace.staging / file["staged_path"]
        name = file["flywheel_name"] or path.name
        curl(
            url,
            "--form",
            "metadata=" + json.dumps({"name": name}),
            "--form",
            f'file=@"{path}";filename="{name}"',
        )
    return time.perf_counter() - started


def curl(url: str, *options: str) -> bytes:
    """One authorised POST (``--form`` or ``--data`` make it one); its reply."""
    return subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--fail",
            "--noproxy",
            "*",
            "--header",
            f"Authorization: scitran-user {BRAIN_KEY}",
            *options,
            url,
        ],
        check=True,
        capture_output=True,
    ).stdout


def _epoch(stamp: str) -> float:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return moment.astimezone(UTC).timestamp()


if __name__ == "__main__":
    main()
