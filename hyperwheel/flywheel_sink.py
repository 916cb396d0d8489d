"""RRDF_SYNCED -> UPLOADED -> VERIFIED: the study's files on Flywheel, checked.

Layout, as Flywheel's own tools make it: the route's group and project (never
created here), a subject labelled with the PatientID label, a session with
the StudyInstanceUID as ``uid``, and per series an acquisition with the
SeriesInstanceUID as ``uid`` holding ``<acquisition>.dicom.zip`` and the raw
files matched to it. Containers are found by ``uid`` first, then by label,
and created only when missing; every lookup is repeated on the next attempt,
so a create that failed after Flywheel committed it is found, not doubled.

A file already on Flywheel with the same name, size and hash is not sent
again, so a restart at any point leaves one version of each file.
Verification lists each acquisition once and compares name, size and
sha384, downloading only where Flywheel gives no hash.
"""

import asyncio
import tempfile
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from hyperwheel import logs, metrics, progress
from hyperwheel.backoff import backoff_delay
from hyperwheel.crashpoints import crash_point
from hyperwheel.dicom_zip import Member, build_zip
from hyperwheel.errors import NotFound, PermanentError, TransientError
from hyperwheel.flywheel_gateway import (
    FlywheelDenied,
    FlywheelGateway,
    FlywheelUnavailable,
)
from hyperwheel.hashing import file_digest
from hyperwheel.routing import Route, load_keychain, load_routes
from hyperwheel.settings import Settings
from hyperwheel.staging import TEMPORARY_FOLDER
from hyperwheel.store import SeriesRecord, StateStore, StudyRecord, UploadItem
from hyperwheel.study import StudyState

log = structlog.get_logger(__name__)

ZIP_FOLDER = ".hyperwheel-zips"
# Tries of one create or upload within a step, before the step itself fails.
_TRIES = 4
HASH_PREFIX = "v0-sha384-"


@dataclass(frozen=True)
class Target:
    """Where a study goes and the SDK client allowed to put it there."""

    route: Route
    client: Any
    project: Any


