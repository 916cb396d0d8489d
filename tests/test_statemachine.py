"""The generic state machine: table, transitions, persistence, migrations."""

import itertools
import sqlite3
import subprocess
import sys
import textwrap
from enum import Enum
from pathlib import Path

import pytest

from statemachine import (
    InvalidTransition,
    Migration,
    SchemaTooNew,
    TransitionTable,
    UnknownEntity,
    current_state,
    journal_schema,
    open_database,
    read_journal,
    schema_version,
    transition,
)


class Door(Enum):
    OPEN = "OPEN"
    CLOSED = "CLOSED"
    LOCKED = "LOCKED"


DOOR = TransitionTable.from_mapping(
    Door,
    {
        Door.OPEN: {Door.CLOSED},
        Door.CLOSED: {Door.OPEN, Door.LOCKED},
        Door.LOCKED: {Door.CLOSED},
    },
)

MIGRATIONS = [
    Migration(
        1,
        "doors",
        "CREATE TABLE doors (id TEXT PRIMARY KEY, state TEXT NOT NULL, "
        "updated_at TEXT NOT NULL);" + journal_schema("door_journal"),
    ),
]


async def door_db(path: Path, migrations: list[Migration] = MIGRATIONS):  # type: ignore[no-untyped-def]
    db = await open_database(path, migrations)
    async with db.transaction() as connection:
        await connection.execute(
            "INSERT OR IGNORE INTO doors VALUES ('front', 'OPEN', 'then')"
        )
    return db


async def move(db, to: Door, reason: str = "test", also=None) -> Door:  # type: ignore[no-untyped-def]
    return await transition(
        db,
        DOOR,
        state_table="doors",
        journal_table="door_journal",
        entity="front",
        to_state=to,
        reason=reason,
        also=also,
    )


ALL_PAIRS = list(itertools.product(Door, Door))


async def force(db, state: Door) -> None:  # type: ignore[no-untyped-def]
    async with db.transaction() as connection:
        await connection.execute(
            "UPDATE doors SET state = ? WHERE id = 'front'", (state.name,)
        )


@pytest.mark.parametrize(("source", "target"), ALL_PAIRS)
async def test_every_pair_is_allowed_or_refused_as_the_table_says(
    tmp_path: Path, source: Door, target: Door
) -> None:
    """Each cell of the table: allowed moves persist, forbidden ones raise."""
    db = await door_db(tmp_path / "s.db")
    await force(db, source)

    if DOOR.allows(source, target):
        assert await move(db, target) is source
        assert await current_state(db, DOOR, "doors", "front") is target
    else:
        with pytest.raises(InvalidTransition):
            await move(db, target)
        assert await current_state(db, DOOR, "doors", "front") is source
    await db.close()


async def test_transition_writes_a_journal_row_with_its_reason(tmp_path: Path) -> None:
    """The journal records from, to and why, in order."""
    db = await door_db(tmp_path / "s.db")
    await move(db, Door.CLOSED, "wind")
    await move(db, Door.LOCKED, "night")

    async with db.transaction() as connection:
        journal = await read_journal(connection, "door_journal", "front")
    assert [(e.from_state, e.to_state, e.reason) for e in journal] == [
        ("OPEN", "CLOSED", "wind"),
        ("CLOSED", "LOCKED", "night"),
    ]
    await db.close()


async def test_failing_side_write_rolls_back_state_and_journal(tmp_path: Path) -> None:
    """An error inside the transaction leaves the old state and no journal row."""
    db = await door_db(tmp_path / "s.db")

    async def explode(connection, old):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        await move(db, Door.CLOSED, also=explode)

    assert await current_state(db, DOOR, "doors", "front") is Door.OPEN
    async with db.transaction() as connection:
        assert await read_journal(connection, "door_journal", "front") == []
    await db.close()


def test_process_killed_between_write_and_commit_keeps_old_state(
    tmp_path: Path,
) -> None:
    """os._exit after the UPDATE but before COMMIT: a reopened store shows no change."""
    path = tmp_path / "s.db"
    script = textwrap.dedent(
        f"""
        import asyncio, os
        from tests.test_statemachine import door_db, move, Door

        async def die(connection, old):
            os._exit(9)

        async def main():
            db = await door_db({str(path)!r})
            await move(db, Door.CLOSED, also=die)

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], timeout=60, cwd=Path(__file__).parents[1]
    )
    assert result.returncode == 9

    with sqlite3.connect(path) as db:
        assert db.execute("SELECT state FROM doors").fetchone() == ("OPEN",)
        assert db.execute("SELECT COUNT(*) FROM door_journal").fetchone() == (0,)


async def test_unknown_entity_is_a_named_error(tmp_path: Path) -> None:
    """Moving a row that does not exist raises UnknownEntity."""
    db = await door_db(tmp_path / "s.db")
    with pytest.raises(UnknownEntity):
        await transition(
            db,
            DOOR,
            state_table="doors",
            journal_table="door_journal",
            entity="back",
            to_state=Door.CLOSED,
            reason="x",
        )
    await db.close()


async def test_older_database_is_migrated_forward(tmp_path: Path) -> None:
    """A v1 file opened with v2 migrations gains the v2 schema and keeps its rows."""
    db = await door_db(tmp_path / "s.db")
    await db.close()
    v2 = [*MIGRATIONS, Migration(2, "colour", "ALTER TABLE doors ADD colour TEXT;")]

    db = await open_database(tmp_path / "s.db", v2)
    assert await schema_version(db.connection) == 2
    rows = await db.read("SELECT id, state, colour FROM doors")
    assert rows == [("front", "OPEN", None)]
    await db.close()


async def test_newer_database_is_refused_untouched(tmp_path: Path) -> None:
    """A database from a newer program raises SchemaTooNew and is not modified."""
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 7")
    before = path.read_bytes()

    with pytest.raises(SchemaTooNew, match="newer"):
        await open_database(path, MIGRATIONS)
    assert path.read_bytes() == before


async def test_failed_migration_leaves_previous_version(tmp_path: Path) -> None:
    """A migration that fails half-way is rolled back as a whole."""
    db = await door_db(tmp_path / "s.db")
    await db.close()
    broken = [*MIGRATIONS, Migration(2, "bad", "ALTER TABLE doors ADD a TEXT; NOPE;")]

    with pytest.raises(sqlite3.OperationalError):
        await open_database(tmp_path / "s.db", broken)
    with sqlite3.connect(tmp_path / "s.db") as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (1,)
        columns = [r[1] for r in raw.execute("PRAGMA table_info(doors)")]
    assert "a" not in columns


def test_table_refuses_states_of_another_enum() -> None:
    """Building a table from a foreign enum member fails at once."""

    class Other(Enum):
        X = "X"

    with pytest.raises(TypeError):
        TransitionTable.from_mapping(Door, {Door.OPEN: {Other.X}})  # type: ignore[dict-item]
