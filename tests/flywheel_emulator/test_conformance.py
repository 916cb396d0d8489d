"""Conformance: the emulator, driven only through flywheel-sdk, acts as Flywheel.

The admin endpoints are used to arrange faults and to inspect the stored
tree, never to do what a client would do.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import flywheel
import httpx2
import pytest

from .fixtures import BRAIN_KEY, BRAIN_PROJECT, SPINE_KEY, SPINE_PROJECT, default_seed
from .server import FlywheelEmulator
from .threaded import RunningEmulator, running_emulator

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hierarchy(
    flywheel_client: Any, flywheel_emulator: RunningEmulator
) -> dict[str, Any]:
    """Subject S01 / session ses-1 / acquisition T1; the journal starts empty."""
    project = flywheel_client.lookup(BRAIN_PROJECT)
    subject = project.add_subject(label="S01")
    session = subject.add_session(label="ses-1", uid="1.2.840.1")
    acquisition = session.add_acquisition(label="T1", uid="1.2.840.1.1")
    flywheel_emulator.admin.clear_requests()
    return {
        "project": project,
        "subject": subject,
        "session": session,
        "acquisition": acquisition,
    }


@pytest.fixture
def spine_client(flywheel_emulator: RunningEmulator) -> Iterator[Any]:
    client = flywheel.Client(flywheel_emulator.sdk_key(SPINE_KEY))
    yield client
    client.shutdown()


def sdk_hash(content: bytes) -> str:
    return "v0-sha384-" + hashlib.sha384(content).hexdigest()


def write_file(folder: Path, name: str, content: bytes) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    return str(path)


def seen(emulator: RunningEmulator, method: str, path: str) -> list[dict[str, Any]]:
    return [
        entry
        for entry in emulator.admin.requests()
        if entry["method"] == method and entry["path"] == path
    ]


def stored_versions(dump: dict[str, Any], name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def visit(node: dict[str, Any]) -> None:
        found.extend(f for f in node.get("files", []) if f["name"] == name)
        for children in ("projects", "subjects", "sessions", "acquisitions"):
            for child in node.get(children, []):
                visit(child)

    for group in dump["groups"]:
        visit(group)
    return found


def containers_labelled(dump: dict[str, Any], kind: str, label: str) -> list[Any]:
    found: list[Any] = []

    def visit(node: dict[str, Any]) -> None:
        if node.get("container_type") == kind and node.get("label") == label:
            found.append(node)
        for children in ("projects", "subjects", "sessions", "acquisitions"):
            for child in node.get(children, []):
                visit(child)

    for group in dump["groups"]:
        visit(group)
    return found


# Authentication


def test_client_construction_checks_auth_status(
    flywheel_emulator: RunningEmulator,
) -> None:
    """Building a Client sends exactly one GET /api/auth/status with the key."""
    client = flywheel.Client(flywheel_emulator.sdk_key(BRAIN_KEY))

    checks = seen(flywheel_emulator, "GET", "/api/auth/status")
    assert len(checks) == 1
    assert checks[0]["authorized"] is True
    assert client.get_current_user().email == "brain-uploader@example.org"


def test_unknown_key_fails_client_construction_with_401(
    flywheel_emulator: RunningEmulator,
) -> None:
    """An unknown key makes Client() raise ApiException with status 401."""
    with pytest.raises(flywheel.ApiException) as raised:
        flywheel.Client(flywheel_emulator.sdk_key("not-a-key"))

    assert raised.value.status == 401


def test_bearer_keys_are_accepted() -> None:
    """A 57-character key, which the SDK sends as a Bearer token, authenticates."""
    seed = default_seed()
    long_key = "b" * 57
    seed["api_keys"][0]["key"] = long_key

    with running_emulator(seed) as emulator:
        client = flywheel.Client(emulator.sdk_key(long_key))
        assert client.lookup(BRAIN_PROJECT).label == "Brain MRI"


def test_error_replies_are_flywheel_json(
    flywheel_client: Any, flywheel_emulator: RunningEmulator
) -> None:
    """Errors carry {"message", "status_code"} and the SDK exposes the message."""
    missing = "f" * 24
    response = httpx2.get(
        f"{flywheel_emulator.api_url}/sessions/{missing}",
        headers={"Authorization": f"scitran-user {BRAIN_KEY}"},
    )

    with pytest.raises(flywheel.ApiException) as raised:
        flywheel_client.get_session(missing)

    body = response.json()
    assert (response.status_code, body["status_code"]) == (404, 404)
    assert raised.value.status == 404
    assert raised.value.reason == body["message"]


# Lookup and resolve


def test_lookup_finds_the_seeded_project(flywheel_client: Any) -> None:
    """lookup('group/project') returns the seeded project as a project node."""
    project = flywheel_client.lookup(BRAIN_PROJECT)

    assert project.container_type == "project"
    assert project.label == "Brain MRI"
    assert project.group == "radiology"
    assert len(project.id) == 24


def test_lookup_of_a_missing_path_is_404(flywheel_client: Any) -> None:
    """A path naming nothing raises ApiException 404."""
    with pytest.raises(flywheel.ApiException) as raised:
        flywheel_client.lookup(f"{BRAIN_PROJECT}/no-such-subject")

    assert raised.value.status == 404


def test_resolve_returns_path_and_children(
    flywheel_client: Any, hierarchy: dict[str, Any], tmp_path: Path
) -> None:
    """resolve() lists the nodes along the path and the last node's children."""
    hierarchy["acquisition"].upload_file(write_file(tmp_path, "a.txt", b"a"))

    group = flywheel_client.resolve("radiology")
    acquisition = flywheel_client.resolve(f"{BRAIN_PROJECT}/S01/ses-1/T1")

    assert [child.label for child in group.children] == ["Brain MRI"]
    assert [node.container_type for node in acquisition.path] == [
        "group",
        "project",
        "subject",
        "session",
        "acquisition",
    ]
    assert [(c.container_type, c.name) for c in acquisition.children] == [
        ("file", "a.txt")
    ]


