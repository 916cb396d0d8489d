"""The state store: studies, their series and files, and every transition.

All study state changes go through :meth:`StateStore.move`, which delegates
to the generic :func:`statemachine.transition` so the check, the new state,
the journal row and any side columns commit together.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from hyperwheel.crashpoints import crash_point
from hyperwheel.schema import JOURNAL_TABLE, MIGRATIONS, STUDY_TABLE
from hyperwheel.study import STUDY_TRANSITIONS, StudyState
from statemachine import (
    Database,
    JournalEntry,
    open_database,
    read_journal,
    transition,
    utc_now,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class StudyRecord:
    id: str
    study_instance_uid: str | None
    state: StudyState
    created_at: str
    updated_at: str
    cycle: int
    route: str | None
    route_problem: str | None
    patient_id: str | None
    study_label: str | None
    subject_label: str | None
    session_label: str | None
    attempts: int
    next_try_at: str | None
    last_error: str | None
    held_reason: str | None
    held_from: StudyState | None
    failing_since: str | None
    fw_project_id: str | None
    fw_subject_id: str | None
    fw_session_id: str | None
    file_count: int = 0
    byte_count: int = 0


@dataclass(frozen=True)
class StagedFile:
    """One file hyperwheel wrote under the staging root."""

    study_id: str
    cycle: int
    kind: str
    source: str
    series_id: str | None
    sop_instance_uid: str | None
    staged_path: str
    size: int
    sha384: str
    acquired_at: str | None
    content_at: str | None


@dataclass(frozen=True)
class SeriesRecord:
    id: str
    study_id: str
    series_instance_uid: str | None
    series_number: str | None
    description: str | None
    acquisition_label: str
    route: str | None
    started_at: str | None
    fw_acquisition_id: str | None = None
    fw_acquisition_label: str | None = None


@dataclass(frozen=True)
class RawClaim:
    """A scanner raw file given to one study, and how far its pull got."""

    remote_path: str
    study_id: str
    cycle: int
    series_id: str
    size: int
    mtime: float
    file_time: str
    time_source: str
    staged_path: str
    durable_offset: int = 0
    sha384: str | None = None
    claimed_at: str | None = None
    synced_at: str | None = None


@dataclass(frozen=True)
class UploadItem:
    """A file that goes to Flywheel: a series' zip or a raw file."""

    id: int
    kind: str
    series_id: str | None
    staged_path: str
    size: int
    sha384: str
    flywheel_name: str | None
    uploaded_at: str | None
    verified_at: str | None
    upload_attempts: int
    flywheel_version: int | None = None


@dataclass(frozen=True)
class StudyEvent:
    at: str
    event: str
    detail: str


SideWrite = Callable[[aiosqlite.Connection, StudyState], Awaitable[None]]

_STUDY_COLUMNS = ", ".join(
    f"s.{f.name}"
    for f in fields(StudyRecord)
    if f.name not in ("file_count", "byte_count")
)


