"""The command line: status, retry, run, as an operator would use them."""

import asyncio
import json
import os
import pwd
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from hyperwheel.store import StateStore
from hyperwheel.study import StudyState
from tests.helpers.orthanc import OrthancServer
from tests.helpers.service import ServiceProcess
from tests.helpers.waiting import wait_until
from tests.helpers.workspace import Workspace


def held_study(
    workspace: Workspace, held_in: StudyState = StudyState.RRDF_SYNCED
) -> None:
    """Put one study, held in ``held_in``, into the workspace's store."""

    async def make() -> None:
        store = await StateStore.open(workspace.state)
        await store.ensure_study("orth-1", study_instance_uid="1.2.840.1")
        await store.update_study("orth-1", state=held_in.name, route="prisma")
        await store.hold("orth-1", "no API key for route 'prisma'")
        await store.close()

    asyncio.run(make())


def test_status_json_on_an_empty_store_is_an_empty_list(tmp_path: Path) -> None:
    """`status --json` before any study prints []."""
    workspace = Workspace(tmp_path).write()

    result = workspace.cli("status", "--json")

    assert json.loads(result.stdout) == []


def test_status_json_shows_the_contract_fields(tmp_path: Path) -> None:
    """After transitions, --json carries DESIGN section 7's fields."""
    workspace = Workspace(tmp_path).write()
    held_study(workspace)

    [row] = json.loads(workspace.cli("status", "--json").stdout)

    assert row["study_instance_uid"] == "1.2.840.1"
    assert row["orthanc_id"] == "orth-1"
    assert row["route"] == "prisma"
    assert row["state"] == "HELD"
    assert row["held_reason"] == "no API key for route 'prisma'"
    assert row["updated_at"].endswith("Z") and "T" in row["updated_at"]


def test_status_of_one_study_shows_its_history(tmp_path: Path) -> None:
    """`status STUDY` prints each transition with its reason."""
    workspace = Workspace(tmp_path).write()
    held_study(workspace)

    text = workspace.cli("status", "1.2.840.1").stdout

    assert "- -> RECEIVING  first seen" in text
    assert "RRDF_SYNCED -> HELD  no API key for route 'prisma'" in text


def test_retry_releases_a_held_study_while_stopped(tmp_path: Path) -> None:
    """retry sends a held study back where it was held, reason cleared."""
    workspace = Workspace(tmp_path).write()
    held_study(workspace)

    result = workspace.cli("retry", "orth-1")

    assert "released to RRDF_SYNCED" in result.stdout
    [row] = json.loads(workspace.cli("status", "--json").stdout)
    assert (row["state"], row["held_reason"]) == ("RRDF_SYNCED", None)


def test_retry_of_a_study_that_is_not_held_is_refused(tmp_path: Path) -> None:
    """retry on an unknown or active study changes nothing and exits 1."""
    workspace = Workspace(tmp_path).write()
    held_study(workspace)
    workspace.cli("retry", "orth-1")

    again = workspace.cli("retry", "orth-1", check=False)
    unknown = workspace.cli("retry", "no-such-study", check=False)

    assert again.returncode == 1 and "not HELD" in again.stderr
    assert unknown.returncode == 1 and "no study" in unknown.stderr


def test_status_and_retry_work_while_the_service_runs(
    orthanc: OrthancServer, workspace: Workspace, service: ServiceProcess
) -> None:
    """The CLI and a running service share the store without lock errors."""
    service.start()
    wait_until(lambda: "follower.ready" in service.log(), 20, "service ready")
    held_study(workspace, StudyState.UPLOADED)

    workspace.cli("retry", "1.2.840.1")

    [row] = json.loads(workspace.cli("status", "--json").stdout)
    assert row["state"] == "UPLOADED"
    assert service.running()
    assert service.stop() == 0


def test_sigterm_stops_the_service_cleanly(
    orthanc: OrthancServer, workspace: Workspace, service: ServiceProcess
) -> None:
    """SIGTERM: the service logs its stop and exits 0."""
    service.start()
    wait_until(lambda: "follower.ready" in service.log(), 20, "service ready")

    assert service.stop() == 0
    assert "service.stopped" in service.log()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_status_as_root_leaves_the_store_owned_by_the_service_user() -> None:
    """Root running `status` must not leave root-owned -wal/-shm files."""
    nobody = pwd.getpwnam("nobody")
    # pytest's own temp folders are root-only; the service user must get in.
    tmp_path = Path(tempfile.mkdtemp(prefix="hyperwheel-owner-"))
    workspace = Workspace(tmp_path).write()
    held_study(workspace)
    for path in [workspace.state.parent, *workspace.state.parent.iterdir()]:
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    tmp_path.chmod(0o755)
    for name in ("hyperwheel.toml", "routing.json"):
        (tmp_path / name).chmod(0o644)

    try:
        workspace.cli("status")
        owners = {p.name: p.stat().st_uid for p in workspace.state.parent.iterdir()}
    finally:
        shutil.rmtree(tmp_path)

    assert set(owners.values()) == {nobody.pw_uid}, owners


def test_python_dash_m_runs_the_cli() -> None:
    """`python -m hyperwheel --version` works without installing a script."""
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "hyperwheel", "--version"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.stdout.strip()
