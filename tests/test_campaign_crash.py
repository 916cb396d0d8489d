"""Crash campaign: the process dies anywhere, and still nothing is lost.

Two parts, both judged by :func:`tests.helpers.invariants.check_invariants`:

* every named crash point, one run each, through one scenario that reaches
  all of them: a routable study with raw files, an unroutable one (held),
  and a late instance that reopens the purged study for a second cycle;
* a soak: studies with late series, unroutable studies and back-to-back
  patients, while the service is SIGKILLed at seeded random moments and
  started again.

The default run takes the points no per-area crash test kills at, and a
short soak (4 studies, 8 kills); ``HYPERWHEEL_FULL=1`` takes every point
and the long soak (20 studies, 50 kills). A last test damages a finished
run behind hyperwheel's back and checks the invariant reports each kind of
damage, so that a campaign cannot pass by checking nothing.
"""

import os
import random
import signal
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hyperwheel.crashpoints import CRASH_POINTS
from hyperwheel.crashpoints import EXIT_CODE as CRASH_EXIT
from hyperwheel.staging import TEMPORARY_FOLDER
from tests.flywheel_emulator.threaded import RunningEmulator
from tests.helpers.dicom import SeriesSpec, StudySpec, send, write_study
from tests.helpers.invariants import check_invariants, sent_instances
from tests.helpers.orthanc import OrthancServer
from tests.helpers.service import ServiceProcess
from tests.helpers.sshd import SshdServer, raw_file, scanner_section
from tests.helpers.waiting import wait_until
from tests.helpers.web import answers
from tests.helpers.workspace import Workspace
from tests.test_crash_staging import ARRIVAL_POINTS
from tests.test_flywheel_sink import FLYWHEEL_POINTS, acquisitions
from tests.test_purge import PURGE_POINTS
from tests.test_rrdf_sync import RAW_POINTS