class FlywheelSink:
    """The upload and verify steps of the pipeline."""

    def __init__(
        self, store: StateStore, settings: Settings, gateway: FlywheelGateway
    ) -> None:
        self._store = store
        self._settings = settings
        self._root = settings.paths.staging.resolve()
        self._gateway = gateway

    # Upload

    async def upload(self, study: StudyRecord) -> None:
        """Find or create the containers, then send what Flywheel lacks."""
        with self._recheck_when_denied():
            await self._upload(study)

    async def verify(self, study: StudyRecord) -> None:
        """Compare every file with Flywheel; send again what is missing or wrong."""
        with self._recheck_when_denied():
            await self._verify(study)

    @contextmanager
    def _recheck_when_denied(self) -> Iterator[None]:
        # A refused key may be fixed on Flywheel's side without anyone telling
        # us, so such a hold is checked again every flywheel.auth_recheck.
        try:
            yield
        except FlywheelDenied as error:
            error.recheck_after = self._settings.flywheel.auth_recheck
            raise

    async def _upload(self, study: StudyRecord) -> None:
        target = await self._target(study)
        acquisitions = await self._containers(study, target)
        items = await self._prepare(study, acquisitions)

        sent = present = 0
        total = sum(item.size for item in items)
        with progress.tracking(study.id, "upload", total) as tracker:
            for series_id, acquisition_id in acquisitions.items():
                remote = await self._files_of(target, acquisition_id)
                for item in items:
                    if item.series_id != series_id:
                        continue
                    name = self._name_of(item)
                    if _same(remote.get(name), item):
                        await self._store.mark_present(item.id, name)
                        present += 1
                    else:
                        await self._send(target, acquisition_id, item, name)
                        sent += 1
                    tracker.add(item.size)

        await self._store.move(
            study.id,
            StudyState.UPLOADED,
            f"{sent} file(s) uploaded, {present} already on Flywheel",
        )

    async def _target(self, study: StudyRecord) -> Target:
        """Route, key and project; anything missing holds the study."""
        if study.route is None:
            raise PermanentError(
                f"no routing key: {study.route_problem or 'OperatorsName is empty'}"
            )
        routes, problems = load_routes(self._settings.paths.routing)
        keys, key_problems = load_keychain(self._settings.paths.keychain)
        for secret in keys.values():
            logs.register_secret(secret)
        if problems or key_problems:
            raise PermanentError("; ".join(str(p) for p in problems + key_problems))
        route = routes.get(study.route)
        if route is None:
            raise PermanentError(
                f"no route for {study.route!r} in {self._settings.paths.routing}"
            )
        key = keys.get(study.route)
        if key is None:
            raise PermanentError(
                f"no API key for {study.route!r} in {self._settings.paths.keychain}"
            )

        try:
            client = await self._gateway.client(key)
            project = await self._gateway.call(
                client.lookup, f"{route.group}/{route.project}"
            )
        except NotFound:
            raise PermanentError(
                f"project {route} does not exist, or the key for {study.route!r} "
                "may not see it"
            ) from None
        except FlywheelDenied as error:
            self._gateway.forget(key)
            raise FlywheelDenied(
                f"the API key for {study.route!r} may not use {route}: {error}"
            ) from None
        await self._store.update_study(study.id, fw_project_id=project.id)

        return Target(route, client, project)

    async def _containers(self, study: StudyRecord, target: Target) -> dict[str, str]:
        """Subject, session and acquisitions; series id -> acquisition id."""
        call = self._gateway.call
        label = study.subject_label or "unknown"

        async def find_subject() -> Any:
            return await self._find(target.project.subjects, label=label)

        async def create_subject() -> Any:
            return await call(target.project.add_subject, label=label, code=label)

        subject = await self._find_or_create(find_subject, create_subject)

        async def find_session() -> Any:
            found = await self._find(subject.sessions, uid=study.study_instance_uid)
            return found or await self._find(
                subject.sessions, label=study.session_label
            )

        async def create_session() -> Any:
            return await call(
                subject.add_session,
                label=study.session_label,
                uid=study.study_instance_uid,
                timestamp=_timestamp(study.session_label),
            )

        session = await self._find_or_create(find_session, create_session)
        await self._store.update_study(
            study.id, fw_subject_id=subject.id, fw_session_id=session.id
        )

        # One listing serves every series; it is refreshed only after a
        # create fails, when Flywheel may have committed it anyway.
        listing = await call(session.acquisitions.find)
        found = {}
        series = await self._store.series_of(study.id)
        for record, label in zip(series, _distinct_labels(series), strict=True):
            acquisition = await self._acquisition(session, listing, record, label)
            listing.append(acquisition)
            await self._store.set_acquisition(record.id, acquisition.id, label)
            found[record.id] = str(acquisition.id)

        return found

    async def _acquisition(
        self, session: Any, listing: list[Any], series: SeriesRecord, label: str
    ) -> Any:
        uid = series.series_instance_uid
        if any(a.label == label and a.uid not in (None, uid) for a in listing):
            # Another series already owns this label on Flywheel.
            label = f"{label} ({series.series_number or series.id[:8]})"
        known = listing

        async def find() -> Any:
            by_uid = [a for a in known if uid and a.uid == uid]
            by_label = [a for a in known if a.label == label and a.uid in (None, uid)]
            return (by_uid or by_label or [None])[0]

        async def create() -> Any:
            nonlocal known
            try:
                return await self._gateway.call(
                    session.add_acquisition,
                    label=label,
                    uid=uid,
                    timestamp=series.started_at or None,
                )
            except FlywheelUnavailable:
                known = await self._gateway.call(session.acquisitions.find)
                raise

        return await self._find_or_create(find, create)

    async def _find_or_create(
        self, find: Callable[[], Awaitable[Any]], create: Callable[[], Awaitable[Any]]
    ) -> Any:
        """Look up, create if missing; after a failed create, look up again.

        A POST is not idempotent: Flywheel may have committed it before the
        error reached us, so every retry starts with the lookup.
        """
        for attempt in range(1, _TRIES + 1):
            found = await find()
            if found is not None:
                return found
            try:
                crash_point("flywheel.before_create")
                created = await create()
                crash_point("flywheel.after_create")
                return created
            except FlywheelUnavailable as error:
                _note_failure("create", attempt, error)
                if attempt == _TRIES:
                    raise
                await _pause(attempt)

        raise AssertionError("unreachable")

    async def _find(self, finder: Any, **match: str | None) -> Any:
        ((field, value),) = match.items()
        if not value:
            return None
        return await self._gateway.call(finder.find_first, f'{field}="{value}"')

    async def _prepare(
        self, study: StudyRecord, acquisitions: dict[str, str]
    ) -> list[UploadItem]:
        """Build each series' zip from its staged instances; every upload item."""
        staged = await self._store.staged_files(study.id, study.cycle)
        by_series: dict[str, list[Member]] = defaultdict(list)
        for file in staged:
            if file.kind == "dicom" and file.series_id is not None:
                by_series[file.series_id].append(
                    Member(self._root / file.staged_path, Path(file.staged_path).name)
                )

        labels = {
            s.id: s.fw_acquisition_label for s in await self._store.series_of(study.id)
        }
        for series_id, members in sorted(by_series.items()):
            name = _zip_name(labels.get(series_id) or series_id, study.cycle)
            relative = Path(ZIP_FOLDER, study.id, str(study.cycle), name)
            target = self._root / relative
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            built = await asyncio.to_thread(build_zip, members, target)
            crash_point("flywheel.after_zip")
            await self._store.record_zip(
                study.id,
                study.cycle,
                series_id,
                str(relative),
                built.size,
                built.sha384,
                name,
            )

        return [
            item
            for item in await self._store.upload_items(study.id, study.cycle)
            if item.series_id in acquisitions
        ]

    async def _send(
        self, target: Target, acquisition_id: str, item: UploadItem, name: str
    ) -> None:
        """Upload one file; after a failure, check whether it arrived anyway."""
        metadata: dict[str, Any] = {"name": name}
        if item.kind == "zip":
            metadata.update(type="dicom", modality="MR")
        for attempt in range(1, _TRIES + 1):
            try:
                crash_point("flywheel.before_upload")
                await self._gateway.call(
                    target.client.upload_file_to_container,
                    acquisition_id,
                    str(self._root / item.staged_path),
                    metadata=dict(metadata),
                )
                crash_point("flywheel.after_upload")
                break
            except FlywheelUnavailable as error:
                _note_failure("upload", attempt, error)
                remote = await self._files_of(target, acquisition_id)
                if _same(remote.get(name), item):
                    break
                if attempt == _TRIES:
                    raise
                await _pause(attempt)

        await self._store.mark_uploaded(item.id, name)
        metrics.UPLOADED_BYTES.inc(item.size)
        log.info(
            "flywheel.uploaded", acquisition=acquisition_id, file=name, size=item.size
        )

    async def _files_of(self, target: Target, acquisition_id: str) -> dict[str, Any]:
        """The acquisition's current files by name, from one request."""
        acquisition = await self._gateway.call(
            target.client.get_acquisition, acquisition_id
        )
        return {f.name: f for f in acquisition.files or []}

    def _name_of(self, item: UploadItem) -> str:
        return item.flywheel_name or Path(item.staged_path).name

    # Verify

    async def upload_receipt(self, study: StudyRecord, path: Path) -> None:
        """Put the purge receipt on the session, verified like any file."""
        with self._recheck_when_denied():
            target = await self._target(study)
            session_id = study.fw_session_id
            digest = await asyncio.to_thread(file_digest, path, "sha384")
            size = (await asyncio.to_thread(path.stat)).st_size
            for attempt in range(1, _TRIES + 1):
                session = await self._gateway.call(
                    target.client.get_session, session_id
                )
                found = {f.name: f for f in session.files or []}.get(path.name)
                if (
                    found is not None
                    and found.size == size
                    and (found.hash is None or found.hash == HASH_PREFIX + digest)
                ):
                    return
                if attempt == _TRIES:
                    break
                crash_point("flywheel.before_upload")
                await self._gateway.call(
                    target.client.upload_file_to_container,
                    session_id,
                    str(path),
                    metadata={"name": path.name, "type": "json"},
                )
                crash_point("flywheel.after_upload")
            raise TransientError(f"receipt {path.name} is not verified on Flywheel")

    async def _verify(self, study: StudyRecord) -> None:
        target = await self._target(study)
        items = await self._store.upload_items(study.id, study.cycle)
        acquisitions = {
            s.id: s.fw_acquisition_id for s in await self._store.series_of(study.id)
        }

        wrong: list[tuple[UploadItem, str]] = []
        for acquisition_id in sorted({a for a in acquisitions.values() if a}):
            remote = await self._files_of(target, acquisition_id)
            for item in items:
                if acquisitions.get(item.series_id or "") != acquisition_id:
                    continue
                name = self._name_of(item)
                found = remote.get(name)
                crash_point("flywheel.before_verify")
                if await self._matches(target, acquisition_id, found, item):
                    await self._store.mark_verified(
                        item.id, getattr(found, "version", None)
                    )
                    crash_point("flywheel.after_verify")
                    metrics.FILES_VERIFIED.inc()
                else:
                    metrics.VERIFY_MISMATCHES.inc()
                    wrong.append((item, acquisition_id))

        if wrong:
            await self._resend(target, wrong)
        await self._store.move(
            study.id,
            StudyState.VERIFIED,
            f"all {len(items)} file(s) verified on Flywheel (name, size, sha384)",
        )

    async def _matches(
        self, target: Target, acquisition_id: str, found: Any, item: UploadItem
    ) -> bool:
        if found is None or found.size != item.size:
            return False
        if found.hash:
            return bool(found.hash == HASH_PREFIX + item.sha384)

        # No hash from Flywheel: fetch the file and hash it ourselves.
        with tempfile.TemporaryDirectory(dir=self._root / TEMPORARY_FOLDER) as folder:
            copy = Path(folder) / "download"
            await self._gateway.call(
                target.client.download_file_from_acquisition,
                acquisition_id,
                found.name,
                str(copy),
            )
            digest = await asyncio.to_thread(file_digest, copy, "sha384")

        return digest == item.sha384

    async def _resend(
        self, target: Target, wrong: list[tuple[UploadItem, str]]
    ) -> None:
        limit = self._settings.flywheel.max_attempts
        exhausted = [item for item, _ in wrong if item.upload_attempts >= limit]
        if exhausted:
            names = ", ".join(self._name_of(i) for i in exhausted)
            raise PermanentError(
                f"verification failed after {limit} upload(s): {names} is missing "
                "on Flywheel or differs from the staged copy"
            )
        for item, acquisition_id in wrong:
            await self._send(target, acquisition_id, item, self._name_of(item))
        names = ", ".join(self._name_of(i) for i, _ in wrong)
        raise TransientError(f"not verified, uploaded again: {names}")


