"""The campaigns' invariant: nothing sent is lost, nothing on Flywheel is
doubled, nothing is left behind in staging, no raw file goes to two studies.

:func:`check_invariants` looks at the world as a run left it (Orthanc, the
bytes the Flywheel emulator stored, the staging tree, the state store) and
returns every violation as one sentence; an empty list means the invariant
holds. Where the thing itself can be looked at, hyperwheel's word is not
taken for it: zip members are read from the stored bytes, hashes are
computed from them, and the staging tree is walked.

The checks, each named at the start of its sentences:

``lost``       every instance ever sent is still in Orthanc, or inside the
               newest version of a zip on Flywheel whose bytes are the ones
               hyperwheel verified, in the session of its own study.
``versions``   no file on Flywheel has a version the data did not require:
               none deleted, no two versions with the same bytes, raw files
               and receipts only ever version 1, and a zip has a second
               version only when its study was reopened by late instances
               in that cycle, each version a strict superset of the one
               before.
``staging``    nothing of a purged study stays under the staging root,
               nothing hyperwheel records or writes lies outside it, no
               symlink, and no half-written download once no work is left.
``raw``        every raw file is claimed by one study at most, lands on one
               acquisition at most, and is on Flywheel, verified, once its
               staged copy has been purged.
``receipts``   every instance gone from Orthanc is listed in a purge receipt,
               and each receipt names the zip versions Flywheel holds now,
               on Flywheel as written locally.
"""

import hashlib
import io
import json
import os
import re
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from itertools import pairwise
from pathlib import Path
from typing import Any

import pydicom

from hyperwheel.flywheel_sink import ZIP_FOLDER
from hyperwheel.staging import TEMPORARY_FOLDER
from tests.flywheel_emulator.threaded import RunningEmulator
from tests.helpers.orthanc import OrthancServer
from tests.helpers.workspace import Workspace

ZIP_SUFFIX = ".dicom.zip"
# What hyperwheel writes; found above the staging root, one escaped it.
_STAGED_SUFFIXES = (".dcm", ".h5", ".zip", ".part")
# States whose raw pull may still hold a part file in the temporary folder.
_PULLING = frozenset({"RECEIVING", "STABLE"})


def sent_instances(paths: Iterable[Path]) -> dict[str, str]:
    """SOPInstanceUID -> StudyInstanceUID of every DICOM file written to send."""
    sent = {}
    for path in paths:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        sent[str(dataset.SOPInstanceUID)] = str(dataset.StudyInstanceUID)

    return sent


def check_invariants(
    *,
    sent: Mapping[str, str],
    orthanc: OrthancServer,
    emulator: RunningEmulator,
    workspace: Workspace,
    raw_owners: Mapping[str, str | None] | None = None,
) -> list[str]:
    """Every violation of the invariant, one sentence each; [] when it holds.

    ``sent`` maps each SOPInstanceUID ever sent to its StudyInstanceUID (see
    :func:`sent_instances`). ``raw_owners``, when given, maps raw file names
    on the scanner to the StudyInstanceUID that must claim them (None: no
    study may).
    """
    flywheel = FlywheelView.read(emulator.admin.dump())
    store = StoreView.read(workspace)

    try:
        instances = orthanc.get("/instances?expand")
    except OSError as error:
        return [f"lost: cannot list Orthanc's instances to check: {error}"]
    in_orthanc = {i["MainDicomTags"].get("SOPInstanceUID") for i in instances}

    return [
        *_nothing_lost(sent, in_orthanc, flywheel, store),
        *_no_needless_versions(flywheel, store),
        *_staging_clean(workspace, sent, store),
        *_raw_claimed_once(flywheel, store, raw_owners),
        *_receipts_true(sent, in_orthanc, flywheel, store, workspace),
    ]


def assert_invariants(**world: Any) -> None:
    """:func:`check_invariants`, failing with every violation listed."""
    violations = check_invariants(**world)
    assert not violations, "invariant violated:\n  " + "\n  ".join(violations)


# hyperwheel-receipt_<StudyInstanceUID>_cycle<N>.json, as purge.receipt_name.
_RECEIPT = re.compile(r"hyperwheel-receipt_(?P<uid>.+)_cycle(?P<cycle>\d+)\.json")


# What Flywheel holds


