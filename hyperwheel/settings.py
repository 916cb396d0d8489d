"""Settings: ``hyperwheel.toml`` into one frozen, typed object.

Every key, its type and its default are declared once in ``_SCHEMA``; loading
reports every problem at once (file, key, reason) instead of stopping at the
first, so an operator fixes a file in one pass.
"""

import ipaddress
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hyperwheel.errors import ConfigError, Problem
from hyperwheel.secret import Secret

DEFAULT_CONFIG = Path("/etc/hyperwheel/hyperwheel.toml")
CONFIG_ENV = "HYPERWHEEL_CONFIG"


@dataclass(frozen=True)
class OrthancSettings:
    url: str
    username: str | None
    password: Secret | None
    poll_interval: float
    reconcile_interval: float


@dataclass(frozen=True)
class PathSettings:
    staging: Path
    state: Path
    routing: Path
    keychain: Path
    min_free_bytes: int


@dataclass(frozen=True)
class ScannerSettings:
    host: str
    port: int
    username: str
    client_keys: tuple[Path, ...]
    known_hosts: Path
    rrdf_root: str
    timezone: str | None
    match_tolerance: float
    concurrency: int
    give_up_after: float


@dataclass(frozen=True)
class FlywheelSettings:
    max_attempts: int
    auth_recheck: float


@dataclass(frozen=True)
class MetricsSettings:
    listen: str
    allow_remote: bool
    unhealthy_after: float

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


@dataclass(frozen=True)
class Settings:
    source: Path
    orthanc: OrthancSettings
    paths: PathSettings
    scanner: ScannerSettings | None
    flywheel: FlywheelSettings
    metrics: MetricsSettings


class _Required:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()

Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class _Key:
    kind: str  # "str", "bool", "int", "float", "path", "paths", "secret"
    default: Any
    check: Check | None = None


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _not_negative(value: Any) -> str | None:
    return None if value >= 0 else "must not be negative"


def _http_url(value: Any) -> str | None:
    if value.startswith(("http://", "https://")):
        return None
    return "must start with http:// or https://"


def _port(value: Any) -> str | None:
    return None if 0 < value < 65536 else "must be a port number (1-65535)"


def _listen(value: Any) -> str | None:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return "must be HOST:PORT, e.g. 127.0.0.1:9108"
    return None


def _timezone(value: Any) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {value!r} (use an IANA name like Europe/Berlin)"
    return None


_SCHEMA: dict[str, dict[str, _Key]] = {
    "orthanc": {
        "url": _Key("str", "http://127.0.0.1:8042", _http_url),
        "username": _Key("str", None),
        "password": _Key("secret", None),
        "password_file": _Key("path", None),
        "poll_interval": _Key("float", 1.0, _positive),
        "reconcile_interval": _Key("float", 300.0, _positive),
    },
    "paths": {
        "staging": _Key("path", Path("/var/lib/orthanc/export")),
        "state": _Key("path", Path("/var/lib/hyperwheel/state.db")),
        "routing": _Key("path", Path("/etc/hyperwheel/routing.json")),
        "keychain": _Key("path", Path("/etc/hyperwheel/fw_keychain.json")),
        "min_free_bytes": _Key("int", 2 * 1024**3, _not_negative),
    },
    "scanner": {
        "host": _Key("str", REQUIRED),
        "port": _Key("int", 22, _port),
        "username": _Key("str", REQUIRED),
        "client_keys": _Key("paths", REQUIRED),
        "known_hosts": _Key("path", REQUIRED),
        "rrdf_root": _Key("str", REQUIRED),
        "timezone": _Key("str", None, _timezone),
        "match_tolerance": _Key("float", 120.0, _not_negative),
        "concurrency": _Key("int", 4, _positive),
        "give_up_after": _Key("float", 86400.0, _positive),
    },
    "flywheel": {
        "max_attempts": _Key("int", 5, _positive),
        "auth_recheck": _Key("float", 900.0, _positive),
    },
    "metrics": {
        "listen": _Key("str", "127.0.0.1:9108", _listen),
        "allow_remote": _Key("bool", False),
        "unhealthy_after": _Key("float", 120.0, _positive),
    },
}

_OPTIONAL_SECTIONS = frozenset({"scanner"})


def default_config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load_settings(path: Path) -> Settings:
    """Read and validate ``path``; raise :class:`ConfigError` listing every error."""
    settings, problems = inspect_settings(path)
    errors = [p for p in problems if p.severity == "error"]
    if errors or settings is None:
        raise ConfigError(errors)

    return settings