FULL = os.environ.get("HYPERWHEEL_FULL") == "1"
DAY = datetime(2026, 12, 3)
ROUTED = "prisma"
# An OperatorsName routing.json does not know: the study must be held.
UNROUTED = "nobody"


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancServer]:
    """Orthanc calling a study stable after 1 s: campaigns run many studies."""
    server = OrthancServer(tmp_path / "orthanc", stable_age=1).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class World:
    """Everything a campaign run starts or sends, and what it saw happen."""

    folder: Path
    orthanc: OrthancServer
    workspace: Workspace
    service: ServiceProcess
    emulator: RunningEmulator
    sshd: SshdServer
    # SOPInstanceUID -> StudyInstanceUID of everything ever sent.
    sent: dict[str, str] = field(default_factory=dict)
    # Raw file name -> the StudyInstanceUID that must claim it.
    raw_owners: dict[str, str | None] = field(default_factory=dict)
    crashes: int = 0
    kills: int = 0
    sends: int = 0
    # When the running process was first seen serving /healthz, if yet.
    ready_at: float | None = None
    # Per kill, the studies that had work in flight when it came.
    killed_during: list[list[str]] = field(default_factory=list)
    # Extra environment for every start of the service.
    environment: dict[str, str] = field(default_factory=dict)

    def add_toml(self, text: str) -> None:
        """More configuration, written before the next start."""
        self.workspace.extra_toml += text
        self.workspace.write()

    def write(self, study: StudySpec) -> list[Path]:
        """Write the study's files and count them as sent from now on."""
        self.sends += 1
        paths = write_study(study, self.folder / "sent" / str(self.sends))
        self.sent.update(sent_instances(paths))

        return paths

    def send(self, study: StudySpec) -> list[Path]:
        paths = self.write(study)
        send(paths, self.orthanc.dicom_port)

        return paths

    def raw(self, name: str, owner: StudySpec | None, size: int = 64_000) -> None:
        self.raw_owners[name] = owner.uid if owner is not None else None
        raw_file(self.sshd, name, size)

    def keep_running(self) -> None:
        """Start the service again if it died at its crash point; any other
        exit fails the run with the end of its log."""
        if self.service.running():
            return
        code = self.service.wait_exit(5)
        if code != CRASH_EXIT:
            raise AssertionError(
                f"the service exited with {code}:\n{self.service.log()[-4000:]}"
            )
        self.crashes += 1
        self.start()

    def start(self, crash_at: str | None = None) -> None:
        self.ready_at = None
        self.service.start(crash_at=crash_at, environment=self.environment)

    def ready_for(self) -> float | None:
        """Seconds since the process began serving /healthz; None before."""
        if self.ready_at is None and answers(self.workspace.web_url + "/healthz"):
            self.ready_at = time.monotonic()
        return None if self.ready_at is None else time.monotonic() - self.ready_at

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed; then start again."""
        self.keep_running()
        self.killed_during.append(
            [
                f"{row['patient_id']}:{row['state']}"
                for row in self.workspace.studies()
                if row["state"] not in ("PURGED", "HELD")
            ]
        )
        self.service.signal(signal.SIGKILL)
        self.service.wait_exit(10)
        self.kills += 1
        self.start()

    def wait(self, condition: Callable[[], object], timeout: float, what: str) -> None:
        def check() -> object:
            self.keep_running()
            return condition()

        wait_until(check, timeout, what, interval=0.1)

    def stop(self) -> None:
        """Stop cleanly once it serves (a SIGTERM before its handler is set
        would just kill it); a crash meanwhile counts and is started again."""
        self.wait(self.ready_for, 30, "the service to serve /healthz")
        code = self.service.stop()
        if code == CRASH_EXIT:
            self.crashes += 1
            self.start()
            self.wait(self.ready_for, 30, "the service to serve /healthz")
            code = self.service.stop()
        assert code == 0, f"exit {code}:\n{self.service.log()[-4000:]}"

    def in_orthanc(self) -> set[str]:
        instances = self.orthanc.get("/instances?expand")
        return {i["MainDicomTags"]["SOPInstanceUID"] for i in instances}

    def sops_of(self, study: StudySpec) -> set[str]:
        return {sop for sop, uid in self.sent.items() if uid == study.uid}

    def violations(self) -> list[str]:
        return check_invariants(
            sent=self.sent,
            orthanc=self.orthanc,
            emulator=self.emulator,
            workspace=self.workspace,
            raw_owners=self.raw_owners,
        )


@pytest.fixture
def world(
    tmp_path: Path,
    orthanc: OrthancServer,
    routed: Workspace,
    service: ServiceProcess,
    flywheel_emulator: RunningEmulator,
    sshd: SshdServer,
) -> World:
    """A routed workspace with the scanner configured; nothing started yet."""
    routed.extra_toml = scanner_section(sshd)
    routed.write()
    return World(tmp_path, orthanc, routed, service, flywheel_emulator, sshd)


def study_at(
    start: datetime,
    patient: str,
    operator: str = ROUTED,
    series: int = 3,
    instances: int = 3,
) -> StudySpec:
    """Series ten minutes apart from ``start``, images 30 s apart within each."""
    return StudySpec(
        patient_id=patient,
        study_date=start.strftime("%Y%m%d"),
        study_time=start.strftime("%H%M%S"),
        series=[
            SeriesSpec(
                str(n + 1),
                f"series {n + 1}",
                start + timedelta(minutes=10 * n),
                instances=instances,
                operators_name=operator,
            )
            for n in range(series)
        ],
    )


def late_instances(study: StudySpec, instances: int = 1) -> StudySpec:
    """More instances of the study's first series, as a scanner sends late."""
    return replace(study, series=[replace(study.series[0], instances=instances)])


def late_series(study: StudySpec, number: int) -> StudySpec:
    """A whole new series of the study, started inside its time window."""
    first = study.series[0]
    start = first.start + timedelta(minutes=5)
    late = SeriesSpec(str(number), f"late {number}", start, 2, first.operators_name)
    return replace(study, series=[late])


def stamp(moment: datetime) -> str:
    return f"scan_{moment:%Y%m%d_%H%M%S}.h5"


# Every crash point, one run each


