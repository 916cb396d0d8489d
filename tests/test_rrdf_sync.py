"""Raw research data: matched by time, pulled over real SFTP, filed by series."""

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hyperwheel.crashpoints import CRASH_POINTS
from hyperwheel.staging import TEMPORARY_FOLDER
from tests.helpers.dicom import SeriesSpec, StudySpec, send, write_study
from tests.helpers.orthanc import OrthancServer
from tests.helpers.service import ServiceProcess, crash_and_restart
from tests.helpers.sshd import RAW_FOLDER, SshdServer, raw_file, scanner_section
from tests.helpers.waiting import wait_until
from tests.helpers.workspace import Workspace

DAY = datetime(2026, 12, 3)


def configure(workspace: Workspace, server: SshdServer, **settings: object) -> None:
    workspace.extra_toml = scanner_section(server, **settings)
    workspace.write()


def swoop_study(patient: str = "SUBJ001", start: datetime | None = None) -> StudySpec:
    """Series at 10:00, 10:10 and 10:20; the last image at 10:25."""
    start = start or DAY.replace(hour=10)
    return StudySpec(
        patient_id=patient,
        study_time=start.strftime("%H%M%S"),
        series=[
            SeriesSpec("1", "T1", start, instances=3),
            SeriesSpec("2", "T2", start + timedelta(minutes=10), instances=3),
            SeriesSpec("3", "FLAIR", start + timedelta(minutes=20), instances=10),
        ],
    )


def staged_raw(workspace: Workspace) -> dict[str, str]:
    """Raw file name -> the acquisition folder it was filed in."""
    return {
        p.name: p.parent.name
        for p in workspace.staging.rglob("*.h5")
        if TEMPORARY_FOLDER not in p.parts
    }


def sha384(path: Path) -> str:
    return hashlib.sha384(path.read_bytes()).hexdigest()


def test_raw_files_land_beside_the_series_running_at_their_time(
    tmp_path: Path,
    orthanc: OrthancServer,
    workspace: Workspace,
    service: ServiceProcess,
    sshd: SshdServer,
) -> None:
    """09:59, 10:01, 10:12, 10:24 -> series 1, 1, 2, 3; 13:00 and yesterday stay."""
    configure(workspace, sshd, match_tolerance=120)
    names = {
        "scan_20261203_095900.h5": "1 - T1",
        "scan_20261203_100100.h5": "1 - T1",
        "sub/scan_20261203_101200.h5": "2 - T2",
        "scan_20261203T102400.h5": "3 - FLAIR",
    }
    left = ["scan_20261203_130000.h5", "scan_20261202_100100.h5", "notes.txt"]
    sources = {name: raw_file(sshd, name) for name in [*names, *left]}
    study = swoop_study()

    service.start()
    send(write_study(study, tmp_path / "sent"), orthanc.dicom_port)
    wait_until(lambda: workspace.reached(study.uid, "RRDF_SYNCED"), 60, "RRDF_SYNCED")

    expected = {
        f"{RAW_FOLDER}__{name.replace('/', '__')}": folder
        for name, folder in names.items()
    }
    assert staged_raw(workspace) == expected
    for name, path in sources.items():
        assert path.exists(), f"{name} must stay on the scanner"
    for staged in workspace.staging.rglob("*.h5"):
        original = name_of(staged.name)
        assert sha384(staged) == sha384(sources[original])
    claims = workspace.query("SELECT remote_path FROM raw_claims")
    assert len(claims) == len(names)
    history = workspace.cli("status", study.uid).stdout
    assert history.count("rrdf.claimed") == len(names)
    assert "4 raw file(s) synced" in history


def name_of(staged_name: str) -> str:
    return staged_name.removeprefix(f"{RAW_FOLDER}__").replace("__", "/")


def test_back_to_back_studies_each_raw_file_goes_to_one(
    tmp_path: Path,
    orthanc: OrthancServer,
    workspace: Workspace,
    service: ServiceProcess,
    sshd: SshdServer,
) -> None:
    """Two patients scanned back to back: every raw file is claimed exactly once."""
    configure(workspace, sshd)
    first = swoop_study("FIRST", DAY.replace(hour=10))
    second = swoop_study("SECOND", DAY.replace(hour=10, minute=26))
    files = {
        "a_20261203_100500.h5": "FIRST",
        "b_20261203_102500.h5": "FIRST",
        "c_20261203_102700.h5": "SECOND",
        "d_20261203_104800.h5": "SECOND",
    }
    for name in files:
        raw_file(sshd, name)

    service.start()
    send(write_study(first, tmp_path / "first"), orthanc.dicom_port)
    send(write_study(second, tmp_path / "second"), orthanc.dicom_port)
    for study in (first, second):
        wait_until(lambda s=study: workspace.reached(s.uid, "RRDF_SYNCED"), 60, "sync")

    found = {
        p.name: p.relative_to(workspace.staging).parts[1]
        for p in workspace.staging.rglob("*.h5")
    }
    assert {name_of(n): subject for n, subject in found.items()} == files
    claims = workspace.query("SELECT remote_path, study_id FROM raw_claims")
    assert len(claims) == len({c["remote_path"] for c in claims}) == len(files)


