"""Flywheel's list query parameters: filter, sort, limit, skip, page, after_id.

Filters are comma-separated conditions such as ``label=Scan 1``,
``uid="1.2.3"``, ``created>2024-01-01`` or ``label=~^T1``, applied to the
rendered documents (dotted keys reach into nested fields).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import bad_request

CONDITION = re.compile(r"^\s*(?P<key>[\w.]+)\s*(?P<op>=~|!=|<=|>=|=|<|>)(?P<value>.*)$")


@dataclass(frozen=True)
class Condition:
    key: str
    operator: str
    value: str

    def matches(self, document: Mapping[str, Any]) -> bool:
        actual = lookup_field(document, self.key)
        return _compare(actual, self.operator, self.value)


def parse_filter(text: str | None) -> list[Condition]:
    if not text:
        return []
    return [_parse_condition(part) for part in _split_unquoted(text)]


def apply_list_query(
    documents: Sequence[dict[str, Any]], query: Mapping[str, str]
) -> list[dict[str, Any]]:
    conditions = parse_filter(query.get("filter"))
    selected = [d for d in documents if all(c.matches(d) for c in conditions)]

    selected = _sort(selected, query.get("sort"))

    after_id = query.get("after_id")
    if after_id:
        selected = [d for d in selected if str(d.get("_id", "")) > after_id]

    limit = _integer(query, "limit")
    skip = _integer(query, "skip") or 0
    page = _integer(query, "page")
    if page and limit:
        skip += (page - 1) * limit
    selected = selected[skip:]
    if limit:
        selected = selected[:limit]
    return selected


def lookup_field(document: Mapping[str, Any], dotted_key: str) -> Any:
    value: Any = document
    for part in dotted_key.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _split_unquoted(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for character in text:
        if character == '"':
            quoted = not quoted
        if character == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(character)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


def _parse_condition(text: str) -> Condition:
    match = CONDITION.match(text)
    if match is None:
        raise bad_request(f"cannot parse filter condition {text!r}")

    value = match["value"].strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return Condition(key=match["key"], operator=match["op"], value=value)


def _compare(actual: Any, operator: str, expected: str) -> bool:
    if operator == "=~":
        return actual is not None and re.search(expected, str(actual)) is not None

    if isinstance(actual, list):
        # A list field matches when any element does, as with Mongo queries.
        hits = [_compare(item, "=", expected) for item in actual]
        return any(hits) if operator == "=" else not any(hits)

    if expected == "null" and operator in ("=", "!="):
        return (actual is None) == (operator == "=")

    left, right = _comparable(actual, expected)
    comparisons: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<": lambda a, b: a is not None and a < b,
        ">": lambda a, b: a is not None and a > b,
        "<=": lambda a, b: a is not None and a <= b,
        ">=": lambda a, b: a is not None and a >= b,
    }
    try:
        return comparisons[operator](left, right)
    except TypeError:
        return False


def _comparable(actual: Any, expected: str) -> tuple[Any, Any]:
    if isinstance(actual, bool):
        return actual, expected.lower() == "true"
    if isinstance(actual, int | float):
        try:
            return actual, float(expected)
        except ValueError:
            return str(actual), expected
    if actual is None:
        return None, expected
    return str(actual), expected


def _sort(documents: list[dict[str, Any]], sort: str | None) -> list[dict[str, Any]]:
    ordered = sorted(documents, key=lambda d: str(d.get("_id", "")))
    if not sort:
        return ordered

    # Stable sorts applied from the last key to the first give a multi-key sort.
    for field in reversed(sort.split(",")):
        key, _, direction = field.partition(":")
        descending = direction.strip().lower() in ("desc", "-1")
        ordered.sort(key=_sort_key_for(key.strip()), reverse=descending)
    return ordered


def _sort_key_for(dotted_key: str) -> Callable[[dict[str, Any]], tuple[int, str]]:
    def sort_key(document: dict[str, Any]) -> tuple[int, str]:
        value = lookup_field(document, dotted_key)
        return (0, "") if value is None else (1, str(value))

    return sort_key


def _integer(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw in (None, ""):
        return None
    try:
        number = int(str(raw))
    except ValueError as error:
        raise bad_request(f"{name} must be an integer") from error
    if number < 0:
        raise bad_request(f"{name} must not be negative")
    return number
