"""A small persisted state machine.

States are an :class:`enum.Enum`, the allowed transitions are one
:class:`TransitionTable` of data, and :func:`transition` is the single entry
point that checks a move and writes the new state together with a journal row
in one SQLite transaction. Nothing here knows what the machine is used for.
"""

from statemachine._database import (
    Database,
    Migration,
    SchemaTooNew,
    open_database,
    schema_version,
)
from statemachine._errors import (
    InvalidTransition,
    StateMachineError,
    UnknownEntity,
)
from statemachine._journal import JournalEntry, journal_schema, read_journal
from statemachine._table import TransitionTable
from statemachine._transition import current_state, transition, utc_now

__all__ = [
    "Database",
    "InvalidTransition",
    "JournalEntry",
    "Migration",
    "SchemaTooNew",
    "StateMachineError",
    "TransitionTable",
    "UnknownEntity",
    "current_state",
    "journal_schema",
    "open_database",
    "read_journal",
    "schema_version",
    "transition",
    "utc_now",
]