@dataclass(frozen=True)
class StoredVersion:
    """One version of one file on the emulator, hashed from its stored bytes."""

    container_id: str
    session_uid: str | None
    name: str
    version: int
    deleted: bool
    path: Path

    @cached_property
    def sha384(self) -> str:
        digest = hashlib.sha384()
        with open(self.path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)

        return digest.hexdigest()

    @cached_property
    def members(self) -> dict[str, tuple[str | None, str | None]]:
        """Zip member name -> (SOPInstanceUID, StudyInstanceUID) read from it."""
        found: dict[str, tuple[str | None, str | None]] = {}
        with zipfile.ZipFile(self.path) as archive:
            for member in archive.infolist():
                if member.is_dir():
                    continue
                found[member.filename] = _uids(archive.read(member))

        return found

    def describe(self) -> str:
        return f"{self.name!r} v{self.version} on {self.container_id}"


@dataclass
class FlywheelView:
    # (container id, file name) -> its versions, oldest first.
    files: dict[tuple[str, str], list[StoredVersion]]

    @classmethod
    def read(cls, dump: Mapping[str, Any]) -> "FlywheelView":
        files: dict[tuple[str, str], list[StoredVersion]] = defaultdict(list)
        for node, session_uid in _walk(dump):
            for entry in node.get("files", []):
                version = StoredVersion(
                    container_id=str(node["_id"]),
                    session_uid=session_uid,
                    name=str(entry["name"]),
                    version=int(entry["version"]),
                    deleted=bool(entry.get("deleted")),
                    path=Path(entry["storage_path"]),
                )
                files[(version.container_id, version.name)].append(version)
        for versions in files.values():
            versions.sort(key=lambda v: v.version)

        return cls(dict(files))

    def newest(self, container_id: str | None, name: str) -> StoredVersion | None:
        live = [
            v for v in self.files.get((container_id or "", name), []) if not v.deleted
        ]

        return live[-1] if live else None

    def containers_holding(self, name: str) -> set[str]:
        return {container for container, file in self.files if file == name}


def _walk(dump: Mapping[str, Any]) -> Iterator[tuple[Mapping[str, Any], str | None]]:
    """Every container below the groups, with the uid of its session."""

    def visit(
        node: Mapping[str, Any], session_uid: str | None
    ) -> Iterator[tuple[Mapping[str, Any], str | None]]:
        if node.get("container_type") == "session":
            session_uid = node.get("uid")
        if node.get("container_type") != "group":
            yield node, session_uid
        for children in ("projects", "subjects", "sessions", "acquisitions"):
            for child in node.get(children, []):
                yield from visit(child, session_uid)

    for group in dump["groups"]:
        yield from visit(group, None)


def _uids(data: bytes) -> tuple[str | None, str | None]:
    try:
        dataset = pydicom.dcmread(
            io.BytesIO(data),
            stop_before_pixels=True,
            specific_tags=["SOPInstanceUID", "StudyInstanceUID"],
        )
    except Exception:  # anything unreadable is reported by the caller
        return None, None

    return (
        str(dataset.SOPInstanceUID) if "SOPInstanceUID" in dataset else None,
        str(dataset.StudyInstanceUID) if "StudyInstanceUID" in dataset else None,
    )


# What the state store says


@dataclass
class StoreView:
    studies: dict[str, dict[str, Any]]
    files: list[dict[str, Any]]
    claims: list[dict[str, Any]]
    # study id -> cycle -> times the study was reopened within that cycle.
    reopens: dict[str, Counter[int]] = field(default_factory=dict)

    @classmethod
    def read(cls, workspace: Workspace) -> "StoreView":
        studies = {row["id"]: row for row in workspace.query("SELECT * FROM studies")}
        files = workspace.query(
            "SELECT f.*, s.fw_acquisition_id FROM files f "
            "LEFT JOIN series s ON s.id = f.series_id"
        )
        claims = workspace.query("SELECT * FROM raw_claims")
        journal = workspace.query(
            "SELECT entity, from_state, to_state FROM study_journal ORDER BY seq"
        )

        return cls(studies, files, claims, _reopens(journal))

    def uid_of(self, study_id: str) -> str:
        study = self.studies.get(study_id)
        return str(study["study_instance_uid"]) if study else f"<unknown {study_id}>"

    def state_of(self, study_id: str) -> str | None:
        study = self.studies.get(study_id)
        return str(study["state"]) if study else None

    def flywheel_name(self, row: Mapping[str, Any]) -> str:
        """The name hyperwheel gives the file on Flywheel (as ``_name_of``)."""
        return str(row["flywheel_name"] or Path(row["staged_path"]).name)


