"""systemd's notify protocol, without a dependency: one datagram per message.

``READY=1`` once configuration and store are up, ``WATCHDOG=1`` while the
event loop and the store answer, ``STOPPING=1`` on the way out. Outside
systemd (no ``NOTIFY_SOCKET``) every call does nothing.
"""

import os
import socket

import structlog

log = structlog.get_logger(__name__)


class Notifier:
    def __init__(self, environment: dict[str, str] | None = None) -> None:
        environment = dict(os.environ if environment is None else environment)
        self._address = _socket_address(environment.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = _watchdog_interval(environment)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping")

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self._address)
                sock.sendall(message.encode())
        except OSError as error:
            # systemd gone or the socket not ours: nothing to tell it then.
            log.warning("sdnotify.failed", problem=str(error))


def _socket_address(value: str) -> str | None:
    if not value:
        return None
    if value.startswith("@"):
        # An abstract socket: its name starts with a NUL byte.
        return "\0" + value[1:]
    if value.startswith("/"):
        return value

    return None


def _watchdog_interval(environment: dict[str, str]) -> float | None:
    """Half of WATCHDOG_USEC in seconds, if the watchdog is meant for us."""
    usec = environment.get("WATCHDOG_USEC", "")
    pid = environment.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None

    return int(usec) / 2_000_000