# Points the per-area crash tests already kill at on every run, each with
# its own checks; the default run leaves them to those tests to stay within
# the CI budget (all points here take about five minutes), and
# HYPERWHEEL_FULL=1 runs them here too.
COVERED_ELSEWHERE = frozenset(
    ARRIVAL_POINTS + RAW_POINTS + FLYWHEEL_POINTS + PURGE_POINTS
)
CAMPAIGN_POINTS = [p for p in CRASH_POINTS if FULL or p not in COVERED_ELSEWHERE]


def test_every_crash_point_is_killed_at_by_some_test() -> None:
    """A point added to CRASH_POINTS is in the campaign without further work."""
    assert set(CAMPAIGN_POINTS) | COVERED_ELSEWHERE == set(CRASH_POINTS)
    assert set(CRASH_POINTS) >= COVERED_ELSEWHERE
    assert len(CRASH_POINTS) == len(set(CRASH_POINTS))


@pytest.mark.parametrize("point", CAMPAIGN_POINTS)
def test_crash_at_each_point_loses_nothing_and_leaves_nothing(
    world: World, point: str
) -> None:
    """Killed at the point, started again: invariant holds, A purged twice,
    B held and whole in Orthanc; a point the scenario never reaches fails."""
    routed = study_at(DAY.replace(hour=10), "SUBJ001")
    held = study_at(DAY.replace(hour=14), "SUBJ002", operator=UNROUTED)
    world.raw(stamp(DAY.replace(hour=10, minute=1)), routed)
    world.raw(stamp(DAY.replace(hour=10, minute=21)), routed)
    world.raw(stamp(DAY.replace(hour=14, minute=1)), held)
    world.send(routed)
    world.send(held)

    world.start(crash_at=point)
    world.wait(
        lambda: (
            world.workspace.reached(routed.uid, "PURGED")
            and world.workspace.state_of(held.uid) == "HELD"
        ),
        90,
        "the routable study PURGED and the other HELD",
    )
    # A late instance reopens the purged study: a second cycle.
    world.send(late_instances(routed))
    world.wait(
        lambda: world.workspace.reached(routed.uid, "PURGED", times=2),
        90,
        "the second cycle PURGED",
    )
    world.stop()

    assert world.crashes == 1, f"the scenario never reached {point}"
    violations = world.violations()
    assert not violations, "\n".join(violations)
    assert world.workspace.state_of(held.uid) == "HELD"
    assert world.sops_of(held) <= world.in_orthanc()
    assert not world.sops_of(routed) & world.in_orthanc()


# Soak: SIGKILL at seeded random moments


@dataclass(frozen=True)
class SoakStudy:
    spec: StudySpec
    routable: bool
    late: StudySpec | None
    # Back to back with the study before: sent with it, so both are known
    # when either claims raw files, and the matching rule decides.
    with_previous: bool = False


@dataclass(frozen=True)
class SoakPlan:
    studies: int
    kills: int
    seed: int
    # Seconds between two sends; the range of seconds a process serves
    # before its kill, drawn per kill.
    send_every: float
    kill_after: tuple[float, float]
    timeout: float


SHORT_SOAK = SoakPlan(
    studies=4,
    kills=8,
    seed=20261203,
    send_every=4.0,
    kill_after=(0.2, 3.0),
    timeout=150,
)
LONG_SOAK = SoakPlan(
    studies=20,
    kills=50,
    seed=20261204,
    send_every=8.0,
    kill_after=(0.2, 4.0),
    timeout=900,
)


def plan_studies(world: World, count: int, rng: random.Random) -> list[SoakStudy]:
    """Seeded studies: the first three are one of each kind, the rest drawn.

    Kinds: a late series sent once the study is STABLE; a different patient
    scanned back to back with the one before (their windows overlap within
    the match tolerance); an unroutable OperatorsName. Every series gets a
    raw file a minute after it starts, and a back-to-back pair one more in
    the gap between them, which the earlier study must win.
    """
    studies: list[SoakStudy] = []
    start = DAY.replace(hour=0, minute=30)
    for index in range(count):
        late = index == 0 or (index > 2 and rng.random() < 0.3)
        back_to_back = index == 1 or (index > 2 and rng.random() < 0.4)
        routable = index != 2 and (index <= 2 or rng.random() >= 0.2)
        if index and back_to_back:
            # The previous study's last image is at +21:30.
            previous = studies[-1].spec
            start = previous.series[0].start + timedelta(minutes=23)
            world.raw(stamp(start - timedelta(seconds=60)), previous)
        elif index:
            start += timedelta(minutes=45)
        spec = study_at(
            start, f"SOAK{index:03d}", operator=ROUTED if routable else UNROUTED
        )
        for series in spec.series:
            world.raw(stamp(series.start + timedelta(seconds=60)), spec)
        extra = late_series(spec, 4) if late else None
        studies.append(SoakStudy(spec, routable, extra, bool(index and back_to_back)))

    return studies