def _reopens(journal: list[dict[str, Any]]) -> dict[str, Counter[int]]:
    """Reopens per study and cycle, counted from the transition journal.

    A purged study that returns starts the next cycle; any other entry into
    RECEIVING after the first is a reopen within the cycle, each of which
    may rebuild a zip once.
    """
    cycles: dict[str, int] = defaultdict(lambda: 1)
    reopens: dict[str, Counter[int]] = defaultdict(Counter)
    for row in journal:
        if row["to_state"] != "RECEIVING" or row["from_state"] is None:
            continue
        study = row["entity"]
        if row["from_state"] == "PURGED":
            cycles[study] += 1
        else:
            reopens[study][cycles[study]] += 1

    return dict(reopens)


# The checks


def _nothing_lost(
    sent: Mapping[str, str],
    in_orthanc: set[str],
    flywheel: FlywheelView,
    store: StoreView,
) -> list[str]:
    verified_zips = {
        (row["fw_acquisition_id"], store.flywheel_name(row)): row["sha384"]
        for row in store.files
        if row["kind"] == "zip" and row["verified_at"] is not None
    }
    # SOPInstanceUID -> where it lies in a zip hyperwheel verified.
    safe: dict[str, list[tuple[StoredVersion, str | None]]] = defaultdict(list)
    violations = []
    for (container, name), sha384 in verified_zips.items():
        newest = flywheel.newest(container, name)
        if newest is None or newest.sha384 != sha384:
            # Only instances that have left Orthanc make this a loss; they are
            # reported below, and this names the reason.
            violations.append(
                f"lost: zip {name!r} on {container} was verified by hyperwheel "
                "but Flywheel's newest version "
                + ("is missing" if newest is None else "holds other bytes")
            )
            continue
        for member, (sop, study_uid) in newest.members.items():
            if sop is None:
                violations.append(
                    f"lost: member {member!r} of {newest.describe()} is not DICOM"
                )
                continue
            safe[sop].append((newest, study_uid))

    for sop, study_uid in sorted(sent.items()):
        if sop in in_orthanc:
            continue
        places = safe.get(sop)
        if not places:
            violations.append(
                f"lost: instance {sop} of study {study_uid} is neither in Orthanc "
                "nor in a zip verified on Flywheel"
            )
            continue
        for version, member_study in places:
            if member_study != study_uid or version.session_uid != study_uid:
                violations.append(
                    f"lost: instance {sop} of study {study_uid} is filed in "
                    f"{version.describe()} under session {version.session_uid}"
                )

    return violations


def _no_needless_versions(flywheel: FlywheelView, store: StoreView) -> list[str]:
    zips = {
        (row["fw_acquisition_id"], store.flywheel_name(row)): row
        for row in store.files
        if row["kind"] == "zip"
    }
    violations: list[str] = []
    for (container, name), versions in sorted(flywheel.files.items()):
        violations.extend(
            f"versions: {v.describe()} was deleted; hyperwheel never deletes "
            "on Flywheel"
            for v in versions
            if v.deleted
        )
        by_hash: dict[str, list[int]] = defaultdict(list)
        for version in versions:
            by_hash[version.sha384].append(version.version)
        violations.extend(
            f"versions: {name!r} on {container} has identical versions "
            f"{', '.join(map(str, numbers))}"
            for numbers in by_hash.values()
            if len(numbers) > 1
        )
        if len(versions) == 1:
            continue
        if _RECEIPT.fullmatch(name):
            violations.extend(_receipt_versions(container, name, versions, store))
            continue
        if not name.endswith(ZIP_SUFFIX):
            violations.append(
                f"versions: {name!r} on {container} has {len(versions)} versions; "
                "a raw file never needs more than one"
            )
            continue
        violations.extend(_zip_versions(container, name, versions, zips, store))

    return violations