def test_lookup_reaches_files(
    flywheel_client: Any, hierarchy: dict[str, Any], tmp_path: Path
) -> None:
    """lookup('…/acquisition/files/name') returns the stored file."""
    hierarchy["acquisition"].upload_file(write_file(tmp_path, "a.txt", b"abc"))

    found = flywheel_client.lookup(f"{BRAIN_PROJECT}/S01/ses-1/T1/files/a.txt")

    assert found.container_type == "file"
    assert found.hash == sdk_hash(b"abc")


# Containers


def test_created_hierarchy_is_found_by_label(
    flywheel_client: Any, hierarchy: dict[str, Any]
) -> None:
    """Subjects, sessions and acquisitions created via the SDK are found by label."""
    project = flywheel_client.lookup(BRAIN_PROJECT)

    subject = project.subjects.find_one("label=S01")
    session = subject.sessions.find_one("label=ses-1")
    acquisition = session.acquisitions.find_one("label=T1")

    assert acquisition.id == hierarchy["acquisition"].id
    assert acquisition.parents.session == session.id
    assert acquisition.parents.subject == subject.id
    assert session.subject.id == subject.id
    assert subject.code == "S01"


def test_sessions_are_found_by_uid_filter(
    flywheel_client: Any, hierarchy: dict[str, Any]
) -> None:
    """A uid= filter returns only the session with that uid."""
    subject = hierarchy["subject"]
    other = subject.add_session(label="ses-2", uid="1.2.840.2")

    matches = subject.sessions.find("uid=1.2.840.2")

    assert [session.id for session in matches] == [other.id]
    assert flywheel_client.get_session(other.id).uid == "1.2.840.2"


def test_updates_and_info_are_stored(
    flywheel_client: Any, hierarchy: dict[str, Any]
) -> None:
    """update() and update_info() change what a later GET returns."""
    session = hierarchy["session"]

    session.update(label="ses-renamed", timestamp="2024-03-01T10:00:00+01:00")
    session.update_info({"scanner": "portable"})

    reloaded = flywheel_client.get_session(session.id)
    assert reloaded.label == "ses-renamed"
    assert reloaded.timestamp.isoformat() == "2024-03-01T09:00:00+00:00"
    assert reloaded.info == {"scanner": "portable"}


def test_duplicate_subject_code_is_a_conflict(hierarchy: dict[str, Any]) -> None:
    """A second subject with the same code in a project raises ApiException 409."""
    with pytest.raises(flywheel.ApiException) as raised:
        hierarchy["project"].add_subject(label="S01")

    assert raised.value.status == 409


