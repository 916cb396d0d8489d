"""Fixtures shared by every test: a real Orthanc and a hyperwheel workspace."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.orthanc import OrthancServer
from tests.helpers.service import ServiceProcess
from tests.helpers.workspace import Workspace


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
