"""End to end: is hyperwheel's whole pipeline close to doing its work by hand?

A real Orthanc receives a study of SERIES series x INSTANCES instances (sent
with dcmtk's storescu) while a real sshd serves one random raw ``.h5`` file of
RAW_MB megabytes per series, stamped a minute after its series began so it is
filed beside it (series are ten minutes apart). ``hyperwheel run`` follows
Orthanc and takes the study to PURGED on the Flywheel emulator; the study
journal gives each stage's time.

* hyperwheel_s: from the study entering STABLE to it entering PURGED (raw
  files pulled, zips built and uploaded, everything verified, purged).
* baseline_s: the same work by hand, one tool after another, timed after the
  service has stopped, on the same data:
  sftp_s, the OpenSSH ``sftp`` CLI in batch mode pulling the raw files (still
  on the scanner) to a scratch folder; curl_s, ``curl`` POSTing the raw files
  and one zip per series (rebuilt, untimed, from the sent DICOM files as
  hyperwheel builds them: stored, not compressed) into a fresh acquisition,
  one multipart request per file, so the request count matches hyperwheel's;
  delete_s, the instances sent to Orthanc again (untimed), then deleted with
  one ``DELETE /instances/{id}`` after another.
* overhead_ratio: hyperwheel_s / baseline_s. step_failures: failed pipeline
  steps of the study (retries are then inside hyperwheel_s).

Target: overhead_ratio <= 1.5.
"""

import argparse
import getpass
import json
import os
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path

from _support import summary
from upload import curl

from tests.flywheel_emulator.fixtures import BRAIN_KEY, default_seed
from tests.flywheel_emulator.threaded import RunningEmulator, running_emulator
from tests.helpers.dicom import SeriesSpec, StudySpec, send, write_study
from tests.helpers.orthanc import OrthancServer
from tests.helpers.service import ServiceProcess
from tests.helpers.sshd import SshdServer, raw_file, scanner_section
from tests.helpers.waiting import wait_until
from tests.helpers.workspace import ROUTE, Workspace

