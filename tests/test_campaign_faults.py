"""Fault campaign: Flywheel, the scanner, Orthanc and the disk misbehave.

Every case runs one scenario (:func:`run_fault`): a study with raw files is
sent to a running service, the fault is caused, the test waits until an
operator could see it (``hyperwheel status --json``, ``/metrics``,
``/healthz``), ends it, and waits for the study to be PURGED. The invariant
of :mod:`tests.helpers.invariants` must hold at the end.

Faults hyperwheel absorbs inside one step (a create or an upload answered
5xx or not at all after Flywheel committed it) are only in the log while
they happen; what makes them visible here is the purge step, whose receipt
upload is not retried within the step.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest

from hyperwheel.staging import TEMPORARY_FOLDER
from tests import test_campaign_crash as crash_campaign
from tests.flywheel_emulator.fixtures import BRAIN_KEY
from tests.helpers.dicom import StudySpec, send
from tests.helpers.sshd import RAW_FOLDER, scanner_section
from tests.helpers.waiting import wait_until
from tests.helpers.web import Samples, get, scrape, value
from tests.test_campaign_crash import DAY, World, stamp, study_at
from tests.test_flywheel_sink import acquisitions

# The crash campaign's fixtures: a quick Orthanc and the world around it.
orthanc = crash_campaign.orthanc
world = crash_campaign.world

# Flywheel requests that commit something: container creates and uploads.
COMMITTING = r"^/api/(subjects|sessions|acquisitions)$|/files$"
# The SDK's per-request timeout for the service, so that a hung Flywheel
# costs seconds per try here, not the default minute.
FAST_TIMEOUT = {"FLYWHEEL_SDK_REQUEST_TIMEOUT": "2"}


@dataclass(frozen=True)
class Snapshot:
    """What an operator sees of the study at one moment."""

    study: dict[str, Any]
    samples: Samples
    health: tuple[int, str]


Evidence = Callable[[Snapshot], str | None]


def small_study() -> StudySpec:
    """Two series of two images: every step runs, none takes long."""
    return study_at(DAY.replace(hour=10), "SUBJ001", series=2, instances=2)


def just_send(world: World, study: StudySpec) -> None:
    """For faults set up before the start: the study goes out as usual."""
    world.send(study)


def raw_files(first_size: int = 64_000) -> Callable[[World, StudySpec], None]:
    """One raw file 45 s into each series, named by the scanner's clock; the
    first of ``first_size`` bytes."""

    def make(world: World, study: StudySpec) -> None:
        for number, series in enumerate(study.series):
            size = first_size if number == 0 else 64_000
            world.raw(stamp(series.start + timedelta(seconds=45)), study, size)

    return make


# One small raw file 45 s into each series.
small_raw_files = raw_files()


def nothing(_world: World) -> None:
    """No preparation, or a fault that ends by itself."""


@dataclass(frozen=True)
class Fault:
    """One way the world misbehaves: how it starts, shows and ends."""

    name: str
    # Sends the study and causes the fault, each at its moment.
    inject: Callable[[World, StudySpec], None]
    # What an operator sees while it lasts; None while nothing shows.
    evidence: Evidence
    lift: Callable[[World], None]
    study: Callable[[], StudySpec] = small_study
    raw: Callable[[World, StudySpec], None] = small_raw_files
    environment: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[World], None] = nothing


def run_fault(world: World, fault: Fault) -> str:
    """The one scenario every fault goes through; what made it visible."""
    study = fault.study()
    fault.raw(world, study)
    world.environment.update(fault.environment)
    fault.prepare(world)
    world.workspace.write()
    world.start()
    world.wait(world.ready_for, 30, "the service to serve")

    started = time.monotonic()
    fault.inject(world, study)
    seen = wait_until(
        lambda: _visible(world, study, fault.evidence),
        120,
        f"{fault.name} to show in status or metrics",
        interval=0.2,
    )
    assert seen is not None  # wait_until returns only what is truthy
    shown = time.monotonic()
    fault.lift(world)

    world.wait(lambda: world.workspace.state_of(study.uid) == "PURGED", 120, "PURGED")
    print(
        f"{fault.name}: shown after {shown - started:.1f} s, purged "
        f"{time.monotonic() - shown:.1f} s after it ended"
    )
    world.stop()
    violations = world.violations()
    assert not violations, "\n".join(violations)
    assert not world.sops_of(study) & world.in_orthanc()

    return seen


def _visible(world: World, study: StudySpec, evidence: Evidence) -> str | None:
    world.keep_running()
    if world.ready_for() is None:
        return None
    printed = json.loads(world.workspace.cli("status", "--json").stdout)
    # Empty until the study is first staged (never, while the disk is full).
    row: dict[str, Any] = next(
        (s for s in printed if s["study_instance_uid"] == study.uid), {}
    )
    base = world.workspace.web_url
    return evidence(Snapshot(row, scrape(base), get(base + "/healthz")))


# Evidence


def errors(step: str, kind: str) -> Evidence:
    """Failed attempts of ``step`` counted by kind in /metrics."""

    def seen(now: Snapshot) -> str | None:
        count = value(now.samples, "hyperwheel_step_errors_total", step=step, kind=kind)
        return f"step_errors_total{{{step},{kind}}}={count:g}" if count else None

    return seen


def last_error(*words: str) -> Evidence:
    """``last_error`` in ``hyperwheel status --json`` names the problem."""

    def seen(now: Snapshot) -> str | None:
        text = now.study.get("last_error") or ""
        return f"last_error={text!r}" if all(w in text for w in words) else None

    return seen


def held(*words: str) -> Evidence:
    """The study is HELD, and ``held_reason`` in status says why."""

    def seen(now: Snapshot) -> str | None:
        text = now.study.get("held_reason") or ""
        if now.study.get("state") != "HELD" or not all(w in text for w in words):
            return None
        return f"held_reason={text!r}"

    return seen


def metric(name: str, wanted: float, **labels: str) -> Evidence:
    """A gauge in /metrics reads ``wanted``."""

    def seen(now: Snapshot) -> str | None:
        found = value(now.samples, name, **labels)
        return f"{name}={found:g}" if found == wanted else None

    return seen


def at_least(name: str, **labels: str) -> Evidence:
    """A counter in /metrics has counted at least once."""

    def seen(now: Snapshot) -> str | None:
        found = value(now.samples, name, **labels)
        return f"{name}={found:g}" if found >= 1 else None

    return seen


def health(status: int, *words: str) -> Evidence:
    """/healthz answers ``status`` and says why."""

    def seen(now: Snapshot) -> str | None:
        code, body = now.health
        if code != status or not all(w in body for w in words):
            return None
        return f"/healthz {code} {body.strip()!r}"

    return seen


def state_after(state: str) -> Evidence:
    """The study has moved past ``state``: for faults nothing reports."""
    order = ["RECEIVING", "STABLE", "RRDF_SYNCED", "UPLOADED", "VERIFIED", "PURGED"]

    def seen(now: Snapshot) -> str | None:
        current = now.study.get("state")
        if current in order and order.index(current) > order.index(state):
            return f"state={current}"
        return None

    return seen


def progress(step: str) -> Evidence:
    """A step in flight, as ``status --json`` shows it with its bytes."""

    def seen(now: Snapshot) -> str | None:
        shown = now.study.get("progress")
        return f"progress={shown}" if shown and shown["step"] == step else None

    return seen


def lasting(part: Evidence, seconds: float) -> Evidence:
    """Seen at every look for ``seconds``: a slow step, not a passing one."""
    since: list[float] = []

    def seen(now: Snapshot) -> str | None:
        found = part(now)
        if found is None:
            since.clear()
            return None
        since[:] = since or [time.monotonic()]
        lasted = time.monotonic() - since[0]
        return f"{found} for {lasted:.1f} s" if lasted >= seconds else None

    return seen


def every(*parts: Evidence) -> Evidence:
    """All of them at once: status and metrics agree."""

    def seen(now: Snapshot) -> str | None:
        found = [part(now) for part in parts]
        return "; ".join(f for f in found if f) if all(found) else None

    return seen


# Injections and lifts


def send_then(*rules: dict[str, Any]) -> Callable[[World, StudySpec], None]:
    """Send the study, then let Flywheel misbehave by these rules."""

    def inject(world: World, study: StudySpec) -> None:
        world.send(study)
        world.emulator.admin.set_faults(list(rules), seed=7)

    return inject


def clear_faults(world: World) -> None:
    world.emulator.admin.clear_faults()


def restore_key(world: World) -> None:
    world.emulator.admin.clear_faults()
    world.emulator.admin.restore_key(BRAIN_KEY)


FLYWHEEL_FAULTS = [
    Fault(
        "Flywheel answers 503 to everything",
        send_then({"kind": "error", "status": 503}),
        every(
            last_error("503"),
            errors("upload", "FlywheelUnavailable"),
        ),
        clear_faults,
    ),
    Fault(
        "Flywheel commits creates and uploads, then answers 503",
        send_then(
            {"kind": "error_after_commit", "methods": ["POST"], "path": COMMITTING}
        ),
        every(last_error("503"), errors("purge", "FlywheelUnavailable")),
        clear_faults,
    ),
    Fault(
        "Flywheel never answers",
        send_then({"kind": "timeout", "seconds": 3600}),
        every(
            last_error("Flywheel unreachable"),
            errors("upload", "FlywheelUnavailable"),
        ),
        clear_faults,
        environment=FAST_TIMEOUT,
    ),
    Fault(
        "Flywheel stores uploads, then never answers",
        send_then(
            {
                "kind": "timeout",
                "after_commit": True,
                "seconds": 3600,
                "methods": ["POST"],
                "path": "/files$",
            }
        ),
        every(
            last_error("Flywheel unreachable"),
            errors("purge", "FlywheelUnavailable"),
        ),
        clear_faults,
        environment=FAST_TIMEOUT,
    ),
    Fault(
        "Flywheel answers slowly",
        send_then({"kind": "delay", "seconds": 0.5}),
        lasting(progress("upload"), 2.0),
        clear_faults,
    ),
    Fault(
        "Flywheel drops uploads silently",
        send_then({"kind": "drop_upload"}),
        every(
            last_error("not verified, uploaded again"),
            at_least("hyperwheel_verify_mismatches_total"),
        ),
        clear_faults,
    ),
    Fault(
        "Flywheel revokes the key mid-upload, later restored",
        send_then(
            {"kind": "revoke_key", "methods": ["POST"], "path": "/files$", "times": 1}
        ),
        every(
            held("401"),
            at_least("hyperwheel_flywheel_auth_failures_total"),
            metric("hyperwheel_held_studies", 1, reason="upload"),
        ),
        restore_key,
        prepare=lambda world: world.add_toml("[flywheel]\nauth_recheck = 2\n"),
    ),
]


@pytest.mark.parametrize("fault", FLYWHEEL_FAULTS, ids=lambda f: f.name)
def test_flywheel_fault_shows_then_heals_without_loss(
    world: World, fault: Fault
) -> None:
    """Each Flywheel fault is visible while it lasts; after it, PURGED, one
    version of every file, nothing lost."""
    seen = run_fault(world, fault)

    print(f"{fault.name}: {seen}")


def sshd_killed_mid_transfer(world: World, study: StudySpec) -> None:
    """Stop sshd, connections included, once a raw pull has written bytes.

    Not while the scanner's ``sha256sum`` runs: that goes through the login
    shell, and a shell killed while its rc file holds a lock (pyenv's rehash
    does here) leaves the lock behind and slows every later shell.
    """
    world.send(study)
    temporary = world.workspace.staging / TEMPORARY_FOLDER
    assert world.sshd.process is not None
    listener = world.sshd.process.pid

    def pulling() -> bool:
        written = any(p.stat().st_size > 0 for p in temporary.glob("raw-*.part"))
        return written and all(_name(p) == "sshd" for p in _descendants(listener))

    wait_until(pulling, 60, "a raw pull under way, no hash", interval=0.002)
    world.sshd.stop()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                status = (entry / "status").read_text()
                parent = int(status.split("\nPPid:")[1].split()[0])
                children.setdefault(parent, []).append(int(entry.name))
    found, frontier = [], [pid]
    while frontier:
        frontier = [c for p in frontier for c in children.get(p, [])]
        found.extend(frontier)
    return found


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "sshd"  # gone meanwhile


def sshd_back(world: World) -> None:
    world.sshd.start()


def test_sshd_killed_mid_transfer_shows_then_resumes(world: World) -> None:
    """The scanner gone mid-pull: last_error and the error metric say so; once
    it is back the pull completes and the raw file is verified on Flywheel."""
    fault = Fault(
        "sshd killed mid-transfer",
        sshd_killed_mid_transfer,
        every(last_error(), errors("raw data", "ScannerUnreachable")),
        sshd_back,
        raw=raw_files(150 * 1024 * 1024),
    )

    seen = run_fault(world, fault)

    print(f"{fault.name}: {seen}")
    assert "ScannerUnreachable" in seen


ORTHANC_DOWN = every(
    metric("hyperwheel_orthanc_up", 0),
    metric("hyperwheel_healthy", 0),
    health(503, "Orthanc", "unreachable"),
)


class OrthancRestart:
    """Orthanc stopped while the study streams in, or while it is purged,
    and started again once the outage shows; the scanner then sends again
    whatever the outage cut short, as a scanner retries."""

    def __init__(self, during: str) -> None:
        self.during = during
        self.paths: list[Path] = []

    def prepare(self, world: World) -> None:
        # /healthz turns 503 after a second of Orthanc being unreachable.
        world.workspace.unhealthy_after = 1
        # A study still unstable when Orthanc stops never gets its
        # StableStudy change; only the periodic reconcile finds it (300 s by
        # default), so it runs often here.
        world.workspace.reconcile_interval = 3

    def inject(self, world: World, study: StudySpec) -> None:
        self.paths = world.write(study)
        total = len(self.paths)
        if self.during == "ingest":
            sender = threading.Thread(target=self._send, args=(world,))
            sender.start()
            wait_until(
                lambda: 0 < len(world.workspace.files()) < total,
                60,
                "staging under way",
                interval=0.005,
            )
        else:
            self._send(world)
            world.wait(
                lambda: world.workspace.reached(study.uid, "VERIFIED"), 90, "VERIFIED"
            )
            wait_until(
                lambda: world.orthanc.get("/statistics")["CountInstances"] < total,
                60,
                "the purge deleting instances",
                interval=0.005,
            )
        left = world.orthanc.get("/statistics")["CountInstances"]
        world.orthanc.stop()
        if self.during == "ingest":
            sender.join(60)
        assert left > 0, f"the {self.during} was over before Orthanc stopped"

    def lift(self, world: World) -> None:
        world.orthanc.start()
        if self.during == "ingest":
            send(self.paths, world.orthanc.dicom_port)

    def _send(self, world: World) -> None:
        # The restart breaks the association; lift() sends everything again.
        with contextlib.suppress(subprocess.CalledProcessError):
            send(self.paths, world.orthanc.dicom_port)


def _big_study() -> StudySpec:
    return study_at(DAY.replace(hour=10), "SUBJ001", series=3, instances=100)


@pytest.mark.parametrize("during", ["ingest", "purge"])
def test_orthanc_restarted_shows_then_nothing_is_lost(
    world: World, during: str
) -> None:
    """Orthanc stopped mid-ingest or mid-purge: orthanc_up 0, /healthz 503;
    started again: every instance staged once, verified, then deleted."""
    restart = OrthancRestart(during)
    fault = Fault(
        f"Orthanc restarted mid-{during}",
        restart.inject,
        ORTHANC_DOWN,
        restart.lift,
        study=_big_study,
        prepare=restart.prepare,
    )

    seen = run_fault(world, fault)

    print(f"{fault.name}: {seen}")


def test_disk_guard_trips_shows_then_resumes_on_reload(world: World) -> None:
    """Free space under the threshold: the guard metric and /healthz say so;
    a lowered threshold and SIGHUP let the study through."""

    def trip(world: World) -> None:
        free = shutil.disk_usage(world.folder).free
        world.workspace.min_free_bytes = free * 4

    def reload(world: World) -> None:
        world.workspace.min_free_bytes = 0
        world.workspace.write()
        world.service.signal(signal.SIGHUP)

    fault = Fault(
        "disk guard tripped",
        just_send,
        every(
            metric("hyperwheel_disk_guard_active", 1),
            health(200, "disk guard active"),
        ),
        reload,
        prepare=trip,
    )

    seen = run_fault(world, fault)

    print(f"{fault.name}: {seen}")


@pytest.mark.parametrize("offset", [-90, 90])
def test_scanner_clock_90_s_off_still_files_raw_data_with_its_series(
    world: World, offset: int
) -> None:
    """Names and mtimes 90 s off the DICOM clock, within match_tolerance (120
    s): each file goes to its study and series, and the history shows the
    time each was matched by. Nothing in hyperwheel notices the offset."""
    # Ten images 30 s apart: series of five minutes, like real ones.
    study = study_at(DAY.replace(hour=10), "SUBJ001", series=3, instances=10)
    series_of: dict[str, str] = {}

    def skewed(world: World, spec: StudySpec) -> None:
        for number, series in enumerate(spec.series, start=1):
            # Written mid-series by the real clock, stamped by the scanner's.
            written = series.start + timedelta(minutes=2, seconds=30)
            stamped = stamp(written + timedelta(seconds=offset))
            world.raw(stamped, spec)
            series_of[stamped] = f"{number} - series {number}"
            # A file named without a time: matched by its mtime instead.
            unnamed = f"series{number}_noise.h5"
            world.raw(unnamed, spec)
            moment = written.replace(tzinfo=UTC) + timedelta(seconds=offset)
            stamp_seconds = moment.timestamp()
            os.utime(world.sshd.root / RAW_FOLDER / unnamed, (stamp_seconds,) * 2)
            series_of[unnamed] = f"{number} - series {number}"

    def in_utc(world: World) -> None:
        # mtimes are read in the scanner's zone; the DICOM times are UTC here.
        world.workspace.extra_toml = scanner_section(world.sshd, timezone="UTC")

    fault = Fault(
        f"scanner clock {offset:+d} s",
        just_send,
        state_after("STABLE"),
        nothing,
        study=lambda: study,
        raw=skewed,
        prepare=in_utc,
    )

    seen = run_fault(world, fault)

    print(f"{fault.name}: {seen}")
    history = world.workspace.cli("status", study.uid).stdout
    filed = {
        f["name"].removeprefix(f"{RAW_FOLDER}__"): label
        for label, node in acquisitions(world.emulator.admin.dump()).items()
        for f in node["files"]
        if f["name"].startswith(RAW_FOLDER)
    }
    assert filed == series_of
    for name in series_of:
        assert f"{name} (" in history, history
