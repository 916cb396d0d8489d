"""VERIFIED -> PURGED: a receipt first, then delete only what was verified.

Steps, each safe to repeat after a crash:

1. Ask Orthanc which instances the study holds now. Any that this cycle did
   not stage (and so did not verify) arrived late: the study reopens instead
   of losing them.
2. Write a JSON receipt (every file, size, sha384, Flywheel ids and
   versions, the SOPInstanceUIDs in each zip) to the state folder, upload it
   to the Flywheel session and verify it there like any other file.
3. Delete the verified instances from Orthanc one by one (already gone is
   fine), then the staged files hyperwheel wrote, then folders left empty.
   Files hyperwheel did not write, and their folders, stay.
"""

import asyncio
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import structlog

from hyperwheel import metrics
from hyperwheel.crashpoints import crash_point
from hyperwheel.errors import NotFound
from hyperwheel.flywheel_sink import FlywheelSink
from hyperwheel.fsync import fsync_path
from hyperwheel.orthanc import OrthancClient
from hyperwheel.routing import load_routes
from hyperwheel.settings import Settings
from hyperwheel.store import StagedFile, StateStore, StudyRecord
from hyperwheel.study import StudyState
from statemachine import utc_now

log = structlog.get_logger(__name__)


class Purger:
    """The purge step of the pipeline."""

    def __init__(
        self,
        store: StateStore,
        settings: Settings,
        orthanc: OrthancClient,
        sink: FlywheelSink,
    ) -> None:
        self._store = store
        self._routing = settings.paths.routing
        self._root = settings.paths.staging.resolve()
        self._receipts = settings.paths.state.parent / "receipts"
        self._orthanc = orthanc
        self._sink = sink

    async def run(self, study: StudyRecord) -> None:
        staged = await self._store.staged_files(study.id, study.cycle)
        verified = {f.source for f in staged if f.kind == "dicom"}
        try:
            in_orthanc = await self._orthanc.study_instance_ids(study.id)
        except NotFound:
            in_orthanc = []
        late = [i for i in in_orthanc if i not in verified]
        if late:
            await self._store.reopen(
                study.id, f"{len(late)} instance(s) arrived after verification"
            )
            return

        receipt = await self._write_receipt(study, staged)
        await self._sink.upload_receipt(study, receipt)
        crash_point("purge.after_receipt")

        deleted = 0
        for instance_id in sorted(i for i in in_orthanc if i in verified):
            if await self._orthanc.delete_instance(instance_id):
                deleted += 1
                metrics.INSTANCES_DELETED.inc()
            crash_point("purge.after_delete_instance")
        removed = await asyncio.to_thread(self._remove_staged, staged)
        crash_point("purge.after_remove_files")
        await self._store.mark_purged(study.id, study.cycle)

        await self._store.move(
            study.id,
            StudyState.PURGED,
            f"receipt {receipt}; {deleted} instance(s) deleted from Orthanc, "
            f"{removed} staged file(s) removed",
        )
        metrics.PURGES.inc()

    async def _write_receipt(
        self, study: StudyRecord, staged: list[StagedFile]
    ) -> Path:
        """The cycle's receipt. A rerun after a crash reuses it while it still
        says the same, so Flywheel gets no needless second version; after a
        late instance reopened the study it no longer does, and is rewritten."""
        path = self._receipts / receipt_name(study)
        document = await self._receipt(study, staged)
        if path.exists() and _same_receipt(path, document):
            return path
        self._receipts.mkdir(parents=True, exist_ok=True, mode=0o750)
        temporary = path.with_suffix(".part")
        temporary.write_text(json.dumps(document, indent=2, sort_keys=True))
        await asyncio.to_thread(_durable_rename, temporary, path)
        await self._store.add_event(study.id, "purge.receipt", str(path))

        return path

    async def _receipt(self, study: StudyRecord, staged: list[StagedFile]) -> Any:
        series = {s.id: s for s in await self._store.series_of(study.id)}
        members: dict[str | None, list[str]] = defaultdict(list)
        for file in staged:
            if file.kind == "dicom":
                members[file.series_id].append(file.sop_instance_uid or file.source)
        items = await self._store.upload_items(study.id, study.cycle)
        routes, _ = load_routes(self._routing)
        route = routes.get(study.route or "")

        return {
            "study_instance_uid": study.study_instance_uid,
            "orthanc_id": study.id,
            "cycle": study.cycle,
            "route": study.route,
            "flywheel": {
                "destination": str(route) if route else None,
                "group": route.group if route else None,
                "project_label": route.project if route else None,
                "project": study.fw_project_id,
                "subject": study.fw_subject_id,
                "session": study.fw_session_id,
            },
            "written_at": utc_now(),
            "files": [
                {
                    "name": item.flywheel_name,
                    "kind": item.kind,
                    "size": item.size,
                    "sha384": item.sha384,
                    "acquisition": series[item.series_id].fw_acquisition_id
                    if item.series_id in series
                    else None,
                    "version": item.flywheel_version,
                    "verified_at": item.verified_at,
                    "sop_instance_uids": sorted(members[item.series_id])
                    if item.kind == "zip"
                    else None,
                }
                for item in items
            ],
        }

    def _remove_staged(self, staged: list[StagedFile]) -> int:
        """Delete the files hyperwheel wrote (instances, raw files, zips), then
        the folders that leaves empty."""
        removed = 0
        folders = set()
        for file in staged:
            path = self._root / file.staged_path
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
            folders.add(path.parent)

        for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
            _remove_empty_up_to(folder, self._root)

        return removed


def receipt_name(study: StudyRecord) -> str:
    uid = study.study_instance_uid or study.id
    return f"hyperwheel-receipt_{uid}_cycle{study.cycle}.json"


def _durable_rename(temporary: Path, path: Path) -> None:
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    temporary.replace(path)
    fsync_path(path.parent)


def _same_receipt(path: Path, document: dict[str, Any]) -> bool:
    """Whether the receipt on disk records the same files (its time aside)."""
    try:
        written = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    written.pop("written_at", None)

    return bool(written == {k: v for k, v in document.items() if k != "written_at"})


def _remove_empty_up_to(folder: Path, root: Path) -> None:
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:
            return  # not empty: someone else's files live here
        folder = folder.parent
