"""Opening the SQLite store: durable settings, schema versions, migrations."""

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from statemachine._errors import StateMachineError


@dataclass(frozen=True)
class Migration:
    """One step of the schema; ``version`` counts from 1 without gaps."""

    version: int
    description: str
    sql: str


class SchemaTooNew(StateMachineError):
    """The database was written by a newer program than this one."""

    def __init__(self, path: Path, found: int, known: int) -> None:
        super().__init__(
            f"{path}: database schema version {found} is newer than this program "
            f"understands (up to {known}); upgrade the program, the data is untouched"
        )
        self.path = path
        self.found = found
        self.known = known


class Database:
    """One connection plus a lock, so transactions never interleave.

    A single connection is shared by every task of the process; SQLite itself
    serialises writers between processes (the CLI and the service), with a busy
    timeout so a short write by one never fails the other.
    """

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self.connection = connection
        self.path = path
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; any exception rolls everything back."""
        async with self._lock:
            await self.connection.execute("BEGIN IMMEDIATE")
            try:
                yield self.connection
            except BaseException:
                await self.connection.rollback()
                raise
            await self.connection.commit()

    async def read(
        self, sql: str, parameters: Sequence[object] = ()
    ) -> list[tuple[Any, ...]]:
        """Rows of one query, outside any write transaction."""
        async with self._lock:
            cursor = await self.connection.execute(sql, parameters)
            rows = await cursor.fetchall()

        return [tuple(row) for row in rows]

    async def write(self, sql: str, parameters: Sequence[object] = ()) -> int:
        """One statement in its own transaction (SQLite's autocommit); rowcount.

        Cheaper than :meth:`transaction` for a single insert or update, and
        just as atomic and durable.
        """
        async with self._lock:
            cursor = await self.connection.execute(sql, parameters)

        return int(cursor.rowcount)

    async def close(self) -> None:
        await self.connection.close()


async def schema_version(connection: aiosqlite.Connection) -> int:
    cursor = await connection.execute("PRAGMA user_version")
    row = await cursor.fetchone()

    return int(row[0]) if row else 0


async def open_database(path: Path, migrations: Sequence[Migration]) -> Database:
    """Open (creating if needed) and migrate the database at ``path``.

    WAL keeps readers (``hyperwheel status``) from blocking the service, and
    ``synchronous=FULL`` makes every commit survive a power cut, which WAL's
    usual ``NORMAL`` does not.

    Raises :class:`SchemaTooNew` for a database from a newer program; an older
    one is migrated forward, each step in its own transaction.
    """
    _check_migrations(migrations)
    connection = await aiosqlite.connect(path, isolation_level=None, timeout=30)
    try:
        await connection.execute("PRAGMA busy_timeout=30000")
        # Refuse before anything writes: even switching to WAL alters the file.
        found = await schema_version(connection)
        known = len(migrations)
        if found > known:
            raise SchemaTooNew(path, found, known)

        await connection.execute("PRAGMA journal_mode=WAL")
        await connection.execute("PRAGMA synchronous=FULL")
        await connection.execute("PRAGMA foreign_keys=ON")

        for migration in migrations[found:]:
            await _apply(connection, migration)
    except BaseException:
        await connection.close()
        raise

    return Database(connection, path)


async def _apply(connection: aiosqlite.Connection, migration: Migration) -> None:
    # One script so the schema change and the version bump commit together.
    script = (
        "BEGIN IMMEDIATE;\n"
        f"{migration.sql}\n;"
        f"PRAGMA user_version = {int(migration.version)};\n"
        "COMMIT;"
    )
    try:
        await connection.executescript(script)
    except BaseException:
        if connection.in_transaction:
            await connection.rollback()
        raise


def _check_migrations(migrations: Sequence[Migration]) -> None:
    for position, migration in enumerate(migrations, start=1):
        if migration.version != position:
            raise ValueError(
                f"migration {migration.description!r} has version "
                f"{migration.version}, expected {position}"
            )
