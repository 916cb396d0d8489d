"""The errors the state machine raises; all share one base class."""

from enum import Enum


class StateMachineError(Exception):
    """Base of every error raised by :mod:`statemachine`."""


class InvalidTransition(StateMachineError):
    """A move that the transition table does not allow."""

    def __init__(self, entity: str, from_state: Enum, to_state: Enum) -> None:
        super().__init__(
            f"{entity}: transition {from_state.name} -> {to_state.name} is not allowed"
        )
        self.entity = entity
        self.from_state = from_state
        self.to_state = to_state


class UnknownEntity(StateMachineError):
    """A transition asked for an entity that has no row."""

    def __init__(self, entity: str) -> None:
        super().__init__(f"{entity}: no such entity in the state table")
        self.entity = entity
