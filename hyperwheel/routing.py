"""``routing.json`` and the Flywheel keychain: where a study goes, with which key.

Both files are read when needed rather than once at start-up, so a person who
fixes a route or adds a key can ``hyperwheel retry`` without a restart.
"""

import json
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperwheel.errors import Problem
from hyperwheel.secret import Secret

_ROUTE = re.compile(r"^fw://(?P<group>[0-9a-z][0-9a-z_-]*)/(?P<project>[^/]+)$")

# Owner read/write, group read: anything wider exposes API keys.
_KEYCHAIN_ALLOWED_MODE = 0o640


@dataclass(frozen=True)
class Route:
    """A Flywheel destination: the group id and the project label."""

    group: str
    project: str

    def __str__(self) -> str:
        return f"fw://{self.group}/{self.project}"


def load_routes(path: Path) -> tuple[dict[str, Route], list[Problem]]:
    """Routing key -> destination, and every problem with the file."""
    document, problems = _read_json_object(path)
    routes: dict[str, Route] = {}
    for key, value in document.items():
        if not key.strip():
            problems.append(Problem(str(path), repr(key), "routing key is empty"))
            continue
        match = _ROUTE.match(value) if isinstance(value, str) else None
        if match is None:
            reason = f"must be 'fw://<group>/<project>', got {value!r}"
            problems.append(Problem(str(path), key, reason))
            continue
        routes[key] = Route(match["group"], match["project"].strip())

    return routes, problems


def load_keychain(path: Path) -> tuple[dict[str, Secret], list[Problem]]:
    """Routing key -> API key, refusing a file that others may read."""
    problems = _keychain_permission_problems(path)
    if problems:
        return {}, problems

    document, problems = _read_json_object(path)
    keys: dict[str, Secret] = {}
    for name, value in document.items():
        if not isinstance(value, str) or not value.strip():
            reason = "API key must be a non-empty string"
            problems.append(Problem(str(path), name, reason))
            continue
        keys[name] = Secret(value.strip())

    return keys, problems


def cross_check(
    routes: dict[str, Route], keys: dict[str, Secret], routing: Path, keychain: Path
) -> list[Problem]:
    """Warnings for routes without keys and keys without routes."""
    problems = []
    if not keys:
        problems.append(
            Problem(
                str(keychain),
                "-",
                "keychain is empty: every study will be held until keys are added",
                "warning",
            )
        )
    if not routes:
        problems.append(
            Problem(
                str(routing),
                "-",
                "no routes: every study will be held until routes are added",
                "warning",
            )
        )
    for name in sorted(routes.keys() - keys.keys()):
        if keys:
            reason = "route has no API key in the keychain; its studies will be held"
            problems.append(Problem(str(keychain), name, reason, "warning"))
    for name in sorted(keys.keys() - routes.keys()):
        reason = "API key has no route in routing.json; it is never used"
        problems.append(Problem(str(routing), name, reason, "warning"))

    return problems


def _keychain_permission_problems(path: Path) -> list[Problem]:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return [Problem(str(path), "-", "file not found")]
    except OSError as error:
        return [Problem(str(path), "-", f"cannot inspect: {error.strerror}")]
    if mode & ~_KEYCHAIN_ALLOWED_MODE:
        reason = (
            f"mode {mode:04o} lets others read or change API keys; "
            "run: chmod 0640 (or 0600) on it"
        )
        return [Problem(str(path), "-", reason)]

    return []


def _read_json_object(path: Path) -> tuple[dict[str, Any], list[Problem]]:
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, [Problem(name, "-", "file not found")]
    except (OSError, UnicodeDecodeError) as error:
        return {}, [Problem(name, "-", f"cannot read: {error}")]
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        reason = f"not valid JSON (line {error.lineno}, column {error.colno})"
        return {}, [Problem(name, "-", reason)]
    if not isinstance(document, dict):
        return {}, [Problem(name, "-", 'must be a JSON object {"key": "value"}')]

    return document, []
