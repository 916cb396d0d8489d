"""Path lookups: ``group/project/subject/session/acquisition[/files/name]``.

Containers are matched by label (subjects also by code) or by
``<id:...>``.  The literal ``files`` selects a container's files, and a bare
file name is accepted where no child container matches, as Flywheel does.
Ambiguous labels resolve to the earliest created container.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import bad_request, not_found
from .keys import KeyGrant, may_touch, require_access
from .render import render_container, render_file
from .store import CHILD_KIND, Container, FileVersion, Store


@dataclass
class Resolution:
    containers: list[Container]
    file: FileVersion | None
    listing_files: bool


class Resolver:
    def __init__(self, store: Store, grant: KeyGrant) -> None:
        self._store = store
        self._grant = grant

    def lookup(self, path: list[str]) -> dict[str, Any]:
        if not path:
            raise bad_request("lookup needs a non-empty path")

        resolution = self._walk(path)
        if resolution.listing_files:
            raise not_found("lookup of 'files' needs a file name after it")
        return self._path_nodes(resolution)[-1]

    def resolve(self, path: list[str]) -> dict[str, Any]:
        resolution = self._walk(path)
        return {
            "path": self._path_nodes(resolution),
            "children": self._children(resolution),
        }

    def _walk(self, path: list[str]) -> Resolution:
        containers: list[Container] = []
        remaining = list(path)

        while remaining:
            element = remaining.pop(0)
            current = containers[-1] if containers else None

            if current is not None and current.kind != "group" and element == "files":
                if not remaining:
                    return Resolution(containers, None, listing_files=True)
                found = self._store.live_file(current, remaining.pop(0))
                if remaining:
                    raise not_found("files have no children")
                return Resolution(containers, found, listing_files=False)

            child = self._child(current, element)
            if child is None:
                found_file = self._file_instead(current, element, remaining)
                return Resolution(containers, found_file, listing_files=False)

            require_access(self._store, self._grant, child)
            containers.append(child)

        return Resolution(containers, None, listing_files=False)

    def _child(self, parent: Container | None, element: str) -> Container | None:
        if parent is None:
            group_id = _id_reference(element) or element
            group = self._store.find(group_id)
            return group if group is not None and group.kind == "group" else None

        child_kind = CHILD_KIND.get(parent.kind)
        if child_kind is None:
            return None

        candidates = [c for c in self._store.children(parent) if c.kind == child_kind]
        reference = _id_reference(element)
        for candidate in candidates:
            if reference is not None:
                if candidate.id == reference:
                    return candidate
            elif element in _names_of(candidate):
                return candidate
        return None

    def _file_instead(
        self, parent: Container | None, element: str, remaining: list[str]
    ) -> FileVersion:
        if parent is None:
            raise not_found(f"group {element} not found")

        wanted = CHILD_KIND.get(parent.kind, "file")
        if parent.kind == "group" or remaining:
            raise not_found(
                f"{wanted} {element} not found in {parent.kind} {parent.id}"
            )

        for entry in self._store.live_files(parent):
            if entry.name == element:
                return entry
        raise not_found(f"{wanted} or file {element} not found in {parent.kind}")

    def _path_nodes(self, resolution: Resolution) -> list[dict[str, Any]]:
        nodes = [self._container_node(c) for c in resolution.containers]
        if resolution.file is not None:
            nodes.append(self._file_node(resolution.file, resolution.containers[-1]))
        return nodes

    def _children(self, resolution: Resolution) -> list[dict[str, Any]]:
        if resolution.file is not None:
            return []

        if not resolution.containers:
            return [
                self._container_node(group)
                for group in self._store.groups()
                if may_touch(self._store, self._grant, group)
            ]

        parent = resolution.containers[-1]
        files = (
            [self._file_node(entry, parent) for entry in self._store.live_files(parent)]
            if parent.kind != "group"
            else []
        )
        if resolution.listing_files:
            return files

        children = [
            self._container_node(child)
            for child in self._store.children(parent)
            if may_touch(self._store, self._grant, child)
        ]
        return children + files

    def _container_node(self, container: Container) -> dict[str, Any]:
        return render_container(self._store, container, with_type=True)

    def _file_node(self, entry: FileVersion, parent: Container) -> dict[str, Any]:
        return dict(render_file(entry, parent), container_type="file")


def _id_reference(element: str) -> str | None:
    if element.startswith("<id:") and element.endswith(">"):
        return element[4:-1]
    return None


def _names_of(container: Container) -> set[str]:
    names = {container.attributes.get("label")}
    if container.kind == "subject":
        names.add(container.attributes.get("code"))
    return {name for name in names if isinstance(name, str)}
