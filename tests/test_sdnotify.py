"""The systemd notify protocol, spoken to a socket of the test's own."""

import os
import socket
from pathlib import Path

from hyperwheel.sdnotify import Notifier


def test_messages_arrive_as_datagrams_on_notify_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(path)
        listener.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": path})

        notifier.ready("following")
        notifier.watchdog()
        notifier.stopping()

        received = [listener.recv(256).decode() for _ in range(3)]
    assert received == [
        "READY=1\nSTATUS=following",
        "WATCHDOG=1",
        "STOPPING=1\nSTATUS=stopping",
    ]


def test_abstract_socket_names_are_understood() -> None:
    name = f"hyperwheel-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(5)

        Notifier({"NOTIFY_SOCKET": "@" + name}).ready("up")

        assert listener.recv(256).startswith(b"READY=1")


def test_without_systemd_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier({})

    notifier.ready("up")

    assert not notifier.enabled and notifier.watchdog_interval is None


def test_watchdog_beats_at_half_the_interval_and_only_for_its_own_pid() -> None:
    mine = Notifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())})
    other = Notifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"})

    assert mine.watchdog_interval == 2.0
    assert other.watchdog_interval is None
