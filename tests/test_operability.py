"""What an operator sees and relies on: metrics, health, systemd, shutdown,
the disk guard and the logs, all against a running ``hyperwheel run``."""

import html
import json
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hyperwheel.status_page import HELD_COLOUR
from tests.flywheel_emulator.fixtures import BRAIN_KEY
from tests.flywheel_emulator.threaded import RunningEmulator
from tests.helpers.browser import colour_fraction, dump_dom, screenshot
from tests.helpers.dicom import send, three_series_study, write_study
from tests.helpers.orthanc import PASSWORD, OrthancServer
from tests.helpers.service import ServiceProcess
from tests.helpers.sshd import SshdServer, raw_file, scanner_section
from tests.helpers.waiting import wait_until
from tests.helpers.web import Samples, answers, get, scrape, value
from tests.helpers.workspace import Workspace
from tests.test_flywheel_sink import acquisitions

WALK = ["RECEIVING", "STABLE", "RRDF_SYNCED", "UPLOADED", "VERIFIED", "PURGED"]


def test_metrics_follow_a_study_to_purged_and_no_output_holds_a_secret(
    tmp_path: Path,
    orthanc: OrthancServer,
    routed: Workspace,
    service: ServiceProcess,
    sshd: SshdServer,
    flywheel_emulator: RunningEmulator,
) -> None:
    """Scrapes during a full run move with the study; secrets appear nowhere."""
    routed.extra_toml = scanner_section(sshd)
    routed.write()
    raw = raw_file(sshd, "scan_20261203_100100.h5", 300_000)
    study = three_series_study()
    paths = write_study(study, tmp_path / "sent")
    service.start()
    wait_until(lambda: answers(routed.web_url + "/healthz"), 30, "the web server")
    before = scrape(routed.web_url)

    send(paths, orthanc.dicom_port)
    seen: list[str] = []
    deadline = time.monotonic() + 90
    while "PURGED" not in seen and time.monotonic() < deadline:
        samples = scrape(routed.web_url)
        for state in WALK:
            counted = value(samples, "hyperwheel_studies", state=state)
            if counted and (not seen or seen[-1] != state):
                seen.append(state)
        time.sleep(0.05)
    after = scrape(routed.web_url)

    assert seen[-1] == "PURGED" and len(seen) >= 3, seen
    assert seen == sorted(seen, key=WALK.index), "states went backwards"
    assert value(before, "hyperwheel_build_info", **_build_labels(before)) == 1
    assert value(before, "hyperwheel_instances_staged_total") == 0
    assert value(after, "hyperwheel_instances_staged_total") == len(paths)
    assert value(after, "hyperwheel_raw_pulled_bytes_total") == raw.stat().st_size
    assert value(after, "hyperwheel_uploaded_bytes_total") > raw.stat().st_size
    assert value(after, "hyperwheel_files_verified_total") == 4  # 3 zips + raw
    assert value(after, "hyperwheel_verify_mismatches_total") == 0
    assert value(after, "hyperwheel_purges_total") == 1
    assert value(after, "hyperwheel_instances_deleted_total") == len(paths)
    assert value(after, "hyperwheel_step_duration_seconds_count", step="upload") >= 1
    assert value(after, "hyperwheel_change_feed_cursor") > 0
    assert value(after, "hyperwheel_change_feed_lag_changes") == 0
    assert value(after, "hyperwheel_staging_free_bytes") > 0
    assert value(after, "hyperwheel_healthy") == 1
    assert value(after, "hyperwheel_oldest_unfinished_study_age_seconds") == 0

    outputs = {
        "service log": service.log(),
        "metrics": get(routed.web_url + "/metrics")[1],
        "status page": get(routed.web_url + "/")[1],
        "status.json": get(routed.web_url + "/status.json")[1],
        "status": routed.cli("status").stdout,
        "status --json": routed.cli("status", "--json").stdout,
        "history": routed.cli("status", study.uid).stdout,
        **{
            f"receipt {p.name}": p.read_text()
            for p in (routed.state.parent / "receipts").glob("*.json")
        },
    }
    api_key = flywheel_emulator.sdk_key(BRAIN_KEY)
    private_key = sshd.client_key.read_text().splitlines()[1]
    secrets = {
        "Flywheel API key": api_key.rpartition(":")[2],
        "Orthanc password": PASSWORD,
        "scanner private key": private_key,
    }
    for where, text in outputs.items():
        for what, secret in secrets.items():
            assert secret not in text, f"{what} found in {where}"
    _assert_json_log_lines_name_their_study(service.log())


