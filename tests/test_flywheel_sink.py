"""Upload and verification against the Flywheel emulator, through the real SDK."""

import hashlib
import zipfile
from pathlib import Path
from typing import Any

import pydicom
import pytest

from hyperwheel.crashpoints import CRASH_POINTS
from tests.flywheel_emulator.fixtures import BRAIN_KEY, SPINE_KEY
from tests.flywheel_emulator.threaded import RunningEmulator
from tests.helpers.dicom import StudySpec, send, three_series_study, write_study
from tests.helpers.orthanc import OrthancServer
from tests.helpers.service import ServiceProcess, crash_and_restart
from tests.helpers.sshd import SshdServer, raw_file, scanner_section
from tests.helpers.waiting import wait_until
from tests.helpers.web import scrape, value
from tests.helpers.workspace import ROUTE, Workspace


def containers(dump: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def visit(node: dict[str, Any]) -> None:
        if node.get("container_type") == kind:
            found.append(node)
        for children in ("projects", "subjects", "sessions", "acquisitions"):
            for child in node.get(children, []):
                visit(child)

    for group in dump["groups"]:
        visit(group)
    return found


def acquisitions(dump: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Acquisition label -> node, across the whole emulated tree."""
    return {node["label"]: node for node in containers(dump, "acquisition")}


def run_to(
    workspace: Workspace,
    service: ServiceProcess,
    orthanc: OrthancServer,
    tmp_path: Path,
    state: str = "VERIFIED",
    study: StudySpec | None = None,
) -> tuple[StudySpec, list[Path]]:
    study = study or three_series_study()
    paths = write_study(study, tmp_path / "sent")
    if not service.running():
        service.start()
    send(paths, orthanc.dicom_port)
    wait_until(lambda: workspace.reached(study.uid, state), 90, state)
    return study, paths


def assert_one_clean_copy(
    emulator: RunningEmulator, client: Any, paths: list[Path], folder: Path
) -> None:
    """Each series' zip holds exactly its SOPs, one version each, no duplicates."""
    dump = emulator.admin.dump()
    assert len(containers(dump, "subject")) == 1
    assert len(containers(dump, "session")) == 1
    found = acquisitions(dump)
    assert sorted(found) == ["1 - T1 axial", "2 - T2 axial", "3 - FLAIR"]

    sent: dict[str, set[str]] = {}
    for path in paths:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        label = f"{dataset.SeriesNumber} - {dataset.SeriesDescription}"
        sent.setdefault(label, set()).add(f"{dataset.SOPInstanceUID}.dcm")
    for label, node in found.items():
        zips = [f for f in node["files"] if f["name"].endswith(".dicom.zip")]
        assert all(f["version"] == 1 for f in node["files"])
        assert [f["name"] for f in zips] == [f"{label}.dicom.zip"], zips
        assert len(zips) == 1 and zips[0]["version"] == 1
        copy = folder / zips[0]["name"]
        client.download_file_from_acquisition(node["_id"], zips[0]["name"], str(copy))
        assert zips[0]["hash"] in (None, "v0-sha384-" + sha384(copy.read_bytes()))
        members = zipfile.ZipFile(copy).namelist()
        assert set(members) == sent[label]
        assert zips[0]["type"] == "dicom"
        assert zips[0]["zip_member_count"] == len(sent[label])


def test_study_with_raw_files_reaches_verified_in_flywheels_layout(
    tmp_path: Path,
    orthanc: OrthancServer,
    routed: Workspace,
    service: ServiceProcess,
    sshd: SshdServer,
    flywheel_emulator: RunningEmulator,
    flywheel_client: Any,
) -> None:
    """One zip per series plus its raw files, same sha384, one version each."""
    routed.extra_toml = scanner_section(sshd)
    routed.write()
    raw = {
        "scan_20261203_100100.h5": "1 - T1 axial",
        "scan_20261203_102100.h5": "3 - FLAIR",
    }
    sources = {name: raw_file(sshd, name, 300_000) for name in raw}

    study, paths = run_to(routed, service, orthanc, tmp_path)

    assert_one_clean_copy(flywheel_emulator, flywheel_client, paths, tmp_path)
    dump = flywheel_emulator.admin.dump()
    [session] = containers(dump, "session")
    assert session["uid"] == study.uid and session["label"] == "2026-12-03_10_00_00"
    [subject] = containers(dump, "subject")
    assert subject["label"] == "SUBJ001"
    found = acquisitions(dump)
    for name, label in raw.items():
        [file] = [f for f in found[label]["files"] if f["name"].endswith(name)]
        expected = sha384(sources[name].read_bytes())
        assert file["hash"] == f"v0-sha384-{expected}" and file["version"] == 1


def test_signed_url_flow_and_null_hashes_still_verify(
    tmp_path: Path,
    orthanc: OrthancServer,
    routed: Workspace,
    service: ServiceProcess,
    flywheel_emulator: RunningEmulator,
    flywheel_client: Any,
) -> None:
    """Ticket uploads with no hashes from Flywheel: verified by download."""
    flywheel_emulator.admin.set_signed_url(True)
    flywheel_emulator.admin.set_faults([{"kind": "null_hash"}])

    _, paths = run_to(routed, service, orthanc, tmp_path)

    assert_one_clean_copy(flywheel_emulator, flywheel_client, paths, tmp_path)
    assert any(
        r["method"] == "PUT" and r["path"].startswith("/__storage/")
        for r in flywheel_emulator.admin.requests()
    )


def test_flaky_flywheel_and_errors_after_commit_leave_no_duplicates(
    tmp_path: Path,
    orthanc: OrthancServer,
    routed: Workspace,
    service: ServiceProcess,
    flywheel_emulator: RunningEmulator,
    flywheel_client: Any,
) -> None:
    """20% 5xx plus 5xx after committed creates and uploads: one clean copy."""
    flywheel_emulator.admin.set_faults(
        [
            {
                "kind": "error_after_commit",
                "methods": ["POST"],
                "path": "^/api/(subjects|sessions|acquisitions)$",
                "times": 3,
            },
            {
                "kind": "error_after_commit",
                "methods": ["POST"],
                "path": "/files$",
                "times": 2,
            },
            {"kind": "error", "probability": 0.2, "status": 503},
        ],
        seed=11,
    )

    _, paths = run_to(routed, service, orthanc, tmp_path)

    assert_one_clean_copy(flywheel_emulator, flywheel_client, paths, tmp_path)
    # Absorbed within their steps, the faults still show to an operator.
    samples = scrape(routed.web_url)
    failed = "hyperwheel_flywheel_failed_calls_total"
    assert value(samples, failed, call="create") >= 3
    assert value(samples, failed, call="upload") >= 2


def test_dropped_upload_is_caught_by_verify_and_sent_again(
    tmp_path: Path,
    orthanc: OrthancServer,
    routed: Workspace,
    service: ServiceProcess,
    flywheel_emulator: RunningEmulator,
    flywheel_client: Any,
) -> None:
    """An upload answered 200 but not stored is found missing and re-sent."""
    flywheel_emulator.admin.set_faults([{"kind": "drop_upload", "times": 1}])

    study, paths = run_to(routed, service, orthanc, tmp_path)

    assert_one_clean_copy(flywheel_emulator, flywheel_client, paths, tmp_path)
    assert "not verified, uploaded again" in routed.cli("status", study.uid).stdout


@pytest.mark.parametrize(
    ("problem", "fix"),
    [
        ("no route", "route"),
        ("unknown key", "key"),
        ("missing project", "route"),
        ("revoked key", "restore"),
    ],
)
def test_unroutable_or_unauthorised_study_is_held_then_retried(
    tmp_path: Path,
    orthanc: OrthancServer,
    routed: Workspace,
    service: ServiceProcess,
    flywheel_emulator: RunningEmulator,
    flywheel_client: Any,
    problem: str,
    fix: str,
) -> None:
    """Held with the reason before any upload; after the fix, retry completes."""
    if problem == "no route":
        routed.routes = {}
    elif problem == "unknown key":
        routed.keys = {"prisma": flywheel_emulator.sdk_key("not-a-key-at-all")}
    elif problem == "missing project":
        routed.routes = {"prisma": "fw://radiology/No Such Project"}
    else:
        flywheel_emulator.admin.revoke_key(BRAIN_KEY)
    routed.write()

    study, paths = run_to(routed, service, orthanc, tmp_path, state="HELD")

    [row] = routed.studies()
    assert row["state"] == "HELD"
    expected = {
        "no route": "no route for 'prisma'",
        "unknown key": "401",
        "missing project": "does not exist",
        "revoked key": "401",
    }[problem]
    assert expected in row["held_reason"]
    assert containers(flywheel_emulator.admin.dump(), "session") == []
    assert len(list(routed.staging.rglob("*.dcm"))) == len(paths)

    if fix == "restore":
        flywheel_emulator.admin.restore_key(BRAIN_KEY)
    routed.routes = {"prisma": ROUTE}
    routed.keys = {"prisma": flywheel_emulator.sdk_key(BRAIN_KEY)}
    routed.write()
    routed.cli("retry", study.uid)
    wait_until(lambda: routed.reached(study.uid, "VERIFIED"), 60, "VERIFIED")


def test_refused_key_is_checked_again_by_itself(
    tmp_path: Path,
    orthanc: OrthancServer,
    routed: Workspace,
    service: ServiceProcess,
    flywheel_emulator: RunningEmulator,
) -> None:
    """A 401 hold is released on its own after auth_recheck, once the key works."""
    routed.extra_toml = "[flywheel]\nauth_recheck = 2\n"
    routed.write()
    flywheel_emulator.admin.revoke_key(BRAIN_KEY)

    study, _ = run_to(routed, service, orthanc, tmp_path, state="HELD")
    flywheel_emulator.admin.restore_key(BRAIN_KEY)

    wait_until(lambda: routed.reached(study.uid, "VERIFIED"), 60, "VERIFIED")
    history = routed.cli("status", study.uid).stdout
    assert "released automatically to check again" in history


def test_key_for_another_project_is_held_as_forbidden(
    tmp_path: Path,
    orthanc: OrthancServer,
    routed: Workspace,
    service: ServiceProcess,
    flywheel_emulator: RunningEmulator,
) -> None:
    """A valid key that may not touch the routed project holds the study."""
    routed.keys = {"prisma": flywheel_emulator.sdk_key(SPINE_KEY)}
    routed.write()

    run_to(routed, service, orthanc, tmp_path, state="HELD")

    [row] = routed.studies()
    assert "prisma" in row["held_reason"]


FLYWHEEL_POINTS = [p for p in CRASH_POINTS if p.startswith("flywheel.")]


@pytest.mark.parametrize("point", FLYWHEEL_POINTS)
def test_crash_at_each_flywheel_point_still_verifies_once(
    tmp_path: Path,
    orthanc: OrthancServer,
    routed: Workspace,
    service: ServiceProcess,
    flywheel_emulator: RunningEmulator,
    flywheel_client: Any,
    point: str,
) -> None:
    """Killed at each create, upload and verify point: one clean copy after."""
    study = three_series_study()
    paths = write_study(study, tmp_path / "sent")
    send(paths, orthanc.dicom_port)

    crash_and_restart(service, point, timeout=90)

    wait_until(lambda: routed.reached(study.uid, "VERIFIED"), 90, "VERIFIED")
    assert_one_clean_copy(flywheel_emulator, flywheel_client, paths, tmp_path)


def sha384(data: bytes) -> str:
    return hashlib.sha384(data).hexdigest()