def inspect_settings(path: Path) -> tuple[Settings | None, list[Problem]]:
    """Parse ``path`` into settings and every problem found on the way."""
    name = str(path)
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        return None, [Problem(name, "-", "file not found")]
    except PermissionError:
        return None, [Problem(name, "-", "permission denied reading the file")]
    except tomllib.TOMLDecodeError as error:
        return None, [Problem(name, "-", f"not valid TOML: {error}")]

    problems: list[Problem] = []
    for section in document:
        if section not in _SCHEMA:
            problems.append(Problem(name, section, "unknown section"))

    values: dict[str, dict[str, Any] | None] = {}
    for section, keys in _SCHEMA.items():
        raw = document.get(section)
        if raw is None and section in _OPTIONAL_SECTIONS:
            values[section] = None
            continue
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            problems.append(Problem(name, section, "must be a table ([section])"))
            raw = {}
        values[section] = _read_section(name, section, keys, raw, problems)

    orthanc = values["orthanc"] or {}
    _resolve_password(name, orthanc, problems)
    _check_exposure(name, values["metrics"] or {}, problems)
    if any(p.severity == "error" for p in problems):
        return None, problems

    return _build(path, values), problems


def paths_section(path: Path) -> PathSettings | None:
    """Just ``[paths]``, when it is valid even though other sections are not.

    Lets ``check-config`` go on to check routing and keychain files while it
    reports errors elsewhere in the configuration.
    """
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle).get("paths", {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    if not isinstance(raw, dict):
        return None
    problems: list[Problem] = []
    values = _read_section(str(path), "paths", _SCHEMA["paths"], raw, problems)

    return None if problems else PathSettings(**values)


def _read_section(
    name: str,
    section: str,
    keys: dict[str, _Key],
    raw: dict[str, Any],
    problems: list[Problem],
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key in raw:
        if key not in keys:
            problems.append(Problem(name, f"{section}.{key}", "unknown key"))

    for key, spec in keys.items():
        dotted = f"{section}.{key}"
        if key not in raw:
            if spec.default is REQUIRED:
                problems.append(Problem(name, dotted, "required but missing"))
            result[key] = spec.default
            continue
        value, reason = _coerce(spec.kind, raw[key])
        if reason is None and spec.check is not None:
            reason = spec.check(value)
        if reason is not None:
            problems.append(Problem(name, dotted, reason))
        result[key] = value

    return result


def _coerce(kind: str, value: Any) -> tuple[Any, str | None]:
    if kind in ("str", "secret"):
        if not isinstance(value, str) or not value.strip():
            return None, "must be a non-empty string"
        return (Secret(value) if kind == "secret" else value), None
    if kind == "bool":
        if not isinstance(value, bool):
            return None, "must be true or false"
        return value, None
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return None, "must be an integer"
        return value, None
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, "must be a number of seconds"
        return float(value), None
    if kind == "path":
        return _absolute_path(value)
    if kind == "paths":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            return None, "must be a path or a non-empty list of paths"
        paths = []
        for item in items:
            path, reason = _absolute_path(item)
            if reason is not None:
                return None, reason
            paths.append(path)
        return tuple(paths), None
    raise AssertionError(f"unknown kind {kind}")


def _absolute_path(value: Any) -> tuple[Path | None, str | None]:
    if not isinstance(value, str) or not value:
        return None, "must be a path string"
    path = Path(value)
    if not path.is_absolute():
        return None, f"must be an absolute path, got {value!r}"
    return path, None


def _resolve_password(
    name: str, orthanc: dict[str, Any], problems: list[Problem]
) -> None:
    password_file: Path | None = orthanc.pop("password_file", None)
    if password_file is not None and orthanc.get("password") is not None:
        problems.append(
            Problem(
                name, "orthanc.password_file", "set password or password_file, not both"
            )
        )
        return
    if password_file is not None:
        try:
            text = password_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            reason = f"cannot read {password_file}: {error.strerror}"
            problems.append(Problem(name, "orthanc.password_file", reason))
            return
        if not text:
            problems.append(Problem(name, "orthanc.password_file", "file is empty"))
            return
        orthanc["password"] = Secret(text)
    if orthanc.get("username") is not None and orthanc.get("password") is None:
        problems.append(
            Problem(name, "orthanc.password", "username is set but no password")
        )


def _check_exposure(
    name: str, metrics: dict[str, Any], problems: list[Problem]
) -> None:
    """The status page shows subject labels: beyond loopback only on request."""
    listen = metrics.get("listen")
    if listen is None or metrics.get("allow_remote"):
        return
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost" or _is_loopback(host):
        return
    problems.append(
        Problem(
            name,
            "metrics.listen",
            f"{host} is reachable from other machines, and the status page "
            "shows subject labels; listen on 127.0.0.1, or set "
            "metrics.allow_remote = true to serve it beyond this machine",
        )
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _build(path: Path, values: dict[str, dict[str, Any] | None]) -> Settings:
    scanner = values["scanner"]

    return Settings(
        source=path,
        orthanc=OrthancSettings(**values["orthanc"] or {}),
        paths=PathSettings(**values["paths"] or {}),
        scanner=ScannerSettings(**scanner) if scanner is not None else None,
        flywheel=FlywheelSettings(**values["flywheel"] or {}),
        metrics=MetricsSettings(**values["metrics"] or {}),
    )