def test_healthz_turns_503_while_orthanc_is_down_and_the_watchdog_still_beats(
    orthanc: OrthancServer, workspace: Workspace, service: ServiceProcess
) -> None:
    """systemd hears READY, WATCHDOG throughout, STOPPING; /healthz tells why."""
    workspace.unhealthy_after = 2
    workspace.write()
    with _notify_socket() as messages:
        service.start(environment=messages.environment(watchdog_usec=1_000_000))
        wait_until(lambda: "READY=1" in messages.received(), 30, "READY=1")
        wait_until(lambda: get(workspace.web_url + "/healthz")[0] == 200, 30, "200")

        orthanc.stop()
        _, body = wait_until(
            lambda: _unhealthy(workspace.web_url), 30, "/healthz to turn 503"
        )
        beats_while_down = messages.count("WATCHDOG=1")
        wait_until(
            lambda: messages.count("WATCHDOG=1") >= beats_while_down + 2,
            10,
            "the watchdog to beat on while Orthanc is down",
        )
        assert "Orthanc" in body and "unreachable" in body
        samples = scrape(workspace.web_url)
        assert value(samples, "hyperwheel_orthanc_up") == 0
        assert value(samples, "hyperwheel_healthy") == 0

        orthanc.start()
        wait_until(lambda: get(workspace.web_url + "/healthz")[0] == 200, 60, "200")
        assert service.stop() == 0
        assert "STOPPING=1" in messages.received()


def test_sigterm_during_a_hung_upload_exits_in_time_and_leaves_no_duplicate(
    tmp_path: Path,
    orthanc: OrthancServer,
    routed: Workspace,
    service: ServiceProcess,
    flywheel_emulator: RunningEmulator,
) -> None:
    """An upload whose answer never comes does not hold up a stop."""
    flywheel_emulator.admin.set_faults(
        [
            {
                "kind": "timeout",
                "methods": ["POST"],
                "path": "/files",
                "after_commit": True,
                "seconds": 25,
                "times": 1,
            }
        ]
    )
    study = three_series_study()
    send(write_study(study, tmp_path / "sent"), orthanc.dicom_port)
    service.start()
    wait_until(lambda: routed.reached(study.uid, "RRDF_SYNCED"), 60, "RRDF_SYNCED")
    # The emulator logs a request when it arrives; it then holds the answer.
    wait_until(lambda: _uploads_seen(flywheel_emulator) >= 1, 30, "an upload")

    started = time.monotonic()
    code = service.stop(timeout=15)
    elapsed = time.monotonic() - started

    assert code == 0 and elapsed < 15, (code, elapsed)
    flywheel_emulator.admin.clear_faults()
    service.start()
    wait_until(lambda: routed.reached(study.uid, "PURGED"), 90, "PURGED")
    versions = [
        (f["name"], f["version"])
        for node in acquisitions(flywheel_emulator.admin.dump()).values()
        for f in node["files"]
    ]
    assert len(versions) == 3 and {v for _, v in versions} == {1}, versions


def test_disk_guard_stops_staging_below_the_threshold_and_resumes_on_reload(
    tmp_path: Path,
    orthanc: OrthancServer,
    workspace: Workspace,
    service: ServiceProcess,
) -> None:
    """Nothing is staged while space is short; all of it once the guard lifts."""
    free = shutil.disk_usage(tmp_path).free
    workspace.min_free_bytes = free * 4
    workspace.write()
    study = three_series_study()
    paths = write_study(study, tmp_path / "sent")
    service.start()
    send(paths, orthanc.dicom_port)

    wait_until(lambda: "disk_guard.tripped" in service.log(), 30, "the guard")
    samples = scrape(workspace.web_url)
    status, health = get(workspace.web_url + "/healthz")
    assert value(samples, "hyperwheel_disk_guard_active") == 1
    assert status == 200 and "disk guard active" in health
    assert list(workspace.staging.rglob("*.dcm")) == []
    assert len(orthanc.get("/instances")) == len(paths)

    workspace.min_free_bytes = 0
    workspace.write()
    service.signal(signal.SIGHUP)
    wait_until(lambda: workspace.reached(study.uid, "STABLE"), 60, "STABLE")

    assert len(list(workspace.staging.rglob("*.dcm"))) == len(paths)
    assert value(scrape(workspace.web_url), "hyperwheel_disk_guard_active") == 0
    assert "disk_guard.released" in service.log()