def run_soak(world: World, plan: SoakPlan) -> list[SoakStudy]:
    """Send the studies and late series while killing the service, then let
    it finish; the studies, for the caller's checks."""
    rng = random.Random(plan.seed)
    studies = plan_studies(world, plan.studies, rng)
    # Counted from when the (re)started process serves, so that kills land
    # in its work rather than in Python's start-up.
    kill_after = [rng.uniform(*plan.kill_after) for _ in range(plan.kills)]

    # Flywheel is across the internet: every answer takes a while, so kills
    # land in uploads, verification and purges too, not only in arrival.
    world.emulator.admin.set_faults([{"kind": "delay", "seconds": 0.15}])
    world.start()
    started = time.monotonic()
    unsent = list(studies)
    sends = 0
    late_pending = [s for s in studies if s.late is not None]
    while unsent or late_pending or kill_after:
        elapsed = time.monotonic() - started
        if elapsed > plan.timeout:
            raise TimeoutError(f"soak still sending or killing after {elapsed:.0f} s")
        world.keep_running()
        if unsent and elapsed >= sends * plan.send_every:
            sends += 1
            world.send(unsent.pop(0).spec)
            while unsent and unsent[0].with_previous:
                world.send(unsent.pop(0).spec)
        for study in list(late_pending):
            if study not in unsent and world.workspace.reached(
                study.spec.uid, "STABLE"
            ):
                assert study.late is not None
                world.send(study.late)
                late_pending.remove(study)
        up_for = world.ready_for()
        if kill_after and up_for is not None and up_for >= kill_after[0]:
            kill_after.pop(0)
            world.kill()
        time.sleep(0.05)

    def settled() -> bool:
        left = world.in_orthanc()
        for study in studies:
            state = world.workspace.state_of(study.spec.uid)
            if study.routable and (
                state != "PURGED" or world.sops_of(study.spec) & left
            ):
                return False
            if not study.routable and state != "HELD":
                return False
        return True

    world.wait(settled, plan.timeout, "every routable study PURGED, the rest HELD")
    world.stop()

    return studies


@pytest.mark.slow
def test_soak_with_random_kills_loses_nothing(world: World) -> None:
    """Late series, back-to-back patients, unroutable studies and SIGKILLs at
    seeded moments: routable studies PURGED, the rest HELD and whole in
    Orthanc, and the invariant holds (raw files with their rightful study)."""
    plan = LONG_SOAK if FULL else SHORT_SOAK

    studies = run_soak(world, plan)

    assert world.kills == plan.kills
    busy = [during for during in world.killed_during if during]
    print(f"{len(busy)} of {world.kills} kills hit work in flight:", busy)
    assert busy, "no kill came while a study had work in flight"
    violations = world.violations()
    assert not violations, "\n".join(violations)
    left = world.in_orthanc()
    for study in studies:
        if not study.routable:
            assert world.sops_of(study.spec) <= left
            [row] = world.workspace.query(
                "SELECT held_reason FROM studies WHERE study_instance_uid = ?",
                study.spec.uid,
            )
            assert f"no route for '{UNROUTED}'" in row["held_reason"]


# The invariant can fail