def test_groups_and_projects_cannot_be_created(
    flywheel_client: Any, flywheel_emulator: RunningEmulator
) -> None:
    """Creating groups or projects through the API is refused with 403."""
    before = flywheel_emulator.admin.dump()

    with pytest.raises(flywheel.ApiException) as project_refusal:
        flywheel_client.add_project({"group": "radiology", "label": "New"})
    with pytest.raises(flywheel.ApiException) as group_refusal:
        flywheel_client.add_group({"_id": "newgroup", "label": "New"})

    assert project_refusal.value.status == 403
    assert group_refusal.value.status == 403
    assert flywheel_emulator.admin.dump()["groups"] == before["groups"]


# Uploads


def test_multipart_upload_stores_content_and_hash(
    flywheel_client: Any,
    flywheel_emulator: RunningEmulator,
    hierarchy: dict[str, Any],
    tmp_path: Path,
) -> None:
    """Without signed URLs the SDK uploads multipart; hash and size match."""
    acquisition = hierarchy["acquisition"]
    content = os.urandom(3 * 1024 * 1024 + 17)

    reply = acquisition.upload_file(
        write_file(tmp_path, "scan.dcm", content),
        metadata={"modality": "MR", "info": {"series": 3}},
    )

    upload_path = f"/api/acquisitions/{acquisition.id}/files"
    assert [r["query"] for r in seen(flywheel_emulator, "POST", upload_path)] == [{}]
    assert reply[0].hash == sdk_hash(content)
    info = flywheel_client.get_acquisition_file_info(acquisition.id, "scan.dcm")
    assert (info.size, info.hash, info.version) == (len(content), sdk_hash(content), 1)
    assert (info.type, info.modality, info.info) == ("dicom", "MR", {"series": 3})


def test_signed_url_upload_uses_ticket_and_unauthenticated_put(
    flywheel_client: Any,
    flywheel_emulator: RunningEmulator,
    hierarchy: dict[str, Any],
    tmp_path: Path,
) -> None:
    """With signed_url on, the SDK opens a ticket, PUTs without a key, closes it."""
    flywheel_emulator.admin.set_signed_url(True)
    acquisition = hierarchy["acquisition"]
    content = os.urandom(2 * 1024 * 1024)

    reply = acquisition.upload_file(write_file(tmp_path, "scan.dcm", content))

    upload_path = f"/api/acquisitions/{acquisition.id}/files"
    posts = seen(flywheel_emulator, "POST", upload_path)
    assert posts[0]["query"] == {"ticket": ""}
    assert posts[1]["query"]["ticket"] != ""
    assert len(posts) == 2
    puts = [r for r in flywheel_emulator.admin.requests() if r["method"] == "PUT"]
    assert [p["authorized"] for p in puts] == [False]
    assert reply[0].hash == sdk_hash(content)
    assert flywheel_client.get_config().features.signed_url is True


def test_empty_ticket_reply_makes_sdk_reupload_by_multipart(
    flywheel_emulator: RunningEmulator, hierarchy: dict[str, Any], tmp_path: Path
) -> None:
    """An empty ticket-close reply makes the SDK silently upload again multipart."""
    flywheel_emulator.admin.set_signed_url(True)
    flywheel_emulator.admin.set_faults([{"kind": "empty_ticket_reply"}])
    acquisition = hierarchy["acquisition"]

    reply = acquisition.upload_file(write_file(tmp_path, "scan.dcm", b"dicom"))

    posts = seen(flywheel_emulator, "POST", f"/api/acquisitions/{acquisition.id}/files")
    assert [("ticket" in p["query"]) for p in posts] == [True, True, False]
    assert reply[0].version == 1
    versions = stored_versions(flywheel_emulator.admin.dump(), "scan.dcm")
    assert [v["version"] for v in versions] == [1]


def test_empty_ticket_reply_after_commit_leaves_two_versions(
    flywheel_emulator: RunningEmulator, hierarchy: dict[str, Any], tmp_path: Path
) -> None:
    """If the ticket close stored the file but replied [], the fallback adds v2."""
    flywheel_emulator.admin.set_signed_url(True)
    flywheel_emulator.admin.set_faults([{"kind": "empty_ticket_reply", "commit": True}])

    reply = hierarchy["acquisition"].upload_file(
        write_file(tmp_path, "scan.dcm", b"dicom")
    )

    assert reply[0].version == 2
    versions = stored_versions(flywheel_emulator.admin.dump(), "scan.dcm")
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[0]["hash"] == versions[1]["hash"] == sdk_hash(b"dicom")


