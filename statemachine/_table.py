"""The transition table: which state may follow which, as plain data."""

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

S = TypeVar("S", bound=Enum)


@dataclass(frozen=True)
class TransitionTable(Generic[S]):
    """Every allowed ``(from, to)`` pair of one state machine.

    Anything not listed is forbidden, so adding a state never silently opens a
    path through the machine.
    """

    states: type[S]
    allowed: frozenset[tuple[S, S]]

    @classmethod
    def from_mapping(
        cls, states: type[S], moves: Mapping[S, Iterable[S]]
    ) -> "TransitionTable[S]":
        pairs = frozenset(
            (source, target) for source, targets in moves.items() for target in targets
        )
        for source, target in pairs:
            if not isinstance(source, states) or not isinstance(target, states):
                raise TypeError(f"{source!r} -> {target!r} is not a {states.__name__}")

        return cls(states, pairs)

    def allows(self, source: S, target: S) -> bool:
        return (source, target) in self.allowed

    def successors(self, source: S) -> frozenset[S]:
        return frozenset(target for start, target in self.allowed if start is source)

    def __iter__(self) -> Iterator[tuple[S, S]]:
        return iter(sorted(self.allowed, key=lambda p: (p[0].name, p[1].name)))
