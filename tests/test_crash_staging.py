"""Crashes while a study arrives: after restart, every instance staged once."""

from datetime import datetime
from pathlib import Path

import pytest

from hyperwheel.crashpoints import CRASH_POINTS
from hyperwheel.staging import TEMPORARY_FOLDER
from tests.helpers.dicom import SeriesSpec, StudySpec, send, write_study
from tests.helpers.orthanc import OrthancServer
from tests.helpers.service import ServiceProcess, crash_and_restart
from tests.helpers.waiting import wait_until
from tests.helpers.workspace import Workspace

# The points this stage of the pipeline passes through while a study arrives.
ARRIVAL_POINTS = [
    point
    for point in CRASH_POINTS
    if point.startswith(("staging.", "follower.", "transition.stable."))
]


def test_arrival_points_cover_staging_follower_and_stable() -> None:
    """The list this test walks is not empty and names real points."""
    assert {"staging.after_download", "follower.after_cursor"} <= set(ARRIVAL_POINTS)


@pytest.mark.parametrize("point", ARRIVAL_POINTS)
def test_crash_while_300_instances_arrive_loses_and_duplicates_nothing(
    tmp_path: Path,
    orthanc: OrthancServer,
    workspace: Workspace,
    service: ServiceProcess,
    point: str,
) -> None:
    """Killed at a point, restarted: 300 instances staged exactly once, STABLE."""
    start = datetime(2026, 12, 3, 9, 0)
    study = StudySpec(
        series=[
            SeriesSpec(str(n), f"series {n}", start, instances=100) for n in (1, 2, 3)
        ]
    )
    paths = write_study(study, tmp_path / "sent")

    send(paths, orthanc.dicom_port)
    crash_and_restart(service, point)

    wait_until(lambda: workspace.reached(study.uid, "STABLE"), 60, "STABLE")
    in_orthanc = {
        i["ID"] for i in orthanc.get(f"/studies/{orthanc.get('/studies')[0]}/instances")
    }
    staged = workspace.files()
    assert sorted(f["source"] for f in staged) == sorted(in_orthanc)
    on_disk = list(workspace.staging.rglob("*.dcm"))
    assert len(on_disk) == 300
    assert list((workspace.staging / TEMPORARY_FOLDER).iterdir()) == []
