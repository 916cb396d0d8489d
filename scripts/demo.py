"""The whole main job on one machine, with real parts where they exist here.

Starts a real Orthanc and a real OpenSSH sshd (serving a folder shaped like
the scanner's, with raw ``.h5`` files) on free loopback ports, and the
project's Flywheel API emulator: **not Flywheel**, a local stand-in, because
no Flywheel site is reachable here. Then runs ``hyperwheel run`` against them,
sends a sample three-series study with dcmtk's storescu, prints
``hyperwheel status`` as the study walks to PURGED (verified on Flywheel,
then deleted from Orthanc and staging, with a receipt), and lists what landed
on the emulated Flywheel, read back through flywheel-sdk.

To use a real site instead, put its project in ``routing.json``
(``"prisma": "fw://<group>/<project>"``) and its API key in the keychain
(``"prisma": "<site>:<key>"``); nothing else changes.

Everything lives under ``demo-run/`` (removed at the start of each run) so it
can be inspected after.
"""

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Before anything imports flywheel: the emulator's fixtures set its retries.
from tests.flywheel_emulator.fixtures import BRAIN_KEY, default_seed  # noqa: E402
from tests.flywheel_emulator.threaded import running_emulator  # noqa: E402
from tests.helpers.dicom import send, three_series_study, write_study  # noqa: E402
from tests.helpers.orthanc import OrthancServer  # noqa: E402
from tests.helpers.service import ServiceProcess  # noqa: E402
from tests.helpers.sshd import SshdServer, scanner_section  # noqa: E402
from tests.helpers.workspace import ROUTE, Workspace  # noqa: E402

FOLDER = REPO / "demo-run"
TIMEOUT = 90
# The furthest state the pipeline reaches so far.
GOAL = "PURGED"


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
    with running_emulator(default_seed(), data_dir=FOLDER / "flywheel") as flywheel:
        print(f"Flywheel EMULATOR (not Flywheel) at {flywheel.url}, project {ROUTE}")
        workspace = Workspace(
            FOLDER / "hyperwheel",
            orthanc_url=orthanc.url,
            routes={"prisma": ROUTE},
            keys={"prisma": flywheel.sdk_key(BRAIN_KEY)},
        )
        workspace.extra_toml = scanner_section(scanner)
        workspace.write()
        service = ServiceProcess(workspace).start()
        try:
            return run(workspace, orthanc, service, flywheel.sdk_key(BRAIN_KEY))
        finally:
            service.stop()
            scanner.stop()
            orthanc.stop()


def run(
    workspace: Workspace, orthanc: OrthancServer, service: ServiceProcess, key: str
) -> int:
    study = three_series_study()
    paths = write_study(study, FOLDER / "sample-study")
    send(paths, orthanc.dicom_port)
    print(f"sent {len(paths)} instances of study {study.uid} with storescu\n")

    state = watch(workspace, study.uid)
    left = [p for p in workspace.staging.rglob("*") if p.is_file()]
    print(f"staging tree after purge: {len(left)} file(s) left")
    print(f"Orthanc now holds {len(orthanc.get('/instances'))} instance(s)")
    for receipt in sorted((workspace.state.parent / "receipts").glob("*.json")):
        print(f"receipt: {receipt}")
    print(f"\n$ hyperwheel status {study.uid}")
    print(workspace.cli("status", study.uid).stdout)
    print("on the emulated Flywheel, read back with flywheel-sdk:")
    show_flywheel(key)
    print(f"\nservice log: {service.log_path}")

    return 0 if state == GOAL else 1


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


def watch(workspace: Workspace, study_uid: str) -> str | None:
    """Print `hyperwheel status` each time the study's state changes."""
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
        time.sleep(0.2)
    print(f"the study did not reach {GOAL} within {TIMEOUT} s", file=sys.stderr)
    return shown


def show_flywheel(key: str) -> None:
    import flywheel

    client: Any = flywheel.Client(key)
    project = client.lookup(ROUTE.removeprefix("fw://"))
    for subject in project.subjects():
        for session in subject.sessions():
            print(f"  {ROUTE}/{subject.label}/{session.label}")
            for acquisition in session.acquisitions():
                print(f"    {acquisition.label}")
                for file in client.get_acquisition(acquisition.id).files:
                    digest = (file.hash or "no hash")[:26]
                    print(f"      {file.name}  {file.size} bytes  {digest}…")


if __name__ == "__main__":
    sys.exit(main())
