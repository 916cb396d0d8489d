"""The whole main job on one machine, with real parts where they exist here.

Starts a real Orthanc on free loopback ports, runs ``hyperwheel run`` against
it, sends a sample three-series study with dcmtk's storescu, and prints
``hyperwheel status`` until the study is STABLE. Everything lives under
``demo-run/`` (removed at the start of each run) so it can be inspected after.
"""

import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers.dicom import send, three_series_study, write_study  # noqa: E402
from tests.helpers.orthanc import OrthancServer  # noqa: E402
from tests.helpers.service import ServiceProcess  # noqa: E402
from tests.helpers.workspace import Workspace  # noqa: E402

FOLDER = REPO / "demo-run"
TIMEOUT = 60


def main() -> int:
    shutil.rmtree(FOLDER, ignore_errors=True)
    orthanc = OrthancServer(FOLDER / "orthanc").start()
    print(
        f"Orthanc {orthanc.get('/system')['Version']} at {orthanc.url}, "
        f"DICOM port {orthanc.dicom_port} (AET HYPERWHEEL)"
    )
    workspace = Workspace(FOLDER / "hyperwheel", orthanc_url=orthanc.url).write()
    service = ServiceProcess(workspace).start()
    try:
        study = three_series_study()
        paths = write_study(study, FOLDER / "sample-study")
        send(paths, orthanc.dicom_port)
        print(f"sent {len(paths)} instances of study {study.uid} with storescu\n")

        state = watch(workspace, study.uid)
        print("\nstaging tree:")
        for path in sorted(workspace.staging.rglob("*.dcm")):
            print("  ", path.relative_to(FOLDER))
        print(f"\nservice log: {service.log_path}")
        return 0 if state == "STABLE" else 1
    finally:
        service.stop()
        orthanc.stop()


def watch(workspace: Workspace, study_uid: str) -> str | None:
    deadline = time.monotonic() + TIMEOUT
    shown = None
    while time.monotonic() < deadline:
        state = workspace.state_of(study_uid)
        if state != shown:
            print(f"$ hyperwheel status   # study is now {state}")
            print(workspace.cli("status").stdout)
            shown = state
        if state == "STABLE":
            return state
        time.sleep(0.5)
    print(f"the study did not reach STABLE within {TIMEOUT} s", file=sys.stderr)
    return shown


if __name__ == "__main__":
    sys.exit(main())