def _zip_versions(
    container: str,
    name: str,
    versions: list[StoredVersion],
    zips: Mapping[tuple[str, str], Mapping[str, Any]],
    store: StoreView,
) -> list[str]:
    """A rebuilt zip: one version per reopen at most, each adding instances."""
    violations = []
    row = zips.get((container, name))
    if row is None:
        violations.append(
            f"versions: {name!r} on {container} has {len(versions)} versions "
            "and the store knows no such zip"
        )
    else:
        reopened = store.reopens.get(row["study_id"], Counter())[row["cycle"]]
        if len(versions) > 1 + reopened:
            violations.append(
                f"versions: {name!r} on {container} has {len(versions)} versions "
                f"but study {store.uid_of(row['study_id'])} was reopened "
                f"{reopened} time(s) in cycle {row['cycle']}"
            )
    for older, newer in pairwise(versions):
        before, after = set(older.members), set(newer.members)
        if not before < after:
            violations.append(
                f"versions: {newer.describe()} is not a strict superset of "
                f"v{older.version} (dropped {len(before - after)}, added "
                f"{len(after - before)})"
            )

    return violations


def _receipt_versions(
    container: str, name: str, versions: list[StoredVersion], store: StoreView
) -> list[str]:
    """A receipt is written once per cycle; again only if the cycle reopened."""
    match = _RECEIPT.fullmatch(name)
    assert match is not None
    uid, cycle = match["uid"], int(match["cycle"])
    reopened = sum(
        store.reopens.get(study_id, Counter())[cycle]
        for study_id, study in store.studies.items()
        if study["study_instance_uid"] == uid
    )
    if len(versions) <= 1 + reopened:
        return []

    return [
        f"versions: receipt {name!r} on {container} has {len(versions)} versions "
        f"but its study was reopened {reopened} time(s) in cycle {cycle}"
    ]


def _staging_clean(
    workspace: Workspace, sent: Mapping[str, str], store: StoreView
) -> list[str]:
    root = workspace.staging.resolve()
    violations: list[str] = []

    paths = [row["staged_path"] for row in store.files]
    paths += [row["staged_path"] for row in store.claims]
    violations.extend(
        f"staging: the store records {path!r}, outside the staging root"
        for path in sorted(set(paths))
        if not Path(os.path.normpath(root / path)).is_relative_to(root)
    )

    live = {
        row["staged_path"]
        for row in store.files
        if row["purged_at"] is None and store.state_of(row["study_id"]) != "PURGED"
    }
    gone = {
        row["staged_path"]
        for row in store.files
        if row["purged_at"] is not None or store.state_of(row["study_id"]) == "PURGED"
    }
    gone |= {
        row["staged_path"]
        for row in store.claims
        if store.state_of(row["study_id"]) == "PURGED"
    }
    violations.extend(
        f"staging: {path} of a purged study is still on disk"
        for path in sorted(gone - live)
        if (root / path).exists()
    )

    purged = {
        store.uid_of(study_id)
        for study_id, study in store.studies.items()
        if study["state"] == "PURGED"
    }
    for path in _walk_files(root):
        relative = path.relative_to(root)
        if path.is_symlink():
            target = Path(os.path.realpath(path))
            where = "outside the root" if not target.is_relative_to(root) else "inside"
            violations.append(
                f"staging: symlink {relative} -> {target} ({where}); hyperwheel "
                "never makes one"
            )
            continue
        sop = path.name.removesuffix(".dcm")
        # Files listed in the store are judged above, by their rows.
        unrecorded = str(relative) not in live | gone and path.suffix == ".dcm"
        if unrecorded and sent.get(sop) in purged:
            violations.append(
                f"staging: {relative} holds an instance of purged study {sent[sop]}"
            )

    for study_id, study in store.studies.items():
        if study["state"] != "PURGED":
            continue
        violations.extend(
            f"staging: zip {path.relative_to(root)} of purged study "
            f"{study['study_instance_uid']} is still on disk"
            for path in _walk_files(root / ZIP_FOLDER / study_id)
        )

    in_flight = any(
        study["state"] in _PULLING
        or (study["state"] == "HELD" and study["held_from"] in _PULLING)
        for study in store.studies.values()
    )
    if not in_flight:
        violations.extend(
            f"staging: half-written {path.relative_to(root)} left with no work "
            "in flight"
            for path in _walk_files(root / TEMPORARY_FOLDER)
        )

    above = root.parent
    for path in _walk_files(above):
        if path.is_relative_to(root) or not path.name.endswith(_STAGED_SUFFIXES):
            continue
        violations.append(f"staging: {path} lies outside the staging root")

    return violations