def test_invariant_check_names_every_kind_of_violation(
    world: World, flywheel_client: Any
) -> None:
    """After a clean run it holds; each kind of damage done behind
    hyperwheel's back is then reported, so a campaign cannot pass blind."""
    study = study_at(DAY.replace(hour=10), "SUBJ001", series=2, instances=3)
    world.raw(stamp(DAY.replace(hour=10, minute=1)), study)
    world.send(study)
    world.start()
    world.wait(lambda: world.workspace.reached(study.uid, "PURGED"), 60, "PURGED")
    world.stop()
    assert world.violations() == []
    [acquisition] = [
        node
        for label, node in acquisitions(world.emulator.admin.dump()).items()
        if label.startswith("1 - ")
    ]
    [zip_name] = [f["name"] for f in acquisition["files"] if f["name"].endswith("zip")]
    [raw_name] = [f["name"] for f in acquisition["files"] if f["name"].endswith("h5")]
    copies = world.folder / "tampered"
    copies.mkdir()

    # A zip replaced by one that lacks an instance: lost, and not a superset.
    whole = copies / "whole.zip"
    flywheel_client.download_file_from_acquisition(
        acquisition["_id"], zip_name, str(whole)
    )
    members = zipfile.ZipFile(whole).namelist()
    shorter = copies / zip_name
    with zipfile.ZipFile(whole) as source, zipfile.ZipFile(shorter, "w") as target:
        for member in members[1:]:
            target.writestr(member, source.read(member))
    flywheel_client.upload_file_to_container(acquisition["_id"], str(shorter))
    # The raw file sent again, same bytes; and filed on a second acquisition.
    raw_copy = copies / raw_name
    flywheel_client.download_file_from_acquisition(
        acquisition["_id"], raw_name, str(raw_copy)
    )
    flywheel_client.upload_file_to_container(acquisition["_id"], str(raw_copy))
    [other] = [
        node
        for label, node in acquisitions(world.emulator.admin.dump()).items()
        if label.startswith("2 - ")
    ]
    flywheel_client.upload_file_to_container(other["_id"], str(raw_copy))
    # Staging: a purged file back, a symlink out, a file above the root, a
    # half-written download.
    staged = world.workspace.query("SELECT staged_path FROM files WHERE kind = 'dicom'")
    back = world.workspace.staging / staged[0]["staged_path"]
    back.parent.mkdir(parents=True, exist_ok=True)
    back.write_bytes(b"left behind")
    (world.workspace.staging / "escape").symlink_to("/etc")
    (world.workspace.folder / "stray.dcm").write_bytes(b"above the root")
    (world.workspace.staging / TEMPORARY_FOLDER / "x.part").write_bytes(b"half")
    # A raw file expected by nobody, and one that was never there.
    world.raw_owners[Path(raw_name).name.split("__")[-1]] = None

    found = "\n".join(world.violations())

    lost_sop = members[0].removesuffix(".dcm")
    expected = [
        f"lost: instance {lost_sop} of study {study.uid} is neither",
        f"lost: zip {zip_name!r}",
        "is not a strict superset of v1 (dropped 1, added 0)",
        f"{zip_name!r} on {acquisition['_id']} has 2 versions but study",
        f"{raw_name!r} on {acquisition['_id']} has identical versions 1, 2",
        f"{raw_name!r} on {acquisition['_id']} has 2 versions",
        f"staging: {staged[0]['staged_path']} of a purged study is still on disk",
        "staging: symlink escape -> /etc (outside the root)",
        "stray.dcm lies outside the staging root",
        "staging: half-written .hyperwheel-tmp/x.part",
        f"raw: {raw_name!r} is on 2 acquisitions",
        "should be claimed by no study, is claimed by",
        f"lists {zip_name!r} v1, Flywheel's newest is v2",
    ]
    for sentence in expected:
        assert sentence in found, f"{sentence!r} not reported in:\n{found}"


def test_late_instance_after_the_receipt_is_listed_on_a_receipt(world: World) -> None:
    """Killed after the receipt, a late instance arrives: whatever is then
    deleted from Orthanc must still be on a receipt that matches Flywheel."""
    study = study_at(DAY.replace(hour=10), "SUBJ001", series=1, instances=3)
    world.send(study)
    world.start(crash_at="purge.after_receipt")
    assert world.service.wait_exit(90) == CRASH_EXIT
    # Sent while the service is down, so it is there before the purge reruns.
    world.send(late_instances(study))
    world.start()

    world.wait(lambda: world.workspace.state_of(study.uid) == "PURGED", 90, "PURGED")
    world.stop()

    violations = world.violations()
    assert not violations, "\n".join(violations)