def _note_failure(call: str, attempt: int, error: Exception) -> None:
    # Handled within the step (looked up, tried again), so no step error
    # counts it; this keeps it visible.
    metrics.FLYWHEEL_FAILED_CALLS.labels(call).inc()
    log.warning(f"flywheel.{call}_failed", attempt=attempt, problem=str(error))


async def _pause(attempt: int) -> None:
    await asyncio.sleep(backoff_delay(attempt, base=0.5, cap=5.0))


def _same(remote: Any, item: UploadItem) -> bool:
    if remote is None or remote.size != item.size:
        return False
    return remote.hash is None or bool(remote.hash == HASH_PREFIX + item.sha384)


def _distinct_labels(series: list[SeriesRecord]) -> list[str]:
    """Acquisition labels, made distinct where two series share one."""
    counts: dict[str, int] = defaultdict(int)
    ordered = sorted(
        series, key=lambda s: (s.acquisition_label, s.series_instance_uid or s.id)
    )
    labels: dict[str, str] = {}
    for record in ordered:
        counts[record.acquisition_label] += 1
        n = counts[record.acquisition_label]
        labels[record.id] = (
            record.acquisition_label if n == 1 else f"{record.acquisition_label} ({n})"
        )

    return [labels[s.id] for s in series]


def _zip_name(label: str, cycle: int) -> str:
    return f"{label}.dicom.zip" if cycle == 1 else f"{label}_{cycle}.dicom.zip"


def _timestamp(session_label: str | None) -> str | None:
    try:
        return datetime.strptime(session_label or "", "%Y-%m-%d_%H_%M_%S").isoformat()
    except ValueError:
        return None
