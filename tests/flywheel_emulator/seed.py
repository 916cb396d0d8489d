"""The seed: groups, projects and API keys an emulator starts with.

Flywheel never lets an uploader create groups or projects, so they only come
from here.  Example::

    {
      "groups": [{"id": "neuro", "label": "Neuroscience"}],
      "projects": [{"group": "neuro", "label": "Study A"}],
      "api_keys": [
        {"key": "alice-key", "user": "alice@example.org",
         "projects": ["neuro/Study A"]}
      ]
    }

A project may carry an explicit ``"id"`` (24 hex digits) so tests can know it
in advance.  Keys name the projects they may touch as ``"group/label"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ids import is_object_id

GROUP_ID_PATTERN = re.compile(r"^[0-9a-z][0-9a-z.@_-]{0,62}[0-9a-z]$")


class SeedError(ValueError):
    """The seed document is malformed."""


@dataclass(frozen=True)
class SeedGroup:
    id: str
    label: str


@dataclass(frozen=True)
class SeedProject:
    group: str
    label: str
    id: str | None

    @property
    def path(self) -> str:
        return f"{self.group}/{self.label}"


@dataclass(frozen=True)
class SeedKey:
    key: str
    user: str
    projects: tuple[str, ...]


@dataclass(frozen=True)
class Seed:
    groups: tuple[SeedGroup, ...]
    projects: tuple[SeedProject, ...]
    keys: tuple[SeedKey, ...]

    def keys_for_project(self, project_path: str) -> list[SeedKey]:
        return [key for key in self.keys if project_path in key.projects]


def load_seed(path: Path) -> Seed:
    with path.open(encoding="utf-8") as handle:
        return parse_seed(json.load(handle))


def parse_seed(raw: Mapping[str, Any]) -> Seed:
    groups = tuple(_parse_group(entry) for entry in _list_of(raw, "groups"))
    projects = tuple(_parse_project(entry) for entry in _list_of(raw, "projects"))
    keys = tuple(_parse_key(entry) for entry in _list_of(raw, "api_keys"))

    _check_references(groups, projects, keys)
    return Seed(groups=groups, projects=projects, keys=keys)


def _list_of(raw: Mapping[str, Any], name: str) -> Sequence[Mapping[str, Any]]:
    entries = raw.get(name, [])
    if not isinstance(entries, list):
        raise SeedError(f"seed field {name!r} must be a list")
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise SeedError(f"every entry of {name!r} must be an object")
    return entries


def _text(entry: Mapping[str, Any], name: str, where: str) -> str:
    value = entry.get(name)
    if not isinstance(value, str) or not value:
        raise SeedError(f"{where} needs a non-empty string {name!r}")
    return value


def _parse_group(entry: Mapping[str, Any]) -> SeedGroup:
    group_id = _text(entry, "id", "group")
    if not GROUP_ID_PATTERN.match(group_id):
        raise SeedError(f"group id {group_id!r} is not a valid Flywheel group id")
    return SeedGroup(id=group_id, label=str(entry.get("label") or group_id))


def _parse_project(entry: Mapping[str, Any]) -> SeedProject:
    project_id = entry.get("id")
    if project_id is not None and not (
        isinstance(project_id, str) and is_object_id(project_id)
    ):
        raise SeedError(f"project id {project_id!r} must be 24 lowercase hex digits")
    return SeedProject(
        group=_text(entry, "group", "project"),
        label=_text(entry, "label", "project"),
        id=project_id,
    )


def _parse_key(entry: Mapping[str, Any]) -> SeedKey:
    key = _text(entry, "key", "api key")
    if ":" in key or any(character.isspace() for character in key):
        # The SDK splits its key string on ":" and keeps the last piece.
        raise SeedError(f"api key {key!r} may not contain ':' or whitespace")

    projects = entry.get("projects", [])
    if not isinstance(projects, list) or not all(
        isinstance(path, str) for path in projects
    ):
        raise SeedError(f"api key {key!r} needs a list of 'group/label' projects")

    return SeedKey(
        key=key, user=_text(entry, "user", "api key"), projects=tuple(projects)
    )


def _check_references(
    groups: Sequence[SeedGroup],
    projects: Sequence[SeedProject],
    keys: Sequence[SeedKey],
) -> None:
    group_ids = [group.id for group in groups]
    if len(set(group_ids)) != len(group_ids):
        raise SeedError("group ids must be unique")

    project_paths = [project.path for project in projects]
    if len(set(project_paths)) != len(project_paths):
        raise SeedError("project labels must be unique within a group")

    explicit_ids = [project.id for project in projects if project.id]
    if len(set(explicit_ids)) != len(explicit_ids):
        raise SeedError("project ids must be unique")

    for project in projects:
        if project.group not in group_ids:
            raise SeedError(f"project {project.path!r} names an unknown group")

    key_values = [key.key for key in keys]
    if len(set(key_values)) != len(key_values):
        raise SeedError("api keys must be unique")

    for key in keys:
        for path in key.projects:
            if path not in project_paths:
                raise SeedError(f"api key for {key.user!r} names unknown {path!r}")
