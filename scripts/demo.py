"""The whole main job on one machine, with real parts where they exist here.

Starts a real Orthanc and a real OpenSSH sshd (serving a folder shaped like
the scanner's, with raw ``.h5`` files) on free loopback ports, runs
``hyperwheel run`` against them, sends a sample three-series study with
dcmtk's storescu, and prints ``hyperwheel status`` until the study's raw data
is pulled and filed beside its series (RRDF_SYNCED). Everything lives under
``demo-run/`` (removed at the start of each run) so it can be inspected after.
"""

import getpass
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers.dicom import send, three_series_study, write_study  # noqa: E402
from tests.helpers.orthanc import OrthancServer  # noqa: E402
from tests.helpers.service import ServiceProcess  # noqa: E402
from tests.helpers.sshd import SshdServer  # noqa: E402
from tests.helpers.workspace import Workspace  # noqa: E402

FOLDER = REPO / "demo-run"
TIMEOUT = 60
# The furthest state the pipeline reaches so far.
GOAL = "RRDF_SYNCED"


def main() -> int:
    shutil.rmtree(FOLDER, ignore_errors=True)
    orthanc = OrthancServer(FOLDER / "orthanc").start()
    print(
        f"Orthanc {orthanc.get('/system')['Version']} at {orthanc.url}, "
        f"DICOM port {orthanc.dicom_port} (AET HYPERWHEEL)"
    )
    scanner = SshdServer(FOLDER / "scanner").start()
    raw = make_raw_files(scanner.root)
    print(f"scanner (sshd) at 127.0.0.1:{scanner.port} with {len(raw)} raw files")
    workspace = Workspace(FOLDER / "hyperwheel", orthanc_url=orthanc.url)
    workspace.extra_toml = scanner_section(scanner)
    workspace.write()
    service = ServiceProcess(workspace).start()
    try:
        study = three_series_study()
        paths = write_study(study, FOLDER / "sample-study")
        send(paths, orthanc.dicom_port)
        print(f"sent {len(paths)} instances of study {study.uid} with storescu\n")

        state = watch(workspace, study.uid)
        print("\nstaging tree:")
        for path in sorted(workspace.staging.rglob("*.*")):
            if ".hyperwheel-tmp" not in path.parts:
                print("  ", path.relative_to(workspace.staging))
        print(f"\n$ hyperwheel status {study.uid}")
        print(workspace.cli("status", study.uid).stdout)
        print(f"service log: {service.log_path}")
        return 0 if state == GOAL else 1
    finally:
        service.stop()
        scanner.stop()
        orthanc.stop()


def make_raw_files(root: Path) -> list[Path]:
    """Raw files stamped inside the sample study's series (10:00, 10:10, 10:20)."""
    folder = root / "rrdf_20261203_095500"
    folder.mkdir(parents=True)
    paths = []
    for stamp in ("100100", "101200", "102030"):
        path = folder / f"raw_20261203_{stamp}.h5"
        path.write_bytes(os.urandom(256 * 1024))
        paths.append(path)
    # Outside every study's window: stays on the scanner.
    (folder / "raw_20261203_150000.h5").write_bytes(os.urandom(1024))
    return paths


def scanner_section(scanner: SshdServer) -> str:
    return f"""
[scanner]
host = "127.0.0.1"
port = {scanner.port}
username = "{getpass.getuser()}"
client_keys = ["{scanner.client_key}"]
known_hosts = "{scanner.known_hosts}"
rrdf_root = "{scanner.root}"
"""


def watch(workspace: Workspace, study_uid: str) -> str | None:
    deadline = time.monotonic() + TIMEOUT
    shown = None
    while time.monotonic() < deadline:
        state = workspace.state_of(study_uid)
        if state != shown:
            print(f"$ hyperwheel status   # study is now {state}")
            print(workspace.cli("status").stdout)
            shown = state
        if state in (GOAL, "HELD"):
            return state
        time.sleep(0.5)
    print(f"the study did not reach {GOAL} within {TIMEOUT} s", file=sys.stderr)
    return shown


if __name__ == "__main__":
    sys.exit(main())