def test_a_held_study_on_the_status_page_json_and_terminal(
    tmp_path: Path,
    orthanc: OrthancServer,
    workspace: Workspace,
    service: ServiceProcess,
) -> None:
    """Chromium shows it; /status.json and `status --json` agree; the table
    gives the held reason in full; nothing written is open to other users."""
    study = three_series_study(operators_name="unknown-route", patient="SUBJ042")
    send(write_study(study, tmp_path / "sent"), orthanc.dicom_port)
    service.start()
    wait_until(lambda: workspace.state_of(study.uid) == "HELD", 60, "HELD")

    served = json.loads(get(workspace.web_url + "/status.json")[1])
    printed = json.loads(workspace.cli("status", "--json").stdout)
    table = workspace.cli("status").stdout
    # The page lets long UIDs wrap at their dots.
    page = dump_dom(workspace.web_url + "/").replace("<wbr>", "")
    screenshot(workspace.web_url + "/", tmp_path / "status.png")

    assert served == printed
    [row] = printed
    assert row["state"] == "HELD" and row["progress"] is None
    assert row["held_reason"] in table
    assert "SIZE" in table.splitlines()[0]
    assert "SUBJ042" in page and study.uid in page
    assert html.escape(row["held_reason"], quote=False) in page
    assert colour_fraction(tmp_path / "status.png", HELD_COLOUR) > 0.0005
    held = scrape(workspace.web_url)
    assert value(held, "hyperwheel_held_studies", reason="unroutable") == 1
    written = [*workspace.staging.rglob("*"), *workspace.state.parent.rglob("*")]
    readable_by_others = [p for p in written if p.stat().st_mode & 0o007]
    assert len(written) > 10 and not readable_by_others, readable_by_others


def _build_labels(samples: Samples) -> dict[str, str]:
    [labels] = [dict(k[1]) for k in samples if k[0] == "hyperwheel_build_info"]
    return labels


def _unhealthy(base_url: str) -> tuple[int, str] | None:
    status, body = get(base_url + "/healthz")
    return (status, body) if status == 503 else None


def _uploads_seen(emulator: RunningEmulator) -> int:
    return sum(
        1
        for request in emulator.admin.requests()
        if request.get("method") == "POST" and "/files" in request.get("path", "")
    )


def _assert_json_log_lines_name_their_study(log: str) -> None:
    """Not a TTY: JSON lines; an event about a study's work says which."""
    events = [json.loads(line) for line in log.splitlines() if line.strip()]
    about_a_study = [
        e
        for e in events
        if e["event"].startswith(("flywheel.", "rrdf.", "purge.", "study."))
    ]
    assert about_a_study
    unnamed = [e["event"] for e in about_a_study if "study" not in e]
    assert not unnamed, unnamed


class _Messages:
    def __init__(self, sock: socket.socket, path: str) -> None:
        self._sock = sock
        self._path = path
        self._received: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def environment(self, watchdog_usec: int) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self._path, "WATCHDOG_USEC": str(watchdog_usec)}

    def received(self) -> str:
        with self._lock:
            return "\n".join(self._received)

    def count(self, message: str) -> int:
        with self._lock:
            return sum(message in m for m in self._received)

    def _listen(self) -> None:
        while True:
            try:
                data = self._sock.recv(4096)
            except OSError:
                return
            with self._lock:
                self._received.append(data.decode())


@contextmanager
def _notify_socket() -> Iterator[_Messages]:
    """A datagram socket standing in for systemd's; short path for AF_UNIX."""
    folder = Path(tempfile.mkdtemp(prefix="hw-notify-"))
    path = str(folder / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield _Messages(sock, path)
    finally:
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)
