"""Fixtures shared by every test: a real Orthanc and a hyperwheel workspace."""

# First: the emulator fixtures set flywheel-sdk's retry settings, which the
# SDK reads once at import.
from tests.flywheel_emulator.fixtures import (  # noqa: F401, I001 - fixtures
    flywheel_client,
    flywheel_emulator,
    flywheel_seed,
)

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.flywheel_emulator.fixtures import BRAIN_KEY
from tests.flywheel_emulator.threaded import RunningEmulator

from tests.helpers.orthanc import OrthancServer
from tests.helpers.service import ServiceProcess
from tests.helpers.sshd import sshd  # noqa: F401 - a fixture for every test
from tests.helpers.workspace import ROUTE, Workspace


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancServer]:
    """A real Orthanc on free loopback ports, stopped by PID afterwards."""
    server = OrthancServer(tmp_path / "orthanc").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def workspace(tmp_path: Path, orthanc: OrthancServer) -> Workspace:
    """Configuration files pointing hyperwheel at the test's Orthanc."""
    return Workspace(tmp_path / "hyperwheel", orthanc_url=orthanc.url).write()


@pytest.fixture
def service(workspace: Workspace) -> Iterator[ServiceProcess]:
    """A ``hyperwheel run`` process factory; whatever it started is stopped."""
    process = ServiceProcess(workspace)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def routed(
    workspace: Workspace,
    flywheel_emulator: RunningEmulator,  # noqa: F811 - the imported fixture
) -> Workspace:
    """The workspace routes 'prisma' to the emulator's Brain MRI project."""
    workspace.routes = {"prisma": ROUTE}
    workspace.keys = {"prisma": flywheel_emulator.sdk_key(BRAIN_KEY)}
    return workspace.write()
