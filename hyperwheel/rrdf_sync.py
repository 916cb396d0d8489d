"""STABLE -> RRDF_SYNCED: claim the scanner's raw files by time and pull them.

Steps, each safe to repeat after a crash:

1. list ``<rrdf_root>/rrdf_*/**/*.h5`` on the scanner;
2. compute every unclaimed file's time and let the matching rule pick its
   study among all studies hyperwheel knows; claim (persist) the files this
   study wins, journaling each decision;
3. pull each claimed file to a ``.part`` file, recording the durable offset,
   so a broken link or a power cut resumes from bytes known to be on disk;
4. check the size (and the scanner's sha256 when it offers one), fsync and
   rename the file beside its series, and list it as staged.

Error handling: scanner errors (unreachable, refused key, host key mismatch)
propagate as :class:`~hyperwheel.errors.TransientError`; the pipeline retries
with backoff and holds the study after ``scanner.give_up_after`` seconds.
"""

import asyncio
import hashlib
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from zoneinfo import ZoneInfo

import structlog

from hyperwheel import labels, metrics, progress
from hyperwheel.crashpoints import crash_point
from hyperwheel.disk_guard import DiskGuard
from hyperwheel.errors import PermanentError, TransientError
from hyperwheel.fsync import fsync_folders
from hyperwheel.rrdf_match import (
    StudyWindow,
    build_window,
    choose_series,
    choose_study,
    file_time,
)
from hyperwheel.scanner import RemoteFile, RemoteFileChanged, ScannerClient
from hyperwheel.settings import ScannerSettings
from hyperwheel.staging import TEMPORARY_FOLDER, inside
from hyperwheel.store import RawClaim, StateStore, StudyRecord
from hyperwheel.study import StudyState

log = structlog.get_logger(__name__)


