"""The change follower against a real Orthanc: staged once, nothing missed."""

import json
from pathlib import Path

import pydicom
import pytest

from hyperwheel import labels
from tests.helpers.dicom import (
    SeriesSpec,
    StudySpec,
    send,
    three_series_study,
    write_study,
)
from tests.helpers.orthanc import OrthancServer
from tests.helpers.service import ServiceProcess
from tests.helpers.waiting import wait_until
from tests.helpers.workspace import Workspace


def staged_datasets(workspace: Workspace) -> dict[str, Path]:
    """SOPInstanceUID -> staged path, for every staged DICOM file on disk."""
    found = {}
    for path in workspace.staging.rglob("*.dcm"):
        found[pydicom.dcmread(path).SOPInstanceUID] = path
    return found


def test_three_series_study_is_staged_completely_then_stable(
    tmp_path: Path,
    orthanc: OrthancServer,
    workspace: Workspace,
    service: ServiceProcess,
) -> None:
    """Every instance sent lands once in the section-7 tree; the study gets STABLE."""
    study = three_series_study()
    paths = write_study(study, tmp_path / "sent")
    service.start()

    send(paths, orthanc.dicom_port)
    wait_until(lambda: workspace.reached(study.uid, "RECEIVING"), 20, "RECEIVING")
    wait_until(lambda: workspace.reached(study.uid, "STABLE"), 30, "STABLE")

    staged = staged_datasets(workspace)
    sent = {pydicom.dcmread(p).SOPInstanceUID: p for p in paths}
    assert staged.keys() == sent.keys()
    for sop, path in staged.items():
        original = pydicom.dcmread(sent[sop])
        copy = pydicom.dcmread(path)
        assert copy == original
        relative = path.relative_to(workspace.staging)
        assert relative.parts[:3] == ("prisma", "SUBJ001", "2026-12-03_10_00_00")
        assert relative.parts[3] in ("1 - T1 axial", "2 - T2 axial", "3 - FLAIR")
        assert relative.name == f"{sop}.dcm"

    assert workspace.transitions(study.uid)[:2] == [
        (None, "RECEIVING"),
        ("RECEIVING", "STABLE"),
    ]
    status = workspace.cli("status")
    assert "prisma" in status.stdout and "SUBJ001" in status.stdout


def test_late_series_after_stable_reopens_and_is_staged(
    tmp_path: Path,
    orthanc: OrthancServer,
    workspace: Workspace,
    service: ServiceProcess,
) -> None:
    """A series that arrives once the study is STABLE reopens it and is staged."""
    study = three_series_study()
    first = write_study(study, tmp_path / "first")
    send(first, orthanc.dicom_port)
    # Stopped right after STABLE, so the late series finds the study there.
    service.start(crash_at="transition.stable.after_commit")
    assert service.wait_exit(60) != 0

    late = StudySpec(
        patient_id=study.patient_id,
        uid=study.uid,
        series=[SeriesSpec("4", "late DWI", study.series[0].start, instances=2)],
    )
    late_paths = write_study(late, tmp_path / "late")
    send(late_paths, orthanc.dicom_port)
    service.start()

    wait_until(lambda: workspace.reached(study.uid, "STABLE", times=2), 60, "again")
    assert len(staged_datasets(workspace)) == len(first) + len(late_paths)
    reopened = [t for t in workspace.transitions(study.uid) if t[1] == "RECEIVING"]
    assert reopened[1] == ("STABLE", "RECEIVING")


def test_study_unstable_when_orthanc_stopped_still_becomes_stable(
    tmp_path: Path,
    orthanc: OrthancServer,
    workspace: Workspace,
    service: ServiceProcess,
) -> None:
    """Orthanc restarted mid-study sends no StableStudy; reconcile still moves it."""
    study = three_series_study()
    paths = write_study(study, tmp_path / "sent")
    service.start()
    send(paths, orthanc.dicom_port)
    wait_until(lambda: len(workspace.files()) == len(paths), 20, "all staged")

    orthanc.stop()
    orthanc.start()
    # The service keeps polling through the outage; a restart reconciles.
    service.stop()
    service.start()

    wait_until(lambda: workspace.reached(study.uid, "STABLE"), 30, "STABLE")
    assert len(staged_datasets(workspace)) == len(paths)


def test_study_deleted_by_hand_does_not_stop_the_follower(
    tmp_path: Path,
    orthanc: OrthancServer,
    workspace: Workspace,
    service: ServiceProcess,
) -> None:
    """A study deleted from Orthanc mid-flight is skipped; the next one is staged."""
    doomed = three_series_study(patient="GONE")
    service.start()
    send(write_study(doomed, tmp_path / "doomed"), orthanc.dicom_port)
    study_id = orthanc.get("/studies")[0]
    orthanc.delete(f"/studies/{study_id}")

    survivor = three_series_study(patient="KEPT")
    paths = write_study(survivor, tmp_path / "kept")
    send(paths, orthanc.dicom_port)

    wait_until(lambda: workspace.reached(survivor.uid, "STABLE"), 30, "STABLE")
    assert service.running()


# Orthanc itself refuses a PatientID over 64 characters, so the 10 kB values
# travel in SeriesDescription and OperatorsName.
HOSTILE = [
    ("../../etc/passwd", "a/b\\c", "../.."),
    ("", "", ""),
    ("Übung — T1 ✓ 日本語", "Pätient/ø", "Öperätor"),
    ("x" * 10_000, "y" * 64, "o" * 10_000),
    ("..", ".", "."),
]


@pytest.mark.parametrize(("description", "patient", "operator"), HOSTILE)
def test_hostile_tags_stay_inside_the_staging_root(
    tmp_path: Path,
    orthanc: OrthancServer,
    workspace: Workspace,
    service: ServiceProcess,
    description: str,
    patient: str,
    operator: str,
) -> None:
    """Tag values with separators, dots, non-ASCII or 10 kB never leave the root."""
    study = StudySpec(
        patient_id=patient or None,
        series=[
            SeriesSpec(
                "7",
                description or None,
                three_series_study().series[0].start,
                operators_name=operator or None,
            )
        ],
    )
    paths = write_study(study, tmp_path / "sent")
    service.start()
    send(paths, orthanc.dicom_port)
    wait_until(lambda: workspace.reached(study.uid, "STABLE"), 30, "STABLE")

    root = workspace.staging.resolve()
    staged = list(root.rglob("*.dcm"))
    assert len(staged) == len(paths)
    for path in staged:
        assert path.resolve().is_relative_to(root)
        relative = path.relative_to(root)
        assert relative.parts[0] == labels.sanitize(labels.routing_key(operator))
        assert relative.parts[1] == labels.sanitize(patient)
        assert relative.parts[3] == labels.acquisition_label("7", description)


def test_study_without_one_routing_key_is_marked_in_status(
    tmp_path: Path,
    orthanc: OrthancServer,
    workspace: Workspace,
    service: ServiceProcess,
) -> None:
    """Series that disagree on OperatorsName: no route, and status says why."""
    study = three_series_study()
    study.series[1].operators_name = "other-study"
    service.start()
    send(write_study(study, tmp_path / "sent"), orthanc.dicom_port)
    wait_until(lambda: workspace.reached(study.uid, "STABLE"), 30, "STABLE")

    [row] = json.loads(workspace.cli("status", "--json").stdout)
    assert row["route"] is None
    assert (
        row["route_problem"] == "series disagree on OperatorsName: other-study, prisma"
    )
    assert "series disagree" in workspace.cli("status").stdout
