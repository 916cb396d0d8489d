"""One exception tree: the pipeline decides by type, never by message text."""

from dataclasses import dataclass


class HyperwheelError(Exception):
    """Base of every error hyperwheel raises on purpose."""


class TransientError(HyperwheelError):
    """Worth retrying later with backoff: a peer down, a timeout, a 5xx."""


class PermanentError(HyperwheelError):
    """Retrying will not help until a person acts; the study is held.

    ``recheck_after`` (seconds), when set, releases the hold on its own after
    that long: for causes a person may fix elsewhere without telling us, such
    as a refused API key.
    """

    recheck_after: float | None = None


class NotFound(PermanentError):
    """The peer says the resource does not exist (HTTP 404)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration, located by file and key."""

    file: str
    key: str
    reason: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.severity}: {self.file}: {self.key}: {self.reason}"


class ConfigError(HyperwheelError):
    """The configuration has errors; every one is listed, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
