"""The journal: one row per transition, written with the state itself."""

from dataclasses import dataclass

import aiosqlite


@dataclass(frozen=True)
class JournalEntry:
    """One recorded transition of one entity."""

    entity: str
    at: str
    from_state: str | None
    to_state: str
    reason: str


def journal_schema(journal_table: str) -> str:
    """The DDL of a journal table; part of the application's first migration."""
    return f"""
        CREATE TABLE {journal_table} (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            entity TEXT NOT NULL,
            at TEXT NOT NULL,
            from_state TEXT,
            to_state TEXT NOT NULL,
            reason TEXT NOT NULL
        );
        CREATE INDEX {journal_table}_entity ON {journal_table}(entity, seq);
    """


async def read_journal(
    db: aiosqlite.Connection, journal_table: str, entity: str
) -> list[JournalEntry]:
    """Every transition of ``entity``, oldest first."""
    cursor = await db.execute(
        f"SELECT entity, at, from_state, to_state, reason FROM {journal_table} "  # noqa: S608 - table name comes from code, values are bound
        "WHERE entity = ? ORDER BY seq",
        (entity,),
    )
    rows = await cursor.fetchall()

    return [JournalEntry(*row) for row in rows]