def _raw_claimed_once(
    flywheel: FlywheelView,
    store: StoreView,
    owners: Mapping[str, str | None] | None,
) -> list[str]:
    violations = []
    claims = {row["remote_path"]: row for row in store.claims}

    studies_of: dict[str, set[str]] = defaultdict(set)
    for row in store.files:
        if row["kind"] == "raw":
            studies_of[row["source"]].add(row["study_id"])
    for source, studies in sorted(studies_of.items()):
        claimed = claims.get(source)
        if len(studies) > 1:
            names = ", ".join(sorted(store.uid_of(s) for s in studies))
            violations.append(f"raw: {source} is staged for several studies: {names}")
        if claimed is None or {claimed["study_id"]} != studies:
            violations.append(f"raw: {source} is staged without a matching claim")

    for row in store.files:
        if row["kind"] != "raw":
            continue
        name = store.flywheel_name(row)
        holders = flywheel.containers_holding(name)
        if len(holders) > 1:
            violations.append(
                f"raw: {name!r} is on {len(holders)} acquisitions: "
                + ", ".join(sorted(holders))
            )
        if row["purged_at"] is None:
            continue
        newest = flywheel.newest(row["fw_acquisition_id"], name)
        if newest is None or newest.sha384 != row["sha384"]:
            violations.append(
                f"raw: {row['source']} was purged from staging but is not on "
                f"Flywheel as verified (acquisition {row['fw_acquisition_id']})"
            )

    for name, owner in sorted((owners or {}).items()):
        claimed_by = [
            store.uid_of(row["study_id"])
            for path, row in claims.items()
            if Path(path).name == name
        ]
        expected = [] if owner is None else [owner]
        if claimed_by != expected:
            violations.append(
                f"raw: {name} should be claimed by {owner or 'no study'}, "
                f"is claimed by {', '.join(claimed_by) or 'no study'}"
            )

    return violations


def _walk_files(folder: Path) -> Iterator[Path]:
    """Every non-folder entry below ``folder``; symlinks are not followed."""
    for parent, folders, names in os.walk(folder, followlinks=False):
        here = Path(parent)
        for name in names:
            yield here / name
        # os.walk lists a symlink to a folder among the folders.
        yield from (here / f for f in folders if (here / f).is_symlink())


def _receipts_true(
    sent: Mapping[str, str],
    in_orthanc: set[str],
    flywheel: FlywheelView,
    store: StoreView,
    workspace: Workspace,
) -> list[str]:
    """What was deleted is on record, and the record matches Flywheel."""
    violations = []
    listed: set[str] = set()
    session_of = {
        row["study_instance_uid"]: row["fw_session_id"]
        for row in store.studies.values()
    }
    for path in sorted((workspace.state.parent / "receipts").glob("*.json")):
        receipt = json.loads(path.read_text())
        uploaded = flywheel.newest(
            session_of.get(receipt["study_instance_uid"]), path.name
        )
        local = hashlib.sha384(path.read_bytes()).hexdigest()
        if uploaded is None or uploaded.sha384 != local:
            violations.append(
                f"receipts: {path.name} on Flywheel "
                + ("is missing" if uploaded is None else "differs from the local copy")
            )
        for entry in receipt["files"]:
            listed.update(entry["sop_instance_uids"] or [])
            newest = flywheel.newest(entry["acquisition"], entry["name"])
            if newest is None:
                violations.append(
                    f"receipts: {path.name} lists {entry['name']!r}, which is "
                    "not on Flywheel"
                )
            elif (newest.version, newest.sha384) != (entry["version"], entry["sha384"]):
                violations.append(
                    f"receipts: {path.name} lists {entry['name']!r} "
                    f"v{entry['version']}, Flywheel's newest is v{newest.version}"
                    + (
                        " with the same bytes"
                        if newest.sha384 == entry["sha384"]
                        else ""
                    )
                )

    violations.extend(
        f"receipts: instance {sop} of study {study_uid} left Orthanc but no "
        "receipt lists it"
        for sop, study_uid in sorted(sent.items())
        if sop not in in_orthanc and sop not in listed
    )

    return violations
