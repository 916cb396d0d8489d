"""A real OpenSSH sshd on loopback, shaped like the scanner, for a test."""

import dataclasses
import getpass
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hyperwheel.settings import ScannerSettings
from tests.helpers.ports import free_port
from tests.helpers.waiting import wait_until

SSHD_BINARY = "/usr/sbin/sshd"
# The raw-data folder tests fill, named like the scanner's own.
RAW_FOLDER = "rrdf_20261203_095500"
PRIVILEGE_SEPARATION_FOLDER = Path("/run/sshd")
# Listener, connection monitor, session, sftp server: a few levels suffice.
_PROCESS_TREE_DEPTH = 8


@dataclass
class SshdServer:
    """One sshd with its own host key, client key and scanner-like root folder.

    The listener runs in the foreground (``-D``); each connection it accepts
    is a child that calls ``setsid()``, so connections are stopped by PID.
    """

    folder: Path
    subsystem: str = "internal-sftp"
    # sshd keeps the first value it reads for a keyword, so these win.
    extra_config: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> Path:
        return self.folder / "scanner"

    @property
    def client_key(self) -> Path:
        return self.folder / "client_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.folder / "known_hosts"

    @property
    def log_path(self) -> Path:
        return self.folder / "sshd.log"

    @property
    def host_key_line(self) -> str:
        """The known_hosts line naming this server's ed25519 host key."""
        kind, blob = _public_key(self.folder / "host_ed25519").split()[:2]

        return f"[127.0.0.1]:{self.port} {kind} {blob}"

    def start(self) -> "SshdServer":
        self.folder.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(exist_ok=True)
        _generate_key(self.folder / "host_ed25519")
        _generate_key(self.client_key)
        authorized = self.folder / "authorized_keys"
        authorized.write_text(_public_key(self.client_key) + "\n")
        self.known_hosts.write_text(self.host_key_line + "\n")
        config = self.folder / "sshd_config"
        config.write_text(self._config(authorized))
        if os.geteuid() == 0:
            subprocess.run(
                ["install", "-d", "-m0755", str(PRIVILEGE_SEPARATION_FOLDER)],
                check=True,
            )

        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [SSHD_BINARY, "-D", "-e", "-f", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._accepts, 10, "sshd to accept connections", interval=0.005)

        return self

    def stop(self) -> None:
        if self.process is None:
            return
        self.kill_connections()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def kill_connections(self) -> int:
        """SIGKILL every process serving a connection; how many were killed."""
        if self.process is None:
            return 0
        victims = _descendants(self.process.pid)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        wait_until(
            lambda: not any(_alive(pid) for pid in victims),
            10,
            "killed sshd connections to exit",
            interval=0.01,
        )

        return len(victims)

    def connection_count(self) -> int:
        """Connections being served now: the listener's direct children."""
        if self.process is None:
            return 0
        return len(_children(self.process.pid))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logins(self) -> int:
        """How many connections have logged in since the server started."""
        return self.log().count("Accepted publickey for ")

    def _config(self, authorized: Path) -> str:
        lines = [
            *self.extra_config,
            f"ListenAddress 127.0.0.1:{self.port}",
            f"HostKey {self.folder / 'host_ed25519'}",
            f"AuthorizedKeysFile {authorized}",
            "PidFile none",
            "StrictModes no",
            "UsePAM no",
            "UseDNS no",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "MaxStartups 100",
            "MaxSessions 100",
            "LogLevel INFO",
            f"Subsystem sftp {self.subsystem}",
        ]

        return "\n".join(lines) + "\n"

    def _accepts(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"sshd exited with {self.process.returncode}: {self.log()[-2000:]}"
            )
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False


def scanner_settings(server: SshdServer, **overrides: Any) -> ScannerSettings:
    """Settings that point hyperwheel at ``server`` as the current user."""
    settings = ScannerSettings(
        host="127.0.0.1",
        port=server.port,
        username=getpass.getuser(),
        client_keys=(server.client_key,),
        known_hosts=server.known_hosts,
        rrdf_root=str(server.root),
        timezone=None,
        match_tolerance=120.0,
        concurrency=4,
        give_up_after=86400.0,
    )

    return dataclasses.replace(settings, **overrides)


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshdServer]:
    """A real sshd on a free loopback port; it and its connections are stopped."""
    server = SshdServer(tmp_path / "sshd").start()
    try:
        yield server
    finally:
        server.stop()


def _generate_key(path: Path) -> None:
    if path.exists():
        return
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def _public_key(private: Path) -> str:
    return Path(f"{private}.pub").read_text().strip()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _parent_of(entry) == pid:
            found.append(int(entry.name))

    return found


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``; a connection forks a few levels deep."""
    found: list[int] = []
    frontier = [pid]
    for _ in range(_PROCESS_TREE_DEPTH):
        frontier = [child for parent in frontier for child in _children(parent)]
        if not frontier:
            break
        found.extend(frontier)

    return found


def _parent_of(entry: Path) -> int | None:
    try:
        status = (entry / "status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])

    return None


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent to reap it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False

    return "\nState:\tZ" not in status


def raw_file(server: SshdServer, relative: str, size: int = 4096) -> Path:
    """A random raw file below the scanner's rrdf folder."""
    path = server.root / RAW_FOLDER / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def scanner_section(server: SshdServer, **settings: object) -> str:
    """A ``[scanner]`` TOML section pointing hyperwheel at ``server``."""
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": server.port,
        "username": getpass.getuser(),
        "client_keys": [str(server.client_key)],
        "known_hosts": str(server.known_hosts),
        "rrdf_root": str(server.root),
        **settings,
    }
    lines = ["[scanner]"]
    for key, value in values.items():
        if isinstance(value, list):
            text = "[" + ", ".join(f'"{item}"' for item in value) + "]"
        elif isinstance(value, str):
            text = f'"{value}"'
        else:
            text = str(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"