def test_same_name_upload_adds_a_version_and_keeps_the_old(
    flywheel_client: Any,
    flywheel_emulator: RunningEmulator,
    hierarchy: dict[str, Any],
    tmp_path: Path,
) -> None:
    """Uploading a name twice gives version 2; version 1 stays stored and readable."""
    acquisition = hierarchy["acquisition"]
    acquisition.upload_file(write_file(tmp_path / "v1", "scan.txt", b"first"))
    acquisition.upload_file(write_file(tmp_path / "v2", "scan.txt", b"second"))

    current = flywheel_client.get_acquisition_file_info(acquisition.id, "scan.txt")
    old_copy = tmp_path / "old.txt"
    flywheel_client.download_file_from_acquisition(
        acquisition.id, "scan.txt", str(old_copy), version=1
    )

    assert current.version == 2
    assert current.hash == sdk_hash(b"second")
    assert old_copy.read_bytes() == b"first"
    versions = stored_versions(flywheel_emulator.admin.dump(), "scan.txt")
    assert [(v["version"], v["hash"]) for v in versions] == [
        (1, sdk_hash(b"first")),
        (2, sdk_hash(b"second")),
    ]
    assert versions[0]["replaced"] is not None
    assert len(flywheel_client.get_acquisition(acquisition.id).files) == 1


def test_download_returns_identical_bytes(
    flywheel_client: Any, hierarchy: dict[str, Any], tmp_path: Path
) -> None:
    """A downloaded file is byte-for-byte what was uploaded."""
    content = os.urandom(1024 * 1024 + 3)
    acquisition = hierarchy["acquisition"]
    acquisition.upload_file(write_file(tmp_path, "scan.nii.gz", content))

    target = tmp_path / "downloaded"
    acquisition.download_file("scan.nii.gz", str(target))

    assert target.read_bytes() == content


def test_download_url_works_without_a_key(
    flywheel_client: Any, hierarchy: dict[str, Any], tmp_path: Path
) -> None:
    """A ticketed download URL serves the file to a request carrying no key."""
    acquisition = hierarchy["acquisition"]
    acquisition.upload_file(write_file(tmp_path, "scan.dcm", b"ticketed"))

    url = flywheel_client.get_acquisition_download_url(acquisition.id, "scan.dcm")
    response = httpx2.get(url)

    assert response.status_code == 200
    assert response.content == b"ticketed"


def test_zipped_dicom_reports_type_and_member_count(
    flywheel_client: Any, hierarchy: dict[str, Any], tmp_path: Path
) -> None:
    """A .dicom.zip is typed dicom and reports its zip_member_count."""
    archive = tmp_path / "series.dicom.zip"
    with zipfile.ZipFile(archive, "w") as writer:
        for number in range(3):
            writer.writestr(f"IM{number}.dcm", os.urandom(64))

    acquisition = hierarchy["acquisition"]
    acquisition.upload_file(str(archive))
    info = flywheel_client.get_acquisition_file_info(acquisition.id, archive.name)

    assert (info.type, info.zip_member_count) == ("dicom", 3)
    assert info.hash == sdk_hash(archive.read_bytes())


def test_delete_removes_the_file_but_keeps_history(
    flywheel_client: Any,
    flywheel_emulator: RunningEmulator,
    hierarchy: dict[str, Any],
    tmp_path: Path,
) -> None:
    """Deleting answers an object, hides the file, and the dump marks it deleted."""
    acquisition = hierarchy["acquisition"]
    acquisition.upload_file(write_file(tmp_path, "scan.txt", b"x"))

    result = flywheel_client.delete_acquisition_file(acquisition.id, "scan.txt")

    assert result.deleted == 1
    assert flywheel_client.get_acquisition(acquisition.id).files == []
    with pytest.raises(flywheel.ApiException) as raised:
        flywheel_client.get_acquisition_file_info(acquisition.id, "scan.txt")
    assert raised.value.status == 404
    versions = stored_versions(flywheel_emulator.admin.dump(), "scan.txt")
    assert versions[0]["deleted"] is not None


