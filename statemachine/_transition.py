"""The one entry point that moves an entity from one state to another."""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import Enum
from typing import TypeVar

import aiosqlite

from statemachine._database import Database
from statemachine._errors import InvalidTransition, UnknownEntity
from statemachine._table import TransitionTable

S = TypeVar("S", bound=Enum)

SideWrite = Callable[[aiosqlite.Connection, S], Awaitable[None]]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def current_state(
    db: Database, table: TransitionTable[S], state_table: str, entity: str
) -> S:
    rows = await db.read(
        f"SELECT state FROM {state_table} WHERE id = ?",  # noqa: S608 - table name from code
        (entity,),
    )
    if not rows:
        raise UnknownEntity(entity)

    return table.states[rows[0][0]]


async def transition(
    db: Database,
    table: TransitionTable[S],
    *,
    state_table: str,
    journal_table: str,
    entity: str,
    to_state: S,
    reason: str,
    also: SideWrite[S] | None = None,
) -> S:
    """Move ``entity`` to ``to_state`` and journal why; return the old state.

    The state row (columns ``id``, ``state``, ``updated_at``), the journal row
    and whatever ``also`` writes commit in one transaction, so after a crash
    either all of them are there or none is. ``also`` receives the connection
    and the state being left. Raises :class:`InvalidTransition` when the table
    forbids the move and :class:`UnknownEntity` when there is no such row.
    """
    async with db.transaction() as connection:
        cursor = await connection.execute(
            f"SELECT state FROM {state_table} WHERE id = ?",  # noqa: S608 - table name from code
            (entity,),
        )
        row = await cursor.fetchone()
        if row is None:
            raise UnknownEntity(entity)
        from_state = table.states[row[0]]
        if not table.allows(from_state, to_state):
            raise InvalidTransition(entity, from_state, to_state)

        now = utc_now()
        await connection.execute(
            f"UPDATE {state_table} SET state = ?, updated_at = ? WHERE id = ?",  # noqa: S608 - table name from code
            (to_state.name, now, entity),
        )
        await connection.execute(
            f"INSERT INTO {journal_table} (entity, at, from_state, to_state, reason) "  # noqa: S608 - table name from code
            "VALUES (?, ?, ?, ?, ?)",
            (entity, now, from_state.name, to_state.name, reason),
        )
        if also is not None:
            await also(connection, from_state)

    return from_state
