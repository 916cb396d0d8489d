"""Which container fields a client may set, and checks on their values.

Unknown fields are refused rather than ignored: an uploader that sends a
field Flywheel does not know about has a bug worth hearing about.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import bad_request
from .render import REPORTED_ATTRIBUTES
from .store import ContainerKind
from .timestamps import normalize_timestamp

# What a client may set is what Flywheel reports back, plus info and tags.
SETTABLE_FIELDS: dict[ContainerKind, frozenset[str]] = {
    kind: frozenset({"info", "tags", *REPORTED_ATTRIBUTES[kind]})
    for kind in ("subject", "session", "acquisition")
}
PLACEMENT_FIELDS: dict[ContainerKind, frozenset[str]] = {
    "subject": frozenset({"project"}),
    "session": frozenset({"project", "subject", "project_has_template"}),
    "acquisition": frozenset({"session"}),
}


def settable_attributes(
    kind: ContainerKind, body: Mapping[str, Any], creating: bool
) -> dict[str, Any]:
    """The body's own fields, checked; placement fields are left to the caller."""
    placement = PLACEMENT_FIELDS[kind]
    moving = placement & set(body)
    if moving and not creating:
        raise bad_request(f"moving a {kind} ({sorted(moving)}) is not emulated")

    unknown = set(body) - SETTABLE_FIELDS[kind] - placement
    if unknown:
        raise bad_request(f"unexpected {kind} fields: {sorted(unknown)}")

    attributes = {name: body[name] for name in body if name in SETTABLE_FIELDS[kind]}
    _check_values(attributes)
    if kind == "subject":
        _pair_label_and_code(attributes, creating)
    return attributes


def _check_values(attributes: dict[str, Any]) -> None:
    if "info" in attributes and not isinstance(attributes["info"], dict):
        raise bad_request("info must be an object")

    tags = attributes.get("tags")
    if tags is not None and not (
        isinstance(tags, list) and all(isinstance(tag, str) for tag in tags)
    ):
        raise bad_request("tags must be a list of strings")

    for name in ("label", "code", "uid"):
        value = attributes.get(name)
        if value is not None and not isinstance(value, str):
            raise bad_request(f"{name} must be a string")

    if attributes.get("timestamp") is not None:
        attributes["timestamp"] = normalize_timestamp(attributes["timestamp"])


def _pair_label_and_code(attributes: dict[str, Any], creating: bool) -> None:
    """Flywheel treats a subject's label and code as one name."""
    label = attributes.get("label")
    code = attributes.get("code")
    if label is not None and code is not None and label != code:
        raise bad_request("subject label and code must agree")

    name = label if label is not None else code
    if name is None:
        if creating:
            raise bad_request("a subject needs a label or a code")
        return
    if not name:
        raise bad_request("subject label must not be empty")
    attributes["label"] = name
    attributes["code"] = name