START = datetime(2026, 12, 3, 10, 0)
# Summary name -> the states the stage goes from and to, in pipeline order.
STAGES = {
    "receive_s": ("RECEIVING", "STABLE"),
    "rrdf_sync_s": ("STABLE", "RRDF_SYNCED"),
    "upload_s": ("RRDF_SYNCED", "UPLOADED"),
    "verify_s": ("UPLOADED", "VERIFIED"),
    "purge_s": ("VERIFIED", "PURGED"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--instances", type=int, default=100, help="per series")
    parser.add_argument("--raw-mb", type=int, default=50, help="per raw file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hyperwheel-end-to-end-") as folder:
        run(Path(folder), args.series, args.instances, args.raw_mb)


def run(folder: Path, series: int, instances: int, raw_mb: int) -> None:
    study = study_spec(series, instances)
    dicoms = write_study(study, folder / "sent")
    with ExitStack() as stack:
        emulator = stack.enter_context(
            running_emulator(default_seed(), data_dir=folder / "flywheel")
        )
        sshd = SshdServer(folder / "sshd")
        stack.callback(sshd.stop)
        sshd.start()
        raws = write_raw_files(sshd, study, raw_mb)
        orthanc = OrthancServer(folder / "orthanc")
        stack.callback(orthanc.stop)
        orthanc.start()

        workspace = routed_workspace(folder / "hyperwheel", orthanc, emulator, sshd)
        service = ServiceProcess(workspace)
        stack.callback(service.stop)
        service.start()
        send(dicoms, orthanc.dicom_port)
        timeout = 300 + series * raw_mb / 2 + len(dicoms) / 5
        wait_for_purge(workspace, service, study.uid, timeout)
        # Stopped before the baselines: it must neither compete for the two
        # cores nor race the delete loop for the re-sent instances.
        service.stop()

        entered = entered_states(workspace, study.uid)
        failures = step_failures(workspace, study.uid)
        left_in_orthanc = len(orthanc.get("/instances"))
        zips = zip_series(study, dicoms, folder / "zips")
        sftp_s = pull_with_sftp(sshd, raws, folder / "pulled")
        curl_s = upload_with_curl(
            emulator, session_of(workspace, study.uid), raws + zips
        )
        delete_s = delete_one_by_one(orthanc, dicoms)

    stages: dict[str, float] = {}
    for name, (earlier, later) in STAGES.items():
        stages[name] = entered[later] - entered[earlier]
        print(f"{earlier} -> {later}: {stages[name]:.2f} s")
    hyperwheel_s = entered["PURGED"] - entered["STABLE"]
    baseline_s = sftp_s + curl_s + delete_s
    summary(
        series=series,
        instances=len(dicoms),
        raw_mb=series * raw_mb,
        **{name: round(seconds, 2) for name, seconds in stages.items()},
        step_failures=failures,
        left_in_orthanc=left_in_orthanc,
        sftp_s=round(sftp_s, 2),
        curl_s=round(curl_s, 2),
        delete_s=round(delete_s, 2),
        baseline_s=round(baseline_s, 2),
        hyperwheel_s=round(hyperwheel_s, 2),
        overhead_ratio=round(hyperwheel_s / baseline_s, 2),
    )


def study_spec(series: int, instances: int) -> StudySpec:
    return StudySpec(
        study_time=START.strftime("%H%M%S"),
        series=[
            SeriesSpec(
                str(n),
                f"series {n}",
                START + timedelta(minutes=10 * (n - 1)),
                instances=instances,
            )
            for n in range(1, series + 1)
        ],
    )


def write_raw_files(sshd: SshdServer, study: StudySpec, megabytes: int) -> list[Path]:
    """One random file per series, stamped a minute after the series began."""
    return [
        raw_file(
            sshd,
            f"scan_{series.start + timedelta(minutes=1):%Y%m%d_%H%M%S}.h5",
            megabytes * 1_000_000,
        )
        for series in study.series
    ]


def routed_workspace(
    folder: Path, orthanc: OrthancServer, emulator: RunningEmulator, sshd: SshdServer
) -> Workspace:
    workspace = Workspace(folder, orthanc_url=orthanc.url)
    workspace.routes = {"prisma": ROUTE}
    workspace.keys = {"prisma": emulator.sdk_key(BRAIN_KEY)}
    workspace.extra_toml = scanner_section(sshd)
    return workspace.write()


def wait_for_purge(
    workspace: Workspace, service: ServiceProcess, study_uid: str, timeout: float
) -> None:
    def settled() -> bool:
        if not service.running():
            raise RuntimeError(f"the service exited:\n{service.log()[-3000:]}")
        return workspace.reached(study_uid, "PURGED") or (
            workspace.state_of(study_uid) == "HELD"
        )

    wait_until(settled, timeout, "the study to be PURGED", interval=0.2)
    if workspace.state_of(study_uid) == "HELD":
        [study] = workspace.studies()
        raise RuntimeError(f"study HELD: {study['held_reason']}")


def entered_states(workspace: Workspace, study_uid: str) -> dict[str, float]:
    """Epoch seconds at which the study last entered each state."""
    rows = workspace.query(
        "SELECT j.from_state, j.to_state, j.at FROM study_journal j "
        "JOIN studies s ON s.id = j.entity WHERE s.study_instance_uid = ? "
        "ORDER BY j.seq",
        study_uid,
    )
    print("journal:", ", ".join(f"{r['from_state']}->{r['to_state']}" for r in rows))
    return {
        row["to_state"]: datetime.fromisoformat(row["at"]).timestamp() for row in rows
    }


def session_of(workspace: Workspace, study_uid: str) -> str:
    [study] = workspace.query(
        "SELECT fw_session_id FROM studies WHERE study_instance_uid = ?", study_uid
    )
    return str(study["fw_session_id"])


def step_failures(workspace: Workspace, study_uid: str) -> int:
    return len(
        workspace.query(
            "SELECT e.event FROM study_events e JOIN studies s ON s.id = e.study_id "
            "WHERE s.study_instance_uid = ? AND e.event LIKE '%.failed'",
            study_uid,
        )
    )


def zip_series(study: StudySpec, dicoms: list[Path], folder: Path) -> list[Path]:
    """One stored (uncompressed) zip per series of the files sent."""
    folder.mkdir()
    per_series = len(dicoms) // len(study.series)
    zips = []
    for number, series in enumerate(study.series):
        # write_study writes the series one after another, in order.
        members = dicoms[number * per_series : (number + 1) * per_series]
        path = folder / f"{series.number} - {series.description}.dicom.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            for member in members:
                archive.write(member, member.name)
        zips.append(path)
    return zips


def pull_with_sftp(sshd: SshdServer, raws: list[Path], target: Path) -> float:
    """Seconds for the sftp CLI to get every raw file, checked by size."""
    target.mkdir()
    batch = target.with_suffix(".batch")
    batch.write_text("".join(f'get "{raw}" "{target / raw.name}"\n' for raw in raws))
    command = [
        "sftp",
        "-q",
        "-b",
        str(batch),
        "-i",
        str(sshd.client_key),
        "-o",
        f"UserKnownHostsFile={sshd.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-P",
        str(sshd.port),
        f"{getpass.getuser()}@127.0.0.1",
    ]
    seconds = timed(lambda: subprocess.run(command, check=True, capture_output=True))
    pulled = sum(path.stat().st_size for path in target.iterdir())
    expected = sum(raw.stat().st_size for raw in raws)
    if pulled != expected:
        raise RuntimeError(f"sftp pulled {pulled} bytes, expected {expected}")
    return seconds


def upload_with_curl(
    emulator: RunningEmulator, session_id: str, paths: list[Path]
) -> float:
    """Seconds for curl to POST every file, one by one, to a fresh acquisition."""
    created = curl(
        f"{emulator.api_url}/acquisitions",
        "--header",
        "Content-Type: application/json",
        "--data",
        json.dumps({"label": "curl baseline", "session": session_id}),
    )
    url = f"{emulator.api_url}/acquisitions/{json.loads(created)['_id']}/files"

    def post_all() -> None:
        for path in paths:
            curl(
                url,
                "--form",
                "metadata=" + json.dumps({"name": path.name}),
                "--form",
                f'file=@"{path}";filename="{path.name}"',
            )

    return timed(post_all)


def delete_one_by_one(orthanc: OrthancServer, dicoms: list[Path]) -> float:
    """Seconds to DELETE the re-sent instances from Orthanc, one after another."""
    send(dicoms, orthanc.dicom_port)
    instances = orthanc.get("/instances")
    if len(instances) != len(dicoms):
        raise RuntimeError(f"Orthanc holds {len(instances)} of {len(dicoms)}")

    def delete_all() -> None:
        for instance in instances:
            orthanc.delete(f"/instances/{instance}")

    return timed(delete_all)


def timed(work: Callable[[], object]) -> float:
    # Earlier writes (the service's, the previous baseline's) are flushed
    # first so that no contender pays for another's.
    os.sync()
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