def test_scanner_timezone_is_used_for_mtimes(
    tmp_path: Path,
    orthanc: OrthancServer,
    workspace: Workspace,
    service: ServiceProcess,
    sshd: SshdServer,
) -> None:
    """A file without a stamp, written 10:12 in New York, goes to series 2."""
    configure(workspace, sshd, timezone="America/New_York")
    path = raw_file(sshd, "unstamped.h5")
    new_york = datetime(2026, 12, 3, 15, 12, tzinfo=UTC)  # 10:12 EST
    os.utime(path, (new_york.timestamp(), new_york.timestamp()))
    study = swoop_study()

    service.start()
    send(write_study(study, tmp_path / "sent"), orthanc.dicom_port)
    wait_until(lambda: workspace.reached(study.uid, "RRDF_SYNCED"), 60, "RRDF_SYNCED")

    assert staged_raw(workspace) == {f"{RAW_FOLDER}__unstamped.h5": "2 - T2"}


def test_wrong_host_key_downloads_nothing_and_holds_then_skip_rrdf(
    tmp_path: Path,
    orthanc: OrthancServer,
    workspace: Workspace,
    service: ServiceProcess,
    sshd: SshdServer,
) -> None:
    """A host key mismatch is shown, held after give_up_after, released without raw."""
    configure(workspace, sshd, give_up_after=3)
    impostor = (
        sshd.host_key_line.rsplit(" ", 1)[0]
        + " "
        + ("AAAAC3NzaC1lZDI1NTE5AAAAIAbVcT1wcCkOW3vWqGgBy1lRjHhWyg5fFPzmJDzGUnZb")
    )
    sshd.known_hosts.write_text(impostor + "\n")
    raw_file(sshd, "scan_20261203_100100.h5")
    study = swoop_study()

    service.start()
    paths = write_study(study, tmp_path / "sent")
    send(paths, orthanc.dicom_port)
    wait_until(lambda: workspace.state_of(study.uid) == "HELD", 60, "HELD")

    [row] = workspace.studies()
    assert "host key" in row["held_reason"].lower()
    assert "--skip-rrdf" in row["held_reason"]
    assert list(workspace.staging.rglob("*.h5")) == []
    assert len(list(workspace.staging.rglob("*.dcm"))) == len(paths)

    workspace.cli("retry", "--skip-rrdf", study.uid)
    wait_until(lambda: workspace.reached(study.uid, "RRDF_SYNCED"), 30, "skipped")


def test_without_scanner_section_raw_data_is_skipped_and_recorded(
    tmp_path: Path,
    orthanc: OrthancServer,
    workspace: Workspace,
    service: ServiceProcess,
) -> None:
    """No [scanner]: the study moves on and its history says raw data was skipped."""
    study = swoop_study()
    service.start()
    send(write_study(study, tmp_path / "sent"), orthanc.dicom_port)

    wait_until(lambda: workspace.reached(study.uid, "RRDF_SYNCED"), 30, "RRDF_SYNCED")
    assert "no [scanner] section" in workspace.cli("status", study.uid).stdout


RAW_POINTS = [p for p in CRASH_POINTS if p.startswith(("rrdf.", "scanner."))]


@pytest.mark.parametrize("point", RAW_POINTS)
def test_crash_during_raw_sync_leaves_no_duplicate_or_torn_file(
    tmp_path: Path,
    orthanc: OrthancServer,
    workspace: Workspace,
    service: ServiceProcess,
    sshd: SshdServer,
    point: str,
) -> None:
    """Killed at each raw-data point: afterwards every file is there once, intact."""
    configure(workspace, sshd)
    big = 70 * 1024 * 1024 if point == "rrdf.after_durable_offset" else 4096
    sources = {
        "scan_20261203_100100.h5": raw_file(sshd, "scan_20261203_100100.h5", big),
        "scan_20261203_101200.h5": raw_file(sshd, "scan_20261203_101200.h5"),
    }
    study = swoop_study()
    send(write_study(study, tmp_path / "sent"), orthanc.dicom_port)

    crash_and_restart(service, point, timeout=90)

    wait_until(lambda: workspace.reached(study.uid, "RRDF_SYNCED"), 90, "RRDF_SYNCED")
    staged = list(workspace.staging.rglob("*.h5"))
    assert sorted(name_of(p.name) for p in staged) == sorted(sources)
    for path in staged:
        assert sha384(path) == sha384(sources[name_of(path.name)])
    assert list((workspace.staging / TEMPORARY_FOLDER).glob("raw-*")) == []


def test_sshd_killed_mid_transfer_resumes_to_an_identical_file(
    tmp_path: Path,
    orthanc: OrthancServer,
    workspace: Workspace,
    service: ServiceProcess,
    sshd: SshdServer,
) -> None:
    """sshd stopped after a durable checkpoint and restarted: the pull resumes."""
    configure(workspace, sshd)
    size = (200 if os.environ.get("HYPERWHEEL_FULL") else 80) * 1024 * 1024
    source = raw_file(sshd, "scan_20261203_100100.h5", size)
    study = swoop_study()

    service.start()
    send(write_study(study, tmp_path / "sent"), orthanc.dicom_port)
    wait_until(
        lambda: workspace.query("SELECT 1 FROM raw_claims WHERE durable_offset > 0"),
        60,
        "a durable checkpoint",
        interval=0.01,
    )
    sshd.stop()
    sshd.start()

    wait_until(lambda: workspace.reached(study.uid, "RRDF_SYNCED"), 90, "RRDF_SYNCED")
    [staged] = list(workspace.staging.rglob("*.h5"))
    assert sha384(staged) == sha384(source)
    assert "pipeline.step_failed" in service.log()
