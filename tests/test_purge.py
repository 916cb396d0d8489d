"""Purge: a receipt first, then only verified data deleted; new cycles after."""

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from hyperwheel.crashpoints import CRASH_POINTS
from tests.flywheel_emulator.threaded import RunningEmulator
from tests.helpers.dicom import (
    SeriesSpec,
    StudySpec,
    send,
    three_series_study,
    write_study,
)
from tests.helpers.orthanc import OrthancServer
from tests.helpers.service import ServiceProcess, crash_and_restart
from tests.helpers.sshd import SshdServer, raw_file, scanner_section
from tests.helpers.waiting import wait_until
from tests.helpers.workspace import Workspace
from tests.test_flywheel_sink import acquisitions, containers


def session_files(emulator: RunningEmulator) -> list[dict[str, Any]]:
    [session] = containers(emulator.admin.dump(), "session")
    return list(session["files"])


def test_verified_study_is_purged_with_a_receipt_and_operator_files_stay(
    tmp_path: Path,
    orthanc: OrthancServer,
    routed: Workspace,
    service: ServiceProcess,
    sshd: SshdServer,
    flywheel_emulator: RunningEmulator,
) -> None:
    """Orthanc and staging emptied of the study; receipt local and on Flywheel."""
    routed.extra_toml = scanner_section(sshd)
    routed.write()
    raw_file(sshd, "scan_20261203_100100.h5", 100_000)
    study = three_series_study()
    paths = write_study(study, tmp_path / "sent")
    service.start()
    send(paths, orthanc.dicom_port)
    wait_until(lambda: routed.reached(study.uid, "RRDF_SYNCED"), 60, "RRDF_SYNCED")
    # An operator's note in a staged folder: not hyperwheel's to delete.
    folder = next(routed.staging.rglob("*.dcm")).parent
    note = folder / "operator-note.txt"
    note.write_text("kept")

    wait_until(lambda: routed.reached(study.uid, "PURGED"), 60, "PURGED")

    assert orthanc.get("/instances") == []
    assert list(routed.staging.rglob("*.dcm")) == []
    assert list(routed.staging.rglob("*.h5")) == []
    assert note.read_text() == "kept"
    [receipt_path] = (routed.state.parent / "receipts").glob("*.json")
    receipt = json.loads(receipt_path.read_text())
    assert receipt["study_instance_uid"] == study.uid
    zips = [f for f in receipt["files"] if f["kind"] == "zip"]
    assert sum(len(f["sop_instance_uids"]) for f in zips) == len(paths)
    assert receipt["flywheel"]["destination"] == "fw://radiology/Brain MRI"
    on_acquisitions = {
        f["name"]: f
        for node in acquisitions(flywheel_emulator.admin.dump()).values()
        for f in node["files"]
    }
    for entry in receipt["files"]:
        held = on_acquisitions[entry["name"]]
        assert held["hash"] == "v0-sha384-" + entry["sha384"]
        assert (held["size"], held["version"]) == (entry["size"], entry["version"])
    [on_flywheel] = [
        f for f in session_files(flywheel_emulator) if "receipt" in f["name"]
    ]
    assert on_flywheel["name"] == receipt_path.name
    assert str(receipt_path) in routed.cli("status", study.uid).stdout


def test_study_sent_again_after_purge_is_a_new_cycle_with_new_zips(
    tmp_path: Path,
    orthanc: OrthancServer,
    routed: Workspace,
    service: ServiceProcess,
    flywheel_emulator: RunningEmulator,
) -> None:
    """Re-sent after purge: `<label>_2.dicom.zip` beside the untouched first zip."""
    study = three_series_study()
    paths = write_study(study, tmp_path / "sent")
    service.start()
    send(paths, orthanc.dicom_port)
    wait_until(lambda: routed.reached(study.uid, "PURGED"), 60, "PURGED")

    send(paths[:2], orthanc.dicom_port)
    wait_until(lambda: routed.reached(study.uid, "PURGED", times=2), 60, "again")

    node = acquisitions(flywheel_emulator.admin.dump())["1 - T1 axial"]
    names = sorted((f["name"], f["version"]) for f in node["files"])
    assert names == [("1 - T1 axial.dicom.zip", 1), ("1 - T1 axial_2.dicom.zip", 1)]
    assert orthanc.get("/instances") == []


def test_late_instance_before_purge_rebuilds_the_zip_as_a_superset(
    tmp_path: Path,
    orthanc: OrthancServer,
    routed: Workspace,
    service: ServiceProcess,
    flywheel_emulator: RunningEmulator,
    flywheel_client: Any,
) -> None:
    """An instance that arrives while VERIFIED reopens; zip v2 holds old and new."""
    study = three_series_study()
    paths = write_study(study, tmp_path / "sent")
    send(paths, orthanc.dicom_port)
    service.start(crash_at="transition.verified.after_commit")
    assert service.wait_exit(90) != 0
    late = StudySpec(
        patient_id=study.patient_id,
        uid=study.uid,
        series=[
            SeriesSpec(
                "1",
                "T1 axial",
                study.series[0].start,
                uid=study.series[0].uid,
                instances=1,
            )
        ],
    )
    late_paths = write_study(late, tmp_path / "late")
    send(late_paths, orthanc.dicom_port)

    service.start()
    wait_until(lambda: routed.reached(study.uid, "PURGED"), 90, "PURGED")

    node = acquisitions(flywheel_emulator.admin.dump())["1 - T1 axial"]
    versions = sorted(f["version"] for f in node["files"])
    assert versions == [1, 2]
    copy = tmp_path / "zip"
    flywheel_client.download_file_from_acquisition(
        node["_id"], "1 - T1 axial.dicom.zip", str(copy)
    )
    assert len(zipfile.ZipFile(copy).namelist()) == 3 + 1
    assert orthanc.get("/instances") == []


PURGE_POINTS = [p for p in CRASH_POINTS if p.startswith("purge.")] + [
    "transition.purged.before_commit",
    "transition.purged.after_commit",
]


@pytest.mark.parametrize("point", PURGE_POINTS)
def test_crash_during_purge_finishes_once(
    tmp_path: Path,
    orthanc: OrthancServer,
    routed: Workspace,
    service: ServiceProcess,
    flywheel_emulator: RunningEmulator,
    point: str,
) -> None:
    """Killed at each purge point: afterwards PURGED, one receipt, Orthanc empty."""
    study = three_series_study()
    send(write_study(study, tmp_path / "sent"), orthanc.dicom_port)

    crash_and_restart(service, point, timeout=90)

    wait_until(lambda: routed.reached(study.uid, "PURGED"), 90, "PURGED")
    assert orthanc.get("/instances") == []
    receipts = [f for f in session_files(flywheel_emulator) if "receipt" in f["name"]]
    assert [f["version"] for f in receipts] == [1]
