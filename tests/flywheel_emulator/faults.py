"""Fault rules: the ways a real Flywheel (or the network before it) misbehaves.

A rule names a kind, which requests it applies to (methods and a regular
expression searched in the request path), how often (``probability`` drawn
from a seeded RNG, ``times`` as an upper bound on how often it fires) and
kind-specific settings.  Kinds:

``error``               answer ``status`` (default 503) without doing anything
``error_after_commit``  do the work, then answer ``status`` instead of the reply
``delay``               wait ``seconds`` (default 1), then answer normally
``timeout``             hold the request ``seconds`` (default 3600) before doing
                        the work, or after it when ``after_commit`` is true
``revoke_key``          revoke the caller's key, answer 401 from then on
``drop_upload``         answer an upload as stored but store nothing
``null_hash``           store uploaded files with a null ``hash``
``empty_ticket_reply``  answer a signed-URL ticket close with ``[]``; the
                        upload is also stored when ``commit`` is true
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

FaultKind = Literal[
    "error",
    "error_after_commit",
    "delay",
    "timeout",
    "revoke_key",
    "drop_upload",
    "null_hash",
    "empty_ticket_reply",
]
REQUEST_KINDS: frozenset[str] = frozenset(
    {"error", "error_after_commit", "delay", "timeout", "revoke_key"}
)
UPLOAD_KINDS: frozenset[str] = frozenset(
    {"drop_upload", "null_hash", "empty_ticket_reply"}
)
DEFAULT_SECONDS: dict[str, float] = {"delay": 1.0, "timeout": 3600.0}
RULE_FIELDS = frozenset(
    {
        "kind",
        "methods",
        "path",
        "probability",
        "times",
        "status",
        "seconds",
        "after_commit",
        "commit",
        "retry_after",
    }
)


class FaultRuleError(ValueError):
    """A fault rule description is malformed."""


@dataclass
class FaultRule:
    kind: FaultKind
    methods: frozenset[str]
    path: re.Pattern[str]
    probability: float = 1.0
    times: int | None = None
    status: int = 503
    seconds: float = 0.0
    after_commit: bool = False
    commit: bool = False
    retry_after: float | None = None
    fired: int = 0

    def covers(self, method: str, path: str) -> bool:
        if self.methods and method.upper() not in self.methods:
            return False
        return self.path.search(path) is not None

    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "methods": sorted(self.methods),
            "path": self.path.pattern,
            "probability": self.probability,
            "times": self.times,
            "status": self.status,
            "seconds": self.seconds,
            "after_commit": self.after_commit,
            "commit": self.commit,
            "retry_after": self.retry_after,
            "fired": self.fired,
        }


class FaultPlan:
    """The active rules plus the seeded RNG that decides probabilistic ones.

    The RNG is only consulted for rules with probability below one, so a run
    with the same seed and the same request order fails the same way.
    """

    def __init__(self, rules: Iterable[FaultRule] = (), seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rules = list(rules)
        self._seed = seed
        self._random = random.Random(seed)

    def replace(self, rules: Iterable[FaultRule], seed: int | None = None) -> None:
        with self._lock:
            self._rules = list(rules)
            if seed is not None:
                self._seed = seed
            self._random = random.Random(self._seed)

    def fire(self, kinds: frozenset[str], method: str, path: str) -> list[FaultRule]:
        """Rules of the given kinds that go off for this request, in order."""
        with self._lock:
            fired = []
            for rule in self._rules:
                if rule.kind not in kinds or rule.exhausted():
                    continue
                if not rule.covers(method, path):
                    continue
                if rule.probability < 1.0 and self._random.random() >= rule.probability:
                    continue
                rule.fired += 1
                fired.append(rule)
            return fired

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "seed": self._seed,
                "rules": [rule.describe() for rule in self._rules],
            }


def parse_plan(raw: Mapping[str, Any]) -> tuple[list[FaultRule], int | None]:
    """Read ``{"seed": 7, "rules": [...]}`` as sent to the admin endpoint."""
    seed = raw.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise FaultRuleError("seed must be an integer")

    rules = raw.get("rules", [])
    if not isinstance(rules, list):
        raise FaultRuleError("rules must be a list")
    return [parse_rule(rule) for rule in rules], seed


def parse_rule(raw: Any) -> FaultRule:
    if not isinstance(raw, Mapping):
        raise FaultRuleError("a fault rule must be an object")

    unknown = set(raw) - RULE_FIELDS
    if unknown:
        raise FaultRuleError(f"unknown fault rule fields: {sorted(unknown)}")

    kind = raw.get("kind")
    if kind not in REQUEST_KINDS | UPLOAD_KINDS:
        raise FaultRuleError(f"unknown fault kind {kind!r}")

    probability = float(raw.get("probability", 1.0))
    if not 0.0 <= probability <= 1.0:
        raise FaultRuleError("probability must be between 0 and 1")

    times = raw.get("times")
    if times is not None and (not isinstance(times, int) or times < 0):
        raise FaultRuleError("times must be a non-negative integer")

    try:
        path = re.compile(str(raw.get("path", "")))
    except re.error as error:
        raise FaultRuleError(f"path is not a regular expression: {error}") from error

    retry_after = raw.get("retry_after")
    return FaultRule(
        kind=cast(FaultKind, kind),
        methods=frozenset(str(m).upper() for m in raw.get("methods", [])),
        path=path,
        probability=probability,
        times=times,
        status=int(raw.get("status", 401 if kind == "revoke_key" else 503)),
        seconds=float(raw.get("seconds", DEFAULT_SECONDS.get(kind, 0.0))),
        after_commit=bool(raw.get("after_commit", False)),
        commit=bool(raw.get("commit", False)),
        retry_after=None if retry_after is None else float(retry_after),
    )