def test_data_dir_holds_contents_and_snapshot(
    flywheel_emulator: RunningEmulator,
    hierarchy: dict[str, Any],
    tmp_path: Path,
) -> None:
    """With a data dir, stored bytes and a state.json snapshot are on disk."""
    hierarchy["acquisition"].upload_file(write_file(tmp_path, "scan.txt", b"kept"))

    snapshot = json.loads((tmp_path / "flywheel" / "state.json").read_text())
    (stored,) = stored_versions(snapshot, "scan.txt")
    assert Path(stored["storage_path"]).read_bytes() == b"kept"


# Permissions


def test_other_projects_are_forbidden(
    spine_client: Any, hierarchy: dict[str, Any], tmp_path: Path
) -> None:
    """A key answers 403 on another project's lookup, reads, creates and uploads."""
    project_id = hierarchy["project"].id
    attempts: list[Callable[[], Any]] = [
        lambda: spine_client.lookup(BRAIN_PROJECT),
        lambda: spine_client.lookup(f"{BRAIN_PROJECT}/S01"),
        lambda: spine_client.get_project(project_id),
        lambda: spine_client.add_subject({"project": project_id, "label": "X"}),
        lambda: spine_client.upload_file_to_acquisition(
            hierarchy["acquisition"].id, write_file(tmp_path, "x.txt", b"x")
        ),
    ]

    statuses = []
    for attempt in attempts:
        with pytest.raises(flywheel.ApiException) as raised:
            attempt()
        statuses.append(raised.value.status)

    assert statuses == [403] * len(attempts)
    assert spine_client.lookup(SPINE_PROJECT).label == "Spine MRI"
    assert [p.label for p in spine_client.resolve("radiology").children] == [
        "Spine MRI"
    ]


# Faults


def test_injected_503_on_get_is_retried_by_sdk(
    flywheel_client: Any, flywheel_emulator: RunningEmulator, hierarchy: dict[str, Any]
) -> None:
    """Two 503s on a GET are absorbed by SDK retries; the third attempt succeeds."""
    session_id = hierarchy["session"].id
    path = f"/api/sessions/{session_id}"
    flywheel_emulator.admin.set_faults(
        [{"kind": "error", "methods": ["GET"], "path": path, "times": 2}]
    )

    session = flywheel_client.get_session(session_id)

    assert session.label == "ses-1"
    assert [r["status"] for r in seen(flywheel_emulator, "GET", path)] == [
        503,
        503,
        200,
    ]


def test_persistent_503_exhausts_sdk_retries(
    flywheel_client: Any, flywheel_emulator: RunningEmulator
) -> None:
    """A GET that always gets 503 is tried 1 + TOTAL_RETRIES times, then raises."""
    project_id = flywheel_client.lookup(BRAIN_PROJECT).id
    path = f"/api/projects/{project_id}"
    flywheel_emulator.admin.set_faults(
        [{"kind": "error", "methods": ["GET"], "path": path}]
    )

    with pytest.raises(flywheel.ApiException) as raised:
        flywheel_client.get_project(project_id)

    assert raised.value.status == 503
    attempts = len(seen(flywheel_emulator, "GET", path))
    assert attempts == flywheel.rest.TOTAL_RETRIES + 1


def test_500_is_not_retried_even_for_get(
    flywheel_client: Any, flywheel_emulator: RunningEmulator
) -> None:
    """A 500 is outside the SDK's retry list: one attempt, ApiException 500."""
    project_id = flywheel_client.lookup(BRAIN_PROJECT).id
    path = f"/api/projects/{project_id}"
    flywheel_emulator.admin.set_faults(
        [{"kind": "error", "methods": ["GET"], "path": path, "status": 500}]
    )

    with pytest.raises(flywheel.ApiException) as raised:
        flywheel_client.get_project(project_id)

    assert raised.value.status == 500
    assert len(seen(flywheel_emulator, "GET", path)) == 1


