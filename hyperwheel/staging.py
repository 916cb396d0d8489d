"""The staging export: a readable, durable copy of every Orthanc instance.

Layout: ``<root>/<study>/<subject>/<session>/<acquisition>/<SOPInstanceUID>.dcm``
with labels from :mod:`hyperwheel.labels`. A file is downloaded to a private
temporary folder inside the root, hashed on the way, fsynced, and only then
renamed into place; the store learns of it last, so whatever it lists is on
disk. An instance already staged in its study's current cycle is skipped.
"""

import asyncio
import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
import structlog

from hyperwheel import dicomtime, labels, metrics
from hyperwheel.backoff import backoff_delay
from hyperwheel.crashpoints import crash_point
from hyperwheel.dicomfile import InstanceTags, read_tags
from hyperwheel.disk_guard import DiskGuard
from hyperwheel.errors import NotFound
from hyperwheel.fsync import fsync_folders, make_folders
from hyperwheel.orthanc import OrthancClient, resource_id
from hyperwheel.store import SeriesRecord, StagedFile, StateStore
from hyperwheel.study import StudyState

log = structlog.get_logger(__name__)

TEMPORARY_FOLDER = ".hyperwheel-tmp"
_CHUNK = 1 << 20
_DOWNLOAD_TRIES = 5


@dataclass(frozen=True)
class StagedPlace:
    """Where an instance goes, as labels and as a path below the root."""

    study: str
    subject: str
    session: str
    acquisition: str
    relative: Path


def place_for(tags: InstanceTags, instance_id: str) -> StagedPlace:
    """The staging location of an instance, from its own tags."""
    study = labels.sanitize(labels.routing_key(tags.operators_name))
    subject = labels.sanitize(tags.patient_id)
    session = labels.session_label(tags.study_date, tags.study_time)
    acquisition = labels.acquisition_label(tags.series_number, tags.series_description)
    name = labels.sanitize(tags.sop_instance_uid or instance_id) + ".dcm"
    relative = Path(study, subject, session, acquisition, name)

    return StagedPlace(study, subject, session, acquisition, relative)


def inside(root: Path, relative: Path) -> Path:
    """``root / relative``, refusing anything that would leave the root.

    Purely lexical: the labels never hold separators or dot names, and the
    tree below the root is hyperwheel's own, so no symlink is followed.
    """
    candidate = Path(os.path.normpath(root / relative))
    if not candidate.is_relative_to(root) or candidate == root:
        raise ValueError(f"staging path {relative} escapes the staging root")

    return candidate


