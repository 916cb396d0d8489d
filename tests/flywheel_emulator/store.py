"""The in-memory hierarchy: groups, projects, subjects, sessions, acquisitions.

Every file version ever stored is kept, including replaced and deleted ones,
so tests can see exactly what an uploader left behind.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from .blobs import StoredBlob, zip_member_count
from .errors import not_found
from .filetypes import guess_file_type, guess_mimetype
from .ids import ObjectIdFactory
from .timestamps import now_iso

ContainerKind = Literal["group", "project", "subject", "session", "acquisition"]

KINDS: tuple[ContainerKind, ...] = (
    "group",
    "project",
    "subject",
    "session",
    "acquisition",
)
CHILD_KIND: dict[ContainerKind, ContainerKind] = {
    "group": "project",
    "project": "subject",
    "subject": "session",
    "session": "acquisition",
}
PLURAL: dict[ContainerKind, str] = {kind: f"{kind}s" for kind in KINDS}
KIND_BY_PLURAL: dict[str, ContainerKind] = {
    plural: kind for kind, plural in PLURAL.items()
}


def kind_from_plural(plural: str) -> ContainerKind:
    return KIND_BY_PLURAL[plural]


@dataclass
class FileDetails:
    """What a client may say about a file; the rest the server works out."""

    type: str | None = None
    modality: str | None = None
    classification: dict[str, list[str]] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class FileVersion:
    file_id: str
    name: str
    version: int
    size: int
    hash: str | None
    storage_path: Path
    mimetype: str
    type: str | None
    modality: str | None
    classification: dict[str, list[str]]
    tags: list[str]
    info: dict[str, Any]
    zip_member_count: int | None
    origin: dict[str, str]
    created: str
    modified: str
    replaced: str | None = None
    deleted: str | None = None

    @property
    def is_live(self) -> bool:
        return self.deleted is None


@dataclass
class Container:
    id: str
    kind: ContainerKind
    parent_id: str | None
    parents: dict[str, str]
    attributes: dict[str, Any]
    created: str
    modified: str
    revision: int = 1
    files: list[FileVersion] = field(default_factory=list)

    @property
    def label(self) -> str | None:
        return cast("str | None", self.attributes.get("label"))


class Store:
    """Holds the tree and answers structural questions about it."""

    def __init__(
        self,
        ids: ObjectIdFactory,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._ids = ids
        self._on_change = on_change
        self._containers: dict[str, Container] = {}
        self._children: dict[str, list[str]] = {}

    def add_group(self, group_id: str, label: str) -> Container:
        group = self._insert(
            Container(
                id=group_id,
                kind="group",
                parent_id=None,
                parents={},
                attributes={"label": label},
                created=now_iso(),
                modified=now_iso(),
            )
        )
        self._changed()
        return group

    def add_project(
        self, group: Container, label: str, project_id: str | None = None
    ) -> Container:
        project = self._insert(
            Container(
                id=project_id or self._ids.new(),
                kind="project",
                parent_id=group.id,
                parents={"group": group.id},
                attributes={"label": label, "description": "", "info": {}},
                created=now_iso(),
                modified=now_iso(),
            )
        )
        self._changed()
        return project

    def create(
        self, kind: ContainerKind, parent: Container, attributes: Mapping[str, Any]
    ) -> Container:
        parents = dict(parent.parents)
        parents[parent.kind] = parent.id
        stamp = now_iso()

        container = self._insert(
            Container(
                id=self._ids.new(),
                kind=kind,
                parent_id=parent.id,
                parents=parents,
                attributes=copy.deepcopy(dict(attributes)),
                created=stamp,
                modified=stamp,
            )
        )
        self._changed()
        return container

    def get(self, container_id: str, kind: ContainerKind | None = None) -> Container:
        container = self._containers.get(container_id)
        if container is None or (kind is not None and container.kind != kind):
            wanted = kind or "container"
            raise not_found(f"{wanted} {container_id} not found")
        return container

    def find(self, container_id: str) -> Container | None:
        return self._containers.get(container_id)

    def children(self, parent: Container) -> list[Container]:
        child_ids = self._children.get(parent.id, [])
        return sorted((self._containers[child] for child in child_ids), key=_by_id)

    def descendants(self, ancestor: Container, kind: ContainerKind) -> list[Container]:
        found = [
            container
            for container in self._containers.values()
            if container.kind == kind
            and container.parents.get(ancestor.kind) == ancestor.id
        ]
        return sorted(found, key=_by_id)

    def of_kind(self, kind: ContainerKind) -> list[Container]:
        found = [c for c in self._containers.values() if c.kind == kind]
        return sorted(found, key=_by_id)

    def groups(self) -> list[Container]:
        return [c for c in self._containers.values() if c.kind == "group"]

    def project_id_of(self, container: Container) -> str | None:
        if container.kind == "project":
            return container.id
        return container.parents.get("project")

    def update_attributes(
        self, container: Container, changes: Mapping[str, Any]
    ) -> None:
        for name, value in changes.items():
            current = container.attributes.get(name)
            if isinstance(current, dict) and isinstance(value, Mapping):
                # Flywheel flattens nested objects into dotted $set keys, so a
                # PUT of {"info": {"a": 1}} merges into info instead of
                # replacing it.
                deep_merge(current, value)
            else:
                container.attributes[name] = copy.deepcopy(value)
        self._modified(container)

    def update_info(self, info: dict[str, Any], update: Mapping[str, Any]) -> None:
        if "replace" in update:
            info.clear()
            info.update(copy.deepcopy(dict(update["replace"])))
        if "set" in update:
            info.update(copy.deepcopy(dict(update["set"])))
        for key in update.get("delete", []):
            info.pop(key, None)

    def touch(self, container: Container) -> None:
        self._modified(container)

    def touch_file(self, container: Container, file_version: FileVersion) -> None:
        file_version.modified = now_iso()
        self._modified(container)

    def live_files(self, container: Container) -> list[FileVersion]:
        """The current version of every file that has not been deleted."""
        latest: dict[str, FileVersion] = {}
        for entry in container.files:
            if not entry.is_live:
                continue
            known = latest.get(entry.name)
            if known is None or entry.version > known.version:
                latest[entry.name] = entry
        return sorted(latest.values(), key=lambda entry: entry.file_id)

    def live_file(self, container: Container, name: str) -> FileVersion:
        for entry in self.live_files(container):
            if entry.name == name:
                return entry
        raise not_found(f"file {name} not found on {container.kind} {container.id}")

    def file_version(
        self, container: Container, name: str, version: int
    ) -> FileVersion:
        current = self.live_file(container, name)
        for entry in container.files:
            if entry.file_id == current.file_id and entry.version == version:
                return entry
        raise not_found(f"version {version} of file {name} not found")

    def add_file_version(
        self,
        container: Container,
        name: str,
        blob: StoredBlob,
        details: FileDetails,
        origin: dict[str, str],
        hash_is_reported: bool = True,
        keep: bool = True,
    ) -> FileVersion:
        """Add the next version of ``name``; with ``keep`` false, only pretend."""
        stamp = now_iso()
        previous = self._live_versions(container, name)

        if previous:
            file_id = previous[-1].file_id
            version = previous[-1].version + 1
        else:
            file_id = self._ids.new()
            version = 1

        entry = FileVersion(
            file_id=file_id,
            name=name,
            version=version,
            size=blob.size,
            hash=blob.flywheel_hash if hash_is_reported else None,
            storage_path=blob.path,
            mimetype=guess_mimetype(name),
            type=details.type or guess_file_type(name),
            modality=details.modality,
            classification=copy.deepcopy(details.classification),
            tags=list(details.tags),
            info=copy.deepcopy(details.info),
            zip_member_count=zip_member_count(blob.path),
            origin=origin,
            created=stamp,
            modified=stamp,
        )
        if not keep:
            return entry

        if previous:
            previous[-1].replaced = stamp
        container.files.append(entry)
        self._modified(container)
        return entry

    def delete_file(self, container: Container, name: str) -> FileVersion:
        current = self.live_file(container, name)
        stamp = now_iso()
        for entry in container.files:
            if entry.file_id == current.file_id and entry.is_live:
                entry.deleted = stamp
        self._modified(container)
        return current

    def versions_of(self, file_id: str) -> tuple[Container, list[FileVersion]]:
        for container in self._containers.values():
            versions = [e for e in container.files if e.file_id == file_id]
            if versions:
                return container, sorted(versions, key=lambda e: e.version)
        raise not_found(f"file {file_id} not found")

    def _live_versions(self, container: Container, name: str) -> list[FileVersion]:
        versions = [e for e in container.files if e.name == name and e.is_live]
        return sorted(versions, key=lambda e: e.version)

    def _insert(self, container: Container) -> Container:
        if container.id in self._containers:
            raise ValueError(f"duplicate container id {container.id}")
        self._containers[container.id] = container
        if container.parent_id is not None:
            self._children.setdefault(container.parent_id, []).append(container.id)
        return container

    def _modified(self, container: Container) -> None:
        container.modified = now_iso()
        container.revision += 1
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()


def deep_merge(target: dict[str, Any], changes: Mapping[str, Any]) -> None:
    for key, value in changes.items():
        current = target.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            deep_merge(current, value)
        else:
            target[key] = copy.deepcopy(value)


def _by_id(container: Container) -> str:
    return container.id