def test_injected_503_on_post_is_not_retried(
    flywheel_client: Any, flywheel_emulator: RunningEmulator, hierarchy: dict[str, Any]
) -> None:
    """A 503 on a POST reaches the caller at once and nothing is created."""
    flywheel_emulator.admin.set_faults(
        [{"kind": "error", "methods": ["POST"], "path": "^/api/subjects$"}]
    )

    with pytest.raises(flywheel.ApiException) as raised:
        hierarchy["project"].add_subject(label="S02")

    assert raised.value.status == 503
    assert len(seen(flywheel_emulator, "POST", "/api/subjects")) == 1
    assert containers_labelled(flywheel_emulator.admin.dump(), "subject", "S02") == []


def test_injected_503_on_upload_is_reported_not_a_broken_pipe(
    flywheel_emulator: RunningEmulator, hierarchy: dict[str, Any], tmp_path: Path
) -> None:
    """A refused multipart upload surfaces as ApiException 503 and stores nothing."""
    acquisition = hierarchy["acquisition"]
    path = f"/api/acquisitions/{acquisition.id}/files"
    flywheel_emulator.admin.set_faults(
        [{"kind": "error", "methods": ["POST"], "path": path}]
    )

    with pytest.raises(flywheel.ApiException) as raised:
        acquisition.upload_file(write_file(tmp_path, "big.dcm", os.urandom(4 << 20)))

    assert raised.value.status == 503
    assert stored_versions(flywheel_emulator.admin.dump(), "big.dcm") == []


def test_503_on_signed_url_put_is_retried_with_the_whole_body(
    flywheel_emulator: RunningEmulator, hierarchy: dict[str, Any], tmp_path: Path
) -> None:
    """The SDK retries a refused signed-URL PUT, re-sending the full body."""
    flywheel_emulator.admin.set_signed_url(True)
    flywheel_emulator.admin.set_faults(
        [{"kind": "error", "methods": ["PUT"], "path": "^/__storage/", "times": 2}]
    )
    content = os.urandom(3 << 20)

    reply = hierarchy["acquisition"].upload_file(
        write_file(tmp_path, "scan.dcm", content)
    )

    puts = [r for r in flywheel_emulator.admin.requests() if r["method"] == "PUT"]
    assert [p["status"] for p in puts] == [503, 503, 200]
    assert (reply[0].size, reply[0].hash) == (len(content), sdk_hash(content))


def test_error_after_commit_on_post_duplicates_when_retried(
    flywheel_emulator: RunningEmulator, hierarchy: dict[str, Any]
) -> None:
    """A 503 after a committed POST leaves the session; a retry makes a second."""
    subject = hierarchy["subject"]
    flywheel_emulator.admin.set_faults(
        [{"kind": "error_after_commit", "path": "^/api/sessions$", "times": 1}]
    )

    with pytest.raises(flywheel.ApiException) as raised:
        subject.add_session(label="ses-retry")
    subject.add_session(label="ses-retry")

    assert raised.value.status == 503
    assert len(subject.sessions.find("label=ses-retry")) == 2


def test_error_after_commit_on_put_is_retried_by_sdk(
    flywheel_client: Any, flywheel_emulator: RunningEmulator, hierarchy: dict[str, Any]
) -> None:
    """A 503 after a committed PUT is retried by the SDK and the call succeeds."""
    session = hierarchy["session"]
    path = f"/api/sessions/{session.id}"
    flywheel_emulator.admin.set_faults(
        [{"kind": "error_after_commit", "methods": ["PUT"], "path": path, "times": 1}]
    )

    session.update(label="ses-put")

    assert [r["status"] for r in seen(flywheel_emulator, "PUT", path)] == [503, 200]
    assert flywheel_client.get_session(session.id).label == "ses-put"


def test_random_faults_repeat_under_the_same_seed(
    flywheel_client: Any, flywheel_emulator: RunningEmulator
) -> None:
    """Probabilistic faults with one RNG seed fail the same requests every run."""
    project_id = flywheel_client.lookup(BRAIN_PROJECT).id
    rule = {
        "kind": "error",
        "methods": ["GET"],
        "path": f"^/api/projects/{project_id}$",
        "status": 500,
        "probability": 0.5,
    }

    def failure_pattern() -> list[bool]:
        flywheel_emulator.admin.set_faults([rule], seed=7)
        pattern = []
        for _ in range(24):
            try:
                flywheel_client.get_project(project_id)
                pattern.append(False)
            except flywheel.ApiException:
                pattern.append(True)
        return pattern

    first = failure_pattern()
    second = failure_pattern()

    assert first == second
    assert True in first
    assert False in first