class Stager:
    """Copies instances from Orthanc into the staging tree, at most 8 at once."""

    def __init__(
        self,
        orthanc: OrthancClient,
        store: StateStore,
        root: Path,
        *,
        guard: DiskGuard | None = None,
        concurrency: int = 8,
    ) -> None:
        self._orthanc = orthanc
        self._store = store
        self.root = root.resolve()
        self._temporary = self.root / TEMPORARY_FOLDER
        self._guard = guard or DiskGuard(self.root, min_free_bytes=0)
        self._slots = asyncio.Semaphore(concurrency)
        self._study_of_series: dict[str, str] = {}
        self._known_series: set[str] = set()
        self._folders_made: set[Path] = set()
        self._study_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def prepare(self) -> None:
        """Create the root and clear half-written downloads of an earlier run."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._temporary.mkdir(exist_ok=True, mode=0o700)
        for leftover in self._temporary.glob("*.part"):
            leftover.unlink()

    async def stage_many(self, instance_ids: list[str]) -> int:
        """Stage every instance concurrently; return how many were written.

        The store learns of the whole batch in one transaction, after the
        files are in place; an instance whose staging failed is left out and
        the first failure is raised once the others are recorded.
        """
        known = await self._store.current_files("dicom", instance_ids)
        results = await asyncio.gather(
            *(self._stage(i, known.get(i)) for i in instance_ids),
            return_exceptions=True,
        )

        staged = [r for r in results if isinstance(r, StagedFile)]
        await self._record(staged)
        for result in results:
            if isinstance(result, BaseException):
                raise result

        return len(staged)

    async def stage(self, instance_id: str) -> bool:
        """Stage one instance unless it is already; True when a file was written.

        An instance Orthanc no longer has is skipped with a log line.
        """
        known = await self._store.current_files("dicom", [instance_id])
        staged = await self._stage(instance_id, known.get(instance_id))
        if staged is None:
            return False
        await self._record([staged])

        return True

    async def _record(self, staged: list[StagedFile]) -> None:
        if not staged:
            return
        await self._store.record_staged(staged)
        crash_point("staging.after_record")
        metrics.INSTANCES_STAGED.inc(len(staged))
        log.debug("staging.recorded", files=len(staged))

    async def _stage(
        self, instance_id: str, known: StagedFile | None
    ) -> StagedFile | None:
        """Put one instance in place; what to record, or None if nothing was done."""
        async with self._slots:
            if known is not None and self._still_on_disk(known):
                return None
            await self._guard.wait_for_space("staging")
            temporary = self._temporary / f"{instance_id}.part"
            try:
                size, digest = await self._download(instance_id, temporary)
                crash_point("staging.after_download")
                # One trip to a worker thread for all the blocking file work.
                tags, place = await asyncio.to_thread(
                    self._settle, instance_id, temporary
                )
                series_id, study_id = await self._parents(instance_id, tags)
            except NotFound:
                log.info("staging.instance_gone", instance=instance_id)
                return None
            finally:
                temporary.unlink(missing_ok=True)

            async with self._study_locks[study_id]:
                cycle = await self._open_cycle(study_id, tags, place)
            await self._remember_series(study_id, series_id, tags, place)

            return StagedFile(
                study_id=study_id,
                cycle=cycle,
                kind="dicom",
                source=instance_id,
                series_id=series_id,
                sop_instance_uid=tags.sop_instance_uid,
                staged_path=str(place.relative),
                size=size,
                sha384=digest,
                acquired_at=_iso(_acquired(tags)),
                content_at=_iso(
                    dicomtime.combine(tags.content_date, tags.content_time)
                ),
            )

    async def make_durable(self, study_id: str, cycle: int) -> None:
        """fsync every folder holding the study's staged files, up to the root."""
        files = await self._store.staged_files(study_id, cycle)
        folders = {(self.root / f.staged_path).parent for f in files}

        await asyncio.to_thread(fsync_folders, self.root, folders)

    def _still_on_disk(self, known: StagedFile) -> bool:
        path = self.root / known.staged_path
        try:
            return path.stat().st_size == known.size
        except FileNotFoundError:
            log.warning("staging.file_missing", instance=known.source, path=str(path))
            return False

    async def _parents(self, instance_id: str, tags: InstanceTags) -> tuple[str, str]:
        """The Orthanc ids of the instance's series and study.

        Computed from the tags when that reproduces the instance's own id,
        which saves two requests per instance; asked of Orthanc otherwise.
        """
        uids = (
            tags.patient_id or "",
            tags.study_instance_uid or "",
            tags.series_instance_uid or "",
        )
        if resource_id(*uids, tags.sop_instance_uid or "") == instance_id:
            return resource_id(*uids), resource_id(*uids[:2])

        instance = await self._orthanc.instance(instance_id)
        series_id = str(instance["ParentSeries"])
        if series_id not in self._study_of_series:
            series = await self._orthanc.series(series_id)
            self._study_of_series[series_id] = str(series["ParentStudy"])

        return series_id, self._study_of_series[series_id]

    async def _download(self, instance_id: str, temporary: Path) -> tuple[int, str]:
        """Stream the file to ``temporary``, hashing it on the way.

        A connection broken mid-body restarts the download from zero, up to
        five times with backoff; the request itself already waits out an
        unreachable Orthanc.
        """
        for attempt in range(1, _DOWNLOAD_TRIES + 1):
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                hasher = hashlib.sha384()
                size = 0
                async with self._orthanc.instance_file(instance_id) as stream:
                    async for chunk in stream.iter_chunked(_CHUNK):
                        hasher.update(chunk)
                        size += os.write(fd, chunk)
                return size, hasher.hexdigest()
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as error:
                if attempt == _DOWNLOAD_TRIES:
                    raise
                log.warning(
                    "staging.download_broken",
                    instance=instance_id,
                    attempt=attempt,
                    problem=str(error),
                )
                await asyncio.sleep(backoff_delay(attempt))
            finally:
                os.close(fd)

        raise AssertionError("unreachable")

    async def _open_cycle(
        self, study_id: str, tags: InstanceTags, place: StagedPlace
    ) -> int:
        """Register a new study, or reopen one that had moved on; its cycle."""
        known = await self._store.state_and_cycle(study_id)
        if known is None:
            await self._store.ensure_study(
                study_id,
                study_instance_uid=tags.study_instance_uid,
                patient_id=tags.patient_id,
                study_label=place.study,
                subject_label=place.subject,
                session_label=place.session,
            )
            log.info("study.first_seen", study=study_id, uid=tags.study_instance_uid)
        elif known[0] is not StudyState.RECEIVING:
            reason = f"instance {tags.sop_instance_uid} arrived in {known[0].name}"
            await self._store.reopen(study_id, reason)
        else:
            return known[1]

        known = await self._store.state_and_cycle(study_id)
        assert known is not None

        return known[1]

    async def _remember_series(
        self, study_id: str, series_id: str, tags: InstanceTags, place: StagedPlace
    ) -> None:
        if series_id in self._known_series:
            return
        started = dicomtime.combine(tags.series_date, tags.series_time)
        await self._store.upsert_series(
            SeriesRecord(
                id=series_id,
                study_id=study_id,
                series_instance_uid=tags.series_instance_uid,
                series_number=tags.series_number,
                description=tags.series_description,
                acquisition_label=place.acquisition,
                route=labels.routing_key(tags.operators_name),
                started_at=_iso(started),
            )
        )
        self._known_series.add(series_id)

        series = await self._store.series_of(study_id)
        route, problem = labels.study_route(s.route for s in series)
        await self._store.update_study(study_id, route=route, route_problem=problem)

    def _settle(
        self, instance_id: str, temporary: Path
    ) -> tuple[InstanceTags, StagedPlace]:
        """fsync the download, read its tags, rename it to its place durably."""
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        crash_point("staging.after_fsync")

        tags = read_tags(temporary)
        place = place_for(tags, instance_id)
        final = inside(self.root, place.relative)
        try:
            self._replace(temporary, final)
        except FileNotFoundError:
            # A folder remembered as made was removed since (a purge).
            self._folders_made.discard(final.parent)
            self._replace(temporary, final)
        crash_point("staging.after_rename")

        return tags, place

    def _replace(self, temporary: Path, final: Path) -> None:
        if final.parent not in self._folders_made:
            make_folders(self.root, final.parent.relative_to(self.root))
            self._folders_made.add(final.parent)
        temporary.replace(final)


def _acquired(tags: InstanceTags) -> datetime | None:
    return dicomtime.from_datetime(tags.acquisition_datetime) or dicomtime.combine(
        tags.acquisition_date, tags.acquisition_time
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