class RawDataSync:
    """The raw-data step of the pipeline, for studies in STABLE."""

    def __init__(
        self,
        store: StateStore,
        staging_root: Path,
        settings: ScannerSettings | None,
        client: ScannerClient | None,
        guard: DiskGuard | None = None,
    ) -> None:
        self._store = store
        self._root = staging_root.resolve()
        self._guard = guard or DiskGuard(self._root, min_free_bytes=0)
        self._settings = settings
        self._client = client
        zone = settings.timezone if settings else None
        self._zone = ZoneInfo(zone) if zone else None

    async def run(self, study: StudyRecord) -> None:
        """Bring the study from STABLE to RRDF_SYNCED, or raise to retry."""
        if self._settings is None or self._client is None:
            await self._store.add_event(
                study.id, "rrdf.skipped", "no [scanner] section: raw data not pulled"
            )
            await self._store.move(
                study.id, StudyState.RRDF_SYNCED, "raw data skipped: no [scanner]"
            )
            return

        remote_files = await self._client.list_rrdf()
        crash_point("rrdf.after_listing")
        await self._claim(study, remote_files)

        claims = [
            c
            for c in (await self._store.raw_claims()).values()
            if c.study_id == study.id and c.cycle == study.cycle
        ]
        by_path = {f.path: f for f in remote_files}
        slots = asyncio.Semaphore(self._settings.concurrency)

        pending = [c for c in claims if c.synced_at is None]
        total = sum(c.size for c in claims)
        done = total - sum(c.size for c in pending)
        with progress.tracking(study.id, "raw data", total, done) as tracker:

            async def pull(claim: RawClaim) -> None:
                async with slots:
                    remote = by_path.get(claim.remote_path)
                    await self._pull(claim, remote, tracker)

            await asyncio.gather(*(pull(c) for c in sorted(pending, key=_by_path)))

        reason = (
            f"{len(claims)} raw file(s) synced"
            if claims
            else "no raw files in the study's time window"
        )
        await self._store.move(study.id, StudyState.RRDF_SYNCED, reason)

    async def _claim(self, study: StudyRecord, remote_files: list[RemoteFile]) -> None:
        assert self._settings is not None
        claimed = await self._store.raw_claims()
        windows = await self._windows()
        mine = next((w for w in windows if w.study_id == study.id), None)
        if mine is None:
            raise PermanentError(
                "no series start or acquisition time in any instance: "
                "raw data cannot be matched"
            )
        folders = await self._acquisition_folders(study)
        tolerance = timedelta(seconds=self._settings.match_tolerance)

        for remote in remote_files:
            if remote.path in claimed:
                continue
            moment, source = file_time(
                PurePosixPath(remote.path).name, remote.mtime, self._zone
            )
            owner = choose_study(moment, windows, tolerance)
            if owner is None or owner.study_id != study.id:
                continue
            series = choose_series(moment, owner)
            folder = folders.get(series.series_id)
            if folder is None:
                continue
            staged_path = folder / raw_file_name(remote)
            inside(self._root, staged_path)
            claim = RawClaim(
                remote_path=remote.path,
                study_id=study.id,
                cycle=study.cycle,
                series_id=series.series_id,
                size=remote.size,
                mtime=remote.mtime,
                file_time=moment.isoformat(),
                time_source=source,
                staged_path=str(staged_path),
            )
            if await self._store.claim_raw(claim):
                await self._store.add_event(
                    study.id,
                    "rrdf.claimed",
                    f"{remote.path} ({source} time {moment.isoformat()}) -> "
                    f"{staged_path.parent.name} (series start "
                    f"{series.start.isoformat()}; window {_window_text(mine)})",
                )
                crash_point("rrdf.after_claim")

    async def _pull(
        self,
        claim: RawClaim,
        remote: RemoteFile | None,
        tracker: progress.StepProgress,
    ) -> None:
        assert self._client is not None
        if remote is None:
            raise TransientError(
                f"claimed raw file {claim.remote_path} is no longer listed on the "
                "scanner; it stays claimed and is looked for again"
            )
        part = self._root / TEMPORARY_FOLDER / _part_name(claim.remote_path)
        if (remote.size, remote.mtime) != (claim.size, claim.mtime):
            claim = await self._restart(claim, remote, part)
        resume_from = claim.durable_offset if part.exists() else 0
        reported = resume_from

        async def durable(offset: int) -> None:
            nonlocal reported
            await self._store.set_durable_offset(claim.remote_path, offset)
            crash_point("rrdf.after_durable_offset")
            metrics.RAW_BYTES_PULLED.inc(offset - reported)
            tracker.add(offset - reported)
            reported = offset

        await self._guard.wait_for_space("raw data")
        # The scanner hashes its copy while we pull ours: its CPU, not our wait.
        scanner_digest = asyncio.create_task(self._client.remote_sha256(remote))
        try:
            result = await self._client.pull(
                remote, part, resume_from=resume_from, on_durable=durable
            )
        except RemoteFileChanged:
            scanner_digest.cancel()
            await self._restart(claim, remote, part)
            raise
        except BaseException:
            scanner_digest.cancel()
            raise
        crash_point("rrdf.after_pull")
        if result.size != claim.size:
            scanner_digest.cancel()
            part.unlink(missing_ok=True)
            raise TransientError(
                f"{claim.remote_path}: pulled {result.size} bytes, expected "
                f"{claim.size}; pulling again"
            )
        await self._check_remote_digest(
            remote, part, result.sha256, await scanner_digest
        )

        final = inside(self._root, Path(claim.staged_path))
        await asyncio.to_thread(_move_into_place, self._root, part, final)
        crash_point("rrdf.after_rename")
        await self._store.finish_raw(claim, result.sha384)
        log.info(
            "rrdf.file_synced",
            study=claim.study_id,
            remote=claim.remote_path,
            path=claim.staged_path,
            size=result.size,
        )

    async def _restart(
        self, claim: RawClaim, remote: RemoteFile, part: Path
    ) -> RawClaim:
        """The file changed on the scanner (still being written?): pull anew."""
        await asyncio.to_thread(part.unlink, missing_ok=True)
        await self._store.restart_claim(claim.remote_path, remote.size, remote.mtime)
        await self._store.add_event(
            claim.study_id,
            "rrdf.restarted",
            f"{claim.remote_path} changed on the scanner; pulling it from the start",
        )

        return replace(claim, size=remote.size, mtime=remote.mtime, durable_offset=0)

    async def _check_remote_digest(
        self, remote: RemoteFile, part: Path, actual: str, expected: str | None
    ) -> None:
        if expected is None:
            return
        if actual != expected:
            await asyncio.to_thread(part.unlink, missing_ok=True)
            raise TransientError(
                f"{remote.path}: sha256 differs from the scanner's; pulling again"
            )

    async def _windows(self) -> list[StudyWindow]:
        """Every known study's window: the competition for each raw file."""
        series_by_study: dict[str, dict[str, datetime | None]] = {}
        for series in await self._store.all_series():
            start = (
                datetime.fromisoformat(series.started_at) if series.started_at else None
            )
            series_by_study.setdefault(series.study_id, {})[series.id] = start

        acquired: dict[str, list[tuple[str, datetime | None, datetime | None]]] = {}
        for (
            study_id,
            series_id,
            acquired_at,
            content_at,
        ) in await self._store.instance_times():
            acquired.setdefault(study_id, []).append(
                (series_id, _parse(acquired_at), _parse(content_at))
            )

        windows = []
        for study_id, starts in series_by_study.items():
            window = build_window(study_id, starts, acquired.get(study_id, []))
            if window is not None:
                windows.append(window)

        return windows

    async def _acquisition_folders(self, study: StudyRecord) -> dict[str, Path]:
        """Series id -> the staging folder of its DICOM files."""
        folders: dict[str, Path] = {}
        for staged in await self._store.staged_files(study.id, study.cycle):
            if staged.kind == "dicom" and staged.series_id is not None:
                folders.setdefault(staged.series_id, Path(staged.staged_path).parent)

        return folders


def raw_file_name(remote: RemoteFile) -> str:
    """``<rrdf folder>__<path below it, / -> __>``, made safe as one name."""
    name = remote.folder + "__" + remote.relative.replace("/", "__")

    return labels.sanitize_file_name(name)


def _by_path(claim: RawClaim) -> str:
    return claim.remote_path


def _move_into_place(root: Path, part: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    part.replace(final)
    fsync_folders(root, {final.parent})


def _part_name(remote_path: str) -> str:
    digest = hashlib.sha1(remote_path.encode(), usedforsecurity=False).hexdigest()

    return f"raw-{digest}.part"


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _window_text(window: StudyWindow) -> str:
    return f"{window.start.isoformat()} .. {window.end.isoformat()}"