def test_delay_slows_answers_without_failing_them(
    flywheel_client: Any, flywheel_emulator: RunningEmulator
) -> None:
    """A delay fault makes a call take at least that long and still succeed."""
    project_id = flywheel_client.lookup(BRAIN_PROJECT).id
    flywheel_emulator.admin.set_faults(
        [{"kind": "delay", "seconds": 0.3, "path": "^/api/projects/"}]
    )

    started = time.monotonic()
    project = flywheel_client.get_project(project_id)

    assert time.monotonic() - started >= 0.3
    assert project.label == "Brain MRI"


def test_timeout_on_get_is_retried_by_sdk(
    flywheel_emulator: RunningEmulator,
) -> None:
    """A GET held past the client timeout is retried and the retry succeeds."""
    client = flywheel.Client(flywheel_emulator.sdk_key(BRAIN_KEY), request_timeout=0.5)
    project_id = client.lookup(BRAIN_PROJECT).id
    path = f"/api/projects/{project_id}"
    flywheel_emulator.admin.set_faults(
        [{"kind": "timeout", "methods": ["GET"], "path": path, "times": 1}]
    )

    assert client.get_project(project_id).label == "Brain MRI"
    assert [r["status"] for r in seen(flywheel_emulator, "GET", path)] == [None, 200]


def test_timeout_on_post_raises_and_commits_nothing(
    flywheel_emulator: RunningEmulator,
) -> None:
    """A POST held past the client timeout raises a timeout; nothing is created."""
    client = flywheel.Client(flywheel_emulator.sdk_key(BRAIN_KEY), request_timeout=0.5)
    project = client.lookup(BRAIN_PROJECT)
    flywheel_emulator.admin.set_faults(
        [{"kind": "timeout", "methods": ["POST"], "path": "^/api/subjects$"}]
    )

    with pytest.raises(httpx2.TimeoutException):
        project.add_subject(label="S-held")

    assert len(seen(flywheel_emulator, "POST", "/api/subjects")) == 1
    dump = flywheel_emulator.admin.dump()
    assert containers_labelled(dump, "subject", "S-held") == []


def test_timeout_after_commit_leaves_the_container(
    flywheel_emulator: RunningEmulator,
) -> None:
    """A POST that commits and then hangs raises a timeout yet the subject exists."""
    client = flywheel.Client(flywheel_emulator.sdk_key(BRAIN_KEY), request_timeout=0.5)
    project = client.lookup(BRAIN_PROJECT)
    flywheel_emulator.admin.set_faults(
        [
            {
                "kind": "timeout",
                "methods": ["POST"],
                "path": "^/api/subjects$",
                "after_commit": True,
            }
        ]
    )

    with pytest.raises(httpx2.TimeoutException):
        project.add_subject(label="S-late")

    flywheel_emulator.admin.wait_for_dump(
        lambda dump: len(containers_labelled(dump, "subject", "S-late")) == 1
    )


def test_dropped_upload_is_answered_but_not_stored(
    flywheel_client: Any,
    flywheel_emulator: RunningEmulator,
    hierarchy: dict[str, Any],
    tmp_path: Path,
) -> None:
    """A dropped upload replies with a file and hash, but nothing can be read back."""
    flywheel_emulator.admin.set_faults([{"kind": "drop_upload"}])
    acquisition = hierarchy["acquisition"]

    reply = acquisition.upload_file(write_file(tmp_path, "lost.dcm", b"gone"))

    assert reply[0].hash == sdk_hash(b"gone")
    assert flywheel_client.get_acquisition(acquisition.id).files == []
    assert stored_versions(flywheel_emulator.admin.dump(), "lost.dcm") == []


def test_null_hash_is_reported_as_none(
    flywheel_client: Any,
    flywheel_emulator: RunningEmulator,
    hierarchy: dict[str, Any],
    tmp_path: Path,
) -> None:
    """Files stored under the null_hash fault report hash None but keep content."""
    flywheel_emulator.admin.set_faults([{"kind": "null_hash"}])
    acquisition = hierarchy["acquisition"]

    reply = acquisition.upload_file(write_file(tmp_path, "scan.dcm", b"content"))
    info = flywheel_client.get_acquisition_file_info(acquisition.id, "scan.dcm")
    target = tmp_path / "back"
    acquisition.download_file("scan.dcm", str(target))

    assert reply[0].hash is None
    assert info.hash is None
    assert target.read_bytes() == b"content"