class StateStore:
    """Typed access to the SQLite state; one instance per process."""

    def __init__(self, database: Database) -> None:
        self._db = database
        # Cycle of studies known to be RECEIVING, asked for once per instance.
        # Only this process moves a study out of RECEIVING (the CLI releases
        # HELD studies only), and every move here drops the entry.
        self._receiving: dict[str, int] = {}

    @classmethod
    async def open(cls, path: Path) -> "StateStore":
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        database = await open_database(path, MIGRATIONS)

        return cls(database)

    async def close(self) -> None:
        await self._db.close()

    # Studies

    async def ping(self) -> None:
        """Raise unless the database answers a query."""
        await self._db.read("SELECT 1")

    async def studies(self, *states: StudyState) -> list[StudyRecord]:
        """Every study, or those in ``states``."""
        if not states:
            return await self._select_studies("", ())
        marks = ", ".join("?" for _ in states)

        return await self._select_studies(
            f"WHERE s.state IN ({marks})", tuple(s.name for s in states)
        )

    async def study(self, key: str) -> StudyRecord | None:
        """A study by Orthanc id or StudyInstanceUID."""
        found = await self._select_studies(
            "WHERE s.id = ? OR s.study_instance_uid = ?", (key, key)
        )

        return found[0] if found else None

    async def state_and_cycle(self, study_id: str) -> tuple[StudyState, int] | None:
        """Just the state and cycle: cheap enough to ask for every instance."""
        if study_id in self._receiving:
            return StudyState.RECEIVING, self._receiving[study_id]
        rows = await self._db.read(
            f"SELECT state, cycle FROM {STUDY_TABLE} WHERE id = ?",  # noqa: S608 - table name from code
            (study_id,),
        )
        if not rows:
            return None
        state, cycle = StudyState[rows[0][0]], int(rows[0][1])
        if state is StudyState.RECEIVING:
            self._receiving[study_id] = cycle

        return state, cycle

    async def _select_studies(
        self, where: str, parameters: tuple[str, ...]
    ) -> list[StudyRecord]:
        rows = await self._db.read(
            f"SELECT {_STUDY_COLUMNS}, "  # noqa: S608 - clauses from code, values bound
            "(SELECT COUNT(*) FROM files f WHERE f.study_id = s.id"
            "  AND f.cycle = s.cycle), "
            "(SELECT COALESCE(SUM(size), 0) FROM files f WHERE f.study_id = s.id"
            "  AND f.cycle = s.cycle) "
            f"FROM {STUDY_TABLE} s {where} ORDER BY s.created_at, s.id",
            parameters,
        )

        return [_study(row) for row in rows]

    async def ensure_study(self, study_id: str, **columns: Any) -> bool:
        """Insert a RECEIVING study if it is new; return whether it was."""
        now = utc_now()
        names = ["id", "state", "created_at", "updated_at", *columns]
        values = [study_id, StudyState.RECEIVING.name, now, now, *columns.values()]
        placeholders = ", ".join("?" for _ in names)
        async with self._db.transaction() as connection:
            cursor = await connection.execute(
                f"INSERT OR IGNORE INTO {STUDY_TABLE} ({', '.join(names)}) "  # noqa: S608 - names from code
                f"VALUES ({placeholders})",
                values,
            )
            created = cursor.rowcount == 1
            if created:
                await connection.execute(
                    f"INSERT INTO {JOURNAL_TABLE} "  # noqa: S608 - table name from code
                    "(entity, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?)",
                    (study_id, now, None, StudyState.RECEIVING.name, "first seen"),
                )

        return created

    async def update_study(self, study_id: str, **columns: Any) -> None:
        """Set facts that are not the state itself (labels, route, attempts)."""
        self._receiving.pop(study_id, None)
        assignments = ", ".join(f"{name} = ?" for name in columns)
        await self._db.write(
            f"UPDATE {STUDY_TABLE} SET {assignments} WHERE id = ?",  # noqa: S608 - names from code
            (*columns.values(), study_id),
        )

    async def move(
        self,
        study_id: str,
        to_state: StudyState,
        reason: str,
        also: SideWrite | None = None,
    ) -> StudyState:
        """Persist a transition; crash points sit on both sides of the commit."""
        point = f"transition.{to_state.name.lower()}"
        self._receiving.pop(study_id, None)

        async def side_write(connection: aiosqlite.Connection, old: StudyState) -> None:
            if also is not None:
                await also(connection, old)
            crash_point(f"{point}.before_commit")

        async def reset_and_write(
            connection: aiosqlite.Connection, old: StudyState
        ) -> None:
            # A new state is a new step: its failures count from zero.
            await connection.execute(
                f"UPDATE {STUDY_TABLE} SET attempts = 0, next_try_at = NULL, "  # noqa: S608 - table name from code
                "last_error = NULL, failing_since = NULL WHERE id = ?",
                (study_id,),
            )
            await side_write(connection, old)

        old = await transition(
            self._db,
            STUDY_TRANSITIONS,
            state_table=STUDY_TABLE,
            journal_table=JOURNAL_TABLE,
            entity=study_id,
            to_state=to_state,
            reason=reason,
            also=reset_and_write,
        )
        crash_point(f"{point}.after_commit")
        log.info(
            "study.transition",
            study=study_id,
            from_state=old.name,
            to_state=to_state.name,
            reason=reason,
        )

        return old

    async def hold(
        self, study_id: str, reason: str, recheck_at: str | None = None
    ) -> None:
        """Park a study for a person; remember where it was held.

        With ``recheck_at`` the pipeline releases it by itself at that time.
        """

        async def remember(connection: aiosqlite.Connection, old: StudyState) -> None:
            await connection.execute(
                f"UPDATE {STUDY_TABLE} SET held_reason = ?, held_from = ?, "  # noqa: S608 - table name from code
                "next_try_at = ? WHERE id = ?",
                (reason, old.name, recheck_at, study_id),
            )

        await self.move(study_id, StudyState.HELD, reason, also=remember)

    async def release(
        self,
        study_id: str,
        skip_rrdf: bool = False,
        reason: str = "released by retry",
    ) -> StudyState:
        """Send a held study back to the state it was held in.

        With ``skip_rrdf`` a study held while pulling raw data moves on to
        RRDF_SYNCED without it. Attempts start again from zero.
        """
        record = await self.study(study_id)
        if record is None or record.state is not StudyState.HELD:
            raise ValueError(f"study {study_id} is not held")
        target = record.held_from or StudyState.RECEIVING
        if skip_rrdf and target is StudyState.STABLE:
            target = StudyState.RRDF_SYNCED
            reason = "released by retry --skip-rrdf: raw data skipped"

        await self.move(record.id, target, reason, also=_clear_hold(record.id))

        return target

    async def reopen(self, study_id: str, reason: str) -> StudyState | None:
        """A late instance arrived: walk the study again from RECEIVING.

        A purged study starts a new cycle; a held one stays held, but will
        start over from RECEIVING once released. Returns the new state, or
        None when nothing had to change.
        """
        record = await self.study(study_id)
        if record is None or record.state is StudyState.RECEIVING:
            return None
        if record.state is StudyState.HELD:
            await self.update_study(study_id, held_from=StudyState.RECEIVING.name)
            log.info("study.held_reopened", study=study_id, reason=reason)
            return None
        if record.state is StudyState.PURGED:
            await self.move(
                study_id, StudyState.RECEIVING, reason, also=_new_cycle(study_id)
            )
            return StudyState.RECEIVING

        await self.move(study_id, StudyState.RECEIVING, reason)

        return StudyState.RECEIVING

    async def history(self, study_id: str) -> list[JournalEntry]:
        async with self._db.transaction() as connection:
            return await read_journal(connection, JOURNAL_TABLE, study_id)

    # Series and files

    async def upsert_series(self, series: SeriesRecord) -> None:
        """Insert or refresh a series' DICOM facts; Flywheel ids are kept."""
        names = [f.name for f in fields(SeriesRecord) if not f.name.startswith("fw_")]
        updates = ", ".join(f"{n} = excluded.{n}" for n in names if n != "id")
        await self._db.write(
            f"INSERT INTO series ({', '.join(names)}) "  # noqa: S608 - names from code
            f"VALUES ({', '.join('?' for _ in names)}) "
            f"ON CONFLICT(id) DO UPDATE SET {updates}",
            [getattr(series, n) for n in names],
        )

    async def set_acquisition(self, series_id: str, fw_id: str, label: str) -> None:
        await self._db.write(
            "UPDATE series SET fw_acquisition_id = ?, fw_acquisition_label = ? "
            "WHERE id = ?",
            (fw_id, label, series_id),
        )

    async def series_of(self, study_id: str) -> list[SeriesRecord]:
        names = ", ".join(f.name for f in fields(SeriesRecord))
        rows = await self._db.read(
            f"SELECT {names} FROM series WHERE study_id = ? ORDER BY id",  # noqa: S608 - names from code
            (study_id,),
        )

        return [SeriesRecord(*row) for row in rows]

    async def record_staged(self, staged: list[StagedFile]) -> None:
        """List files as staged, all in one transaction."""
        names = [f.name for f in fields(StagedFile)]
        now = utc_now()
        async with self._db.transaction() as connection:
            await connection.executemany(
                f"INSERT INTO files ({', '.join(names)}, staged_at) "  # noqa: S608 - names from code
                f"VALUES ({', '.join('?' for _ in names)}, ?) "
                "ON CONFLICT(kind, source, cycle) DO UPDATE SET "
                "staged_path = excluded.staged_path, size = excluded.size, "
                "sha384 = excluded.sha384, staged_at = excluded.staged_at",
                [[*(getattr(f, n) for n in names), now] for f in staged],
            )

    async def current_files(
        self, kind: str, sources: list[str]
    ) -> dict[str, StagedFile]:
        """Files staged from ``sources`` in their studies' current cycles."""
        names = ", ".join(f"f.{f.name}" for f in fields(StagedFile))
        found: dict[str, StagedFile] = {}
        # SQLite caps bound parameters; 500 stays far below every build's limit.
        for start in range(0, len(sources), 500):
            chunk = sources[start : start + 500]
            rows = await self._db.read(
                f"SELECT {names} FROM files f JOIN {STUDY_TABLE} s "  # noqa: S608 - names from code
                "ON s.id = f.study_id WHERE f.kind = ? AND f.cycle = s.cycle "
                "AND f.purged_at IS NULL "
                f"AND f.source IN ({', '.join('?' for _ in chunk)})",
                (kind, *chunk),
            )
            for row in rows:
                staged = StagedFile(*row)
                found[staged.source] = staged

        return found

    async def staged_files(self, study_id: str, cycle: int) -> list[StagedFile]:
        names = ", ".join(f.name for f in fields(StagedFile))
        rows = await self._db.read(
            f"SELECT {names} FROM files "  # noqa: S608 - names from code
            "WHERE study_id = ? AND cycle = ? ORDER BY staged_path",
            (study_id, cycle),
        )

        return [StagedFile(*row) for row in rows]

    # Raw data

    async def raw_claims(self) -> dict[str, RawClaim]:
        """Every claim ever made, by remote path."""
        names = ", ".join(f.name for f in fields(RawClaim))
        rows = await self._db.read(f"SELECT {names} FROM raw_claims")  # noqa: S608 - names from code

        return {row[0]: RawClaim(*row) for row in rows}

    async def claim_raw(self, claim: RawClaim) -> bool:
        """Persist the claim unless the file is already claimed; True if new."""
        names = [f.name for f in fields(RawClaim) if f.name != "claimed_at"]
        inserted = await self._db.write(
            f"INSERT OR IGNORE INTO raw_claims ({', '.join(names)}, claimed_at) "  # noqa: S608 - names from code
            f"VALUES ({', '.join('?' for _ in names)}, ?)",
            [*(getattr(claim, n) for n in names), utc_now()],
        )

        return inserted == 1

    async def set_durable_offset(self, remote_path: str, offset: int) -> None:
        await self._db.write(
            "UPDATE raw_claims SET durable_offset = ? WHERE remote_path = ?",
            (offset, remote_path),
        )

    async def restart_claim(self, remote_path: str, size: int, mtime: float) -> None:
        """The scanner's file changed under a pull: start it again from zero."""
        await self._db.write(
            "UPDATE raw_claims SET size = ?, mtime = ?, durable_offset = 0, "
            "sha384 = NULL, synced_at = NULL WHERE remote_path = ?",
            (size, mtime, remote_path),
        )

    async def finish_raw(self, claim: RawClaim, sha384: str) -> None:
        """Mark the pull done and list the file as staged, in one transaction."""
        now = utc_now()
        async with self._db.transaction() as connection:
            await connection.execute(
                "UPDATE raw_claims SET sha384 = ?, synced_at = ?, "
                "durable_offset = size WHERE remote_path = ?",
                (sha384, now, claim.remote_path),
            )
            await connection.execute(
                "INSERT INTO files (study_id, cycle, kind, source, series_id, "
                "staged_path, size, sha384, acquired_at, staged_at) "
                "VALUES (?, ?, 'raw', ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(kind, source, cycle) DO UPDATE SET "
                "sha384 = excluded.sha384, staged_at = excluded.staged_at",
                (
                    claim.study_id,
                    claim.cycle,
                    claim.remote_path,
                    claim.series_id,
                    claim.staged_path,
                    claim.size,
                    sha384,
                    claim.file_time,
                    now,
                ),
            )

    async def instance_times(self) -> list[tuple[str, str, str | None, str | None]]:
        """(study, series, acquired_at, content_at) of every DICOM file known."""
        rows = await self._db.read(
            "SELECT study_id, series_id, acquired_at, content_at FROM files "
            "WHERE kind = 'dicom'"
        )

        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def all_series(self) -> list[SeriesRecord]:
        names = ", ".join(f.name for f in fields(SeriesRecord))
        rows = await self._db.read(f"SELECT {names} FROM series ORDER BY id")  # noqa: S608 - names from code

        return [SeriesRecord(*row) for row in rows]

    # Uploads

    async def record_zip(
        self,
        study_id: str,
        cycle: int,
        series_id: str,
        staged_path: str,
        size: int,
        sha384: str,
        name: str,
    ) -> None:
        """The series' archive as built now; a changed archive must upload again."""
        await self._db.write(
            "INSERT INTO files (study_id, cycle, kind, source, series_id, "
            "staged_path, size, sha384, staged_at, flywheel_name) "
            "VALUES (?, ?, 'zip', ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(kind, source, cycle) DO UPDATE SET "
            "staged_path = excluded.staged_path, size = excluded.size, "
            "sha384 = excluded.sha384, staged_at = excluded.staged_at, "
            "flywheel_name = excluded.flywheel_name, "
            "uploaded_at = CASE WHEN files.sha384 = excluded.sha384 "
            "  THEN files.uploaded_at END, "
            "verified_at = CASE WHEN files.sha384 = excluded.sha384 "
            "  THEN files.verified_at END",
            (
                study_id,
                cycle,
                f"{study_id}/{series_id}",
                series_id,
                staged_path,
                size,
                sha384,
                utc_now(),
                name,
            ),
        )

    async def upload_items(self, study_id: str, cycle: int) -> list[UploadItem]:
        names = ", ".join(f.name for f in fields(UploadItem))
        rows = await self._db.read(
            f"SELECT {names} FROM files WHERE study_id = ? AND cycle = ? "  # noqa: S608 - names from code
            "AND kind IN ('zip', 'raw') ORDER BY staged_path",
            (study_id, cycle),
        )

        return [UploadItem(*row) for row in rows]

    async def mark_uploaded(self, file_id: int, name: str) -> None:
        await self._db.write(
            "UPDATE files SET uploaded_at = ?, flywheel_name = ?, "
            "upload_attempts = upload_attempts + 1 WHERE id = ?",
            (utc_now(), name, file_id),
        )

    async def mark_present(self, file_id: int, name: str) -> None:
        """Already on Flywheel with the same name, size and hash: not sent."""
        await self._db.write(
            "UPDATE files SET uploaded_at = COALESCE(uploaded_at, ?), "
            "flywheel_name = ? WHERE id = ?",
            (utc_now(), name, file_id),
        )

    async def mark_verified(self, file_id: int, version: int | None) -> None:
        await self._db.write(
            "UPDATE files SET verified_at = ?, flywheel_version = ? WHERE id = ?",
            (utc_now(), version, file_id),
        )

    async def mark_purged(self, study_id: str, cycle: int) -> None:
        await self._db.write(
            "UPDATE files SET purged_at = ? WHERE study_id = ? AND cycle = ? "
            "AND purged_at IS NULL",
            (utc_now(), study_id, cycle),
        )

    # Events and failures

    async def add_event(self, study_id: str, event: str, detail: str) -> None:
        await self._db.write(
            "INSERT INTO study_events (study_id, at, event, detail) "
            "VALUES (?, ?, ?, ?)",
            (study_id, utc_now(), event, detail),
        )

    async def events(self, study_id: str) -> list[StudyEvent]:
        rows = await self._db.read(
            "SELECT at, event, detail FROM study_events "
            "WHERE study_id = ? ORDER BY seq",
            (study_id,),
        )

        return [StudyEvent(*row) for row in rows]

    async def note_failure(self, study_id: str, problem: str, next_try_at: str) -> None:
        """Count a failed attempt; the first failure starts the give-up clock."""
        await self._db.write(
            f"UPDATE {STUDY_TABLE} SET attempts = attempts + 1, last_error = ?, "  # noqa: S608 - table name from code
            "next_try_at = ?, failing_since = COALESCE(failing_since, ?) "
            "WHERE id = ?",
            (problem, next_try_at, utc_now(), study_id),
        )

    # Small facts

    async def get_meta(self, key: str) -> str | None:
        rows = await self._db.read("SELECT value FROM meta WHERE key = ?", (key,))

        return rows[0][0] if rows else None

    async def set_meta(self, key: str, value: str) -> None:
        await self._db.write(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def _study(row: tuple[Any, ...]) -> StudyRecord:
    values = dict(zip((f.name for f in fields(StudyRecord)), row, strict=True))
    values["state"] = StudyState[values["state"]]
    if values["held_from"] is not None:
        values["held_from"] = StudyState[values["held_from"]]

    return StudyRecord(**values)


def _clear_hold(study_id: str) -> SideWrite:
    async def clear(connection: aiosqlite.Connection, _old: StudyState) -> None:
        await connection.execute(
            f"UPDATE {STUDY_TABLE} SET held_reason = NULL, held_from = NULL "  # noqa: S608 - table name from code
            "WHERE id = ?",
            (study_id,),
        )

    return clear


def _new_cycle(study_id: str) -> SideWrite:
    async def bump(connection: aiosqlite.Connection, _old: StudyState) -> None:
        await connection.execute(
            f"UPDATE {STUDY_TABLE} SET cycle = cycle + 1 WHERE id = ?",  # noqa: S608 - table name from code
            (study_id,),
        )

    return bump
