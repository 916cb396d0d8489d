"""Turning stored containers and files into the JSON documents Flywheel sends."""

from __future__ import annotations

import copy
from typing import Any

from .store import CHILD_KIND, Container, FileVersion, Store

# Fields a container keeps in ``attributes`` and reports as they are.
REPORTED_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "group": ("label",),
    "project": ("label", "description"),
    "subject": (
        "label",
        "code",
        "firstname",
        "lastname",
        "sex",
        "type",
        "race",
        "ethnicity",
        "species",
        "strain",
        "cohort",
        "date_of_birth",
        "master_code",
        "state",
    ),
    "session": ("label", "uid", "timestamp", "timezone", "age", "weight", "operator"),
    "acquisition": ("label", "uid", "timestamp", "timezone"),
}


def render_file(entry: FileVersion, parent: Container) -> dict[str, Any]:
    parents = dict(parent.parents)
    parents[parent.kind] = parent.id
    return {
        "_id": entry.file_id,
        "file_id": entry.file_id,
        "name": entry.name,
        "version": entry.version,
        "size": entry.size,
        "hash": entry.hash,
        "mimetype": entry.mimetype,
        "type": entry.type,
        "modality": entry.modality,
        "classification": copy.deepcopy(entry.classification),
        "tags": list(entry.tags),
        "info": copy.deepcopy(entry.info),
        "info_exists": bool(entry.info),
        "zip_member_count": entry.zip_member_count,
        "origin": dict(entry.origin),
        "parent_ref": {"type": parent.kind, "id": parent.id},
        "parents": parents,
        "provider_id": "emulator-local-storage",
        "reference": False,
        "created": entry.created,
        "modified": entry.modified,
        "replaced": entry.replaced,
        "deleted": entry.deleted,
    }


def render_container(
    store: Store, container: Container, with_type: bool = False
) -> dict[str, Any]:
    document: dict[str, Any] = {"_id": container.id}
    for name in REPORTED_ATTRIBUTES[container.kind]:
        if name in container.attributes:
            document[name] = copy.deepcopy(container.attributes[name])

    document.update(
        {
            "parents": dict(container.parents),
            "created": container.created,
            "modified": container.modified,
            "revision": container.revision,
            "tags": list(container.attributes.get("tags", [])),
        }
    )
    if container.kind != "group":
        info = container.attributes.get("info", {})
        document["info"] = copy.deepcopy(info)
        document["info_exists"] = bool(info)
        document["notes"] = []
        document["permissions"] = []
        document["files"] = [
            render_file(entry, container) for entry in store.live_files(container)
        ]
    else:
        document["permissions"] = []

    _add_parent_shortcuts(store, container, document)
    if with_type:
        document["container_type"] = container.kind
    return document


def _add_parent_shortcuts(
    store: Store, container: Container, document: dict[str, Any]
) -> None:
    """Flywheel repeats some parent ids as top-level fields; clients read them."""
    if container.kind == "project":
        document["group"] = container.parents["group"]
    elif container.kind == "subject":
        document["project"] = container.parents["project"]
    elif container.kind == "session":
        document["group"] = container.parents["group"]
        document["project"] = container.parents["project"]
        subject = store.get(container.parents["subject"], "subject")
        document["subject"] = {
            "_id": subject.id,
            "label": subject.attributes.get("label"),
            "code": subject.attributes.get("code"),
            "project": subject.parents["project"],
        }
    elif container.kind == "acquisition":
        document["session"] = container.parents["session"]


def render_dump(store: Store) -> dict[str, Any]:
    """Everything, including replaced and deleted file versions."""
    return {"groups": [_dump_node(store, group) for group in store.groups()]}


def _dump_node(store: Store, container: Container) -> dict[str, Any]:
    document = render_container(store, container, with_type=True)
    if container.kind != "group":
        document["files"] = [
            dict(render_file(entry, container), storage_path=str(entry.storage_path))
            for entry in sorted(container.files, key=lambda e: (e.name, e.version))
        ]

    child_kind = CHILD_KIND.get(container.kind)
    if child_kind is not None:
        document[f"{child_kind}s"] = [
            _dump_node(store, child) for child in store.children(container)
        ]
    return document
