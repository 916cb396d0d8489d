"""API keys: who is calling, and which projects they may touch."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ApiError, forbidden
from .store import Container, Store

ACCEPTED_SCHEMES = ("scitran-user", "bearer")


@dataclass
class KeyGrant:
    key: str
    user: str
    project_ids: frozenset[str]
    revoked: bool = False

    @property
    def origin(self) -> dict[str, str]:
        return {"type": "user", "id": self.user}


class KeyRing:
    def __init__(self, grants: list[KeyGrant]) -> None:
        self._grants = {grant.key: grant for grant in grants}

    def authenticate(self, authorization: str | None) -> KeyGrant:
        if not authorization:
            raise ApiError(401, "Authentication required")

        scheme, _, key = authorization.strip().partition(" ")
        if scheme.lower() not in ACCEPTED_SCHEMES or not key.strip():
            raise ApiError(401, "Unsupported authorization scheme")

        grant = self._grants.get(key.strip())
        if grant is None or grant.revoked:
            raise ApiError(401, "Invalid or revoked API key")
        return grant

    def set_revoked(self, key: str, revoked: bool) -> KeyGrant:
        grant = self._grants.get(key)
        if grant is None:
            raise KeyError(key)
        grant.revoked = revoked
        return grant

    def grants(self) -> list[KeyGrant]:
        return list(self._grants.values())


def may_touch(store: Store, grant: KeyGrant, container: Container) -> bool:
    if container.kind == "group":
        return any(
            store.find(project_id) is not None
            and store.get(project_id).parents.get("group") == container.id
            for project_id in grant.project_ids
        )
    return store.project_id_of(container) in grant.project_ids


def require_access(store: Store, grant: KeyGrant, container: Container) -> None:
    if not may_touch(store, grant, container):
        raise forbidden(
            f"user {grant.user} has no permission on {container.kind} {container.id}"
        )