def test_key_revoked_mid_run_gets_401(
    flywheel_client: Any, flywheel_emulator: RunningEmulator
) -> None:
    """After revocation every call raises 401; restoring the key heals it."""
    project_id = flywheel_client.lookup(BRAIN_PROJECT).id
    flywheel_emulator.admin.revoke_key(BRAIN_KEY)

    with pytest.raises(flywheel.ApiException) as raised:
        flywheel_client.get_project(project_id)
    flywheel_emulator.admin.restore_key(BRAIN_KEY)

    assert raised.value.status == 401
    assert flywheel_client.get_project(project_id).label == "Brain MRI"


def test_revoke_key_fault_cuts_off_an_upload(
    flywheel_client: Any,
    flywheel_emulator: RunningEmulator,
    hierarchy: dict[str, Any],
    tmp_path: Path,
) -> None:
    """The revoke_key fault answers the matching upload 401 and keeps the key dead."""
    acquisition = hierarchy["acquisition"]
    flywheel_emulator.admin.set_faults(
        [{"kind": "revoke_key", "methods": ["POST"], "path": "/files$"}]
    )

    with pytest.raises(flywheel.ApiException) as upload_refusal:
        acquisition.upload_file(write_file(tmp_path, "scan.dcm", b"x"))
    with pytest.raises(flywheel.ApiException) as read_refusal:
        flywheel_client.get_acquisition(acquisition.id)

    assert (upload_refusal.value.status, read_refusal.value.status) == (401, 401)
    keys = flywheel_emulator.admin.dump()["api_keys"]
    assert {k["user"]: k["revoked"] for k in keys}["brain-uploader@example.org"]


# Admin surface and ways of running


def test_admin_endpoints_need_no_key_and_live_outside_api(
    flywheel_emulator: RunningEmulator,
) -> None:
    """/__admin/ answers without a key, and is not reachable under /api/."""
    inside = httpx2.get(f"{flywheel_emulator.url}/__admin/dump")
    under_api = httpx2.get(f"{flywheel_emulator.api_url}/__admin/dump")

    assert inside.status_code == 200
    assert "groups" in inside.json()
    assert under_api.status_code == 404


@pytest.mark.asyncio
async def test_emulator_runs_inside_an_event_loop() -> None:
    """FlywheelEmulator starts and stops in-loop and serves /api/config publicly."""
    emulator = FlywheelEmulator(default_seed(), signed_url=True)
    await emulator.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(emulator.api_url + "/config") as response:
                config = await response.json()
            async with session.get(emulator.api_url + "/auth/status") as response:
                refusal = (response.status, await response.json())
    finally:
        await emulator.stop()

    assert config["features"]["signed_url"] is True
    assert refusal[0] == 401
    assert refusal[1]["status_code"] == 401


def test_command_line_serves_a_seed_file(tmp_path: Path) -> None:
    """`python -m tests.flywheel_emulator --seed` serves the SDK until stopped."""
    seed_path = tmp_path / "seed.json"
    seed_path.write_text(json.dumps(default_seed()))
    command = [
        sys.executable,
        "-m",
        "tests.flywheel_emulator",
        "--port",
        "0",
        "--seed",
        str(seed_path),
        "--data-dir",
        str(tmp_path / "data"),
    ]
    process = subprocess.Popen(
        command, cwd=REPOSITORY_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        url = _announced_url(process, timeout=10)
        host_port = url.removeprefix("http://")
        client = flywheel.Client(f"{host_port}:__force_insecure:{BRAIN_KEY}")

        assert client.lookup(BRAIN_PROJECT).label == "Brain MRI"
        assert (tmp_path / "data" / "state.json").exists()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == 0


def _announced_url(process: subprocess.Popen[str], timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()

    def read_first_line() -> None:
        assert process.stdout is not None
        lines.put(process.stdout.readline())

    threading.Thread(target=read_first_line, daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty as error:
        raise AssertionError("the emulator did not announce its URL") from error
    assert "listening on" in line, line
    return line.strip().rsplit(" ", 1)[-1]
