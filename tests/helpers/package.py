"""The Debian package in tests: built, installed with apt, and always purged.

Installing touches the machine (/etc/hyperwheel, /var/lib/hyperwheel, the
orthanc.service drop-in), so every install goes through
:func:`installed_package`, which purges the package and restores
``policy-rc.d`` however the test ends.
"""

import ctypes
import json
import os
import shlex
import shutil
import signal
import struct
import subprocess
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.ports import free_port
from tests.helpers.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
BUILD_DEB = REPO / "packaging" / "build-deb"
PACKAGE = "hyperwheel"
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
DROP_IN = Path("/lib/systemd/system/orthanc.service.d/hyperwheel.conf")
ORTHANC_FOLDER = Path("/etc/hyperwheel/orthanc")
PASSWORD_FILE = Path("/etc/hyperwheel/orthanc-password")
# ELF e_machine values.
MACHINES = {"amd64": 62, "arm64": 183}
# What systemd gives the service: no inherited variables beyond these.
SERVICE_ENVIRONMENT = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/var/lib/orthanc",
}
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_MDWE = 65
_PR_MDWE_REFUSE_EXEC_GAIN = 1
# Loaded here, not in the forked child, where loading could deadlock.
_LIBC = ctypes.CDLL(None, use_errno=True)


def require_tools(*tools: str) -> None:
    """Fail, never skip, when a tool the package tests need is missing."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run scripts/setup", pytrace=False)


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("installing the package needs root (CI runs as root)")


def build_deb(arch: str, out_dir: Path) -> Path:
    """``packaging/build-deb ARCH`` into ``out_dir``; the .deb it made."""
    require_tools("dpkg-buildpackage", "dh", "lintian", "readelf", "python3.11")
    result = subprocess.run(
        [str(BUILD_DEB), arch],
        env={**os.environ, "OUT_DIR": str(out_dir)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"build-deb {arch} failed:\n{result.stdout}\n{result.stderr}")
    (deb,) = out_dir.glob(f"{PACKAGE}_*_{arch}.deb")

    return deb


def elf_machine(path: Path) -> int | None:
    """The e_machine of an ELF file, or None for anything else."""
    with open(path, "rb") as handle:
        header = handle.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    order = "<" if header[5] == 1 else ">"

    return int(struct.unpack(order + "H", header[18:20])[0])


def run(
    *command: str, check: bool = True, **options: Any
) -> "subprocess.CompletedProcess[str]":
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, **options
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{shlex.join(command)} exited {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )

    return result


def apt_get(*arguments: str) -> str:
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = run("apt-get", "-y", "-q", *arguments, env=environment)

    return result.stdout + result.stderr


def package_state() -> str:
    """dpkg's word for the package: installed, config-files, not-installed…"""
    result = run("dpkg-query", "-W", "-f=${db:Status-Status}", PACKAGE, check=False)

    return result.stdout.strip() or "not-installed"


@contextmanager
def services_kept_down() -> Iterator[None]:
    """policy-rc.d answering 101, so no install starts a service; then restored."""
    previous = POLICY_RC_D.read_bytes() if POLICY_RC_D.exists() else None
    POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        if previous is None:
            POLICY_RC_D.unlink()
        else:
            POLICY_RC_D.write_bytes(previous)


@contextmanager
def installed_package(deb: Path) -> Iterator[str]:
    """Install ``deb`` with apt; purge it afterwards, even after a failure.

    Yields what the installation printed (the maintainer scripts' messages).
    """
    require_root()
    require_tools("apt-get", "dpkg-query")
    state = package_state()
    if state != "not-installed":
        pytest.fail(
            f"{PACKAGE} is already on this machine ({state}); the test installs "
            f"and purges it: run apt-get purge {PACKAGE} first"
        )
    with services_kept_down():
        try:
            yield apt_get("install", str(deb.resolve()))
        finally:
            if package_state() != "not-installed":
                apt_get("purge", PACKAGE)


def sandboxed() -> None:
    """Set what systemd's NoNewPrivileges= and MemoryDenyWriteExecute= set.

    Runs in the child before exec. systemd 252 enforces MemoryDenyWriteExecute
    with a seccomp filter; the kernel's PR_SET_MDWE (Linux 6.3) refuses the
    same writable-and-executable mappings and survives exec.
    """
    if _LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if _LIBC.prctl(_PR_SET_MDWE, _PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_MDWE (needs Linux 6.3)")


def as_service_user(**options: Any) -> dict[str, Any]:
    """Popen options: user and group orthanc, the service's umask and sandbox."""
    return {
        "user": "orthanc",
        "group": "orthanc",
        "extra_groups": [],
        "umask": 0o027,
        "env": dict(SERVICE_ENVIRONMENT),
        "preexec_fn": sandboxed,
        **options,
    }


def stop(process: subprocess.Popen[bytes] | None, timeout: float = 20) -> int | None:
    """SIGTERM and wait; SIGKILL if it will not go. Its exit code."""
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    return process.returncode


def drop_in_command() -> list[str]:
    """The command line the package's drop-in gives orthanc.service."""
    commands = [
        line.partition("=")[2].strip()
        for line in DROP_IN.read_text().splitlines()
        if line.startswith("ExecStart=")
    ]
    assert commands[0] == "", "the drop-in must reset Debian's ExecStart first"

    return shlex.split(commands[-1])


@dataclass
class PackagedOrthanc:
    """Orthanc run as the drop-in runs it, as user orthanc, on free ports.

    The configuration is the generated folder, copied with its owners and
    modes; only the ports and the storage folder are changed, so a test
    neither disturbs nor depends on an Orthanc the machine may run.
    """

    folder: Path
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def config(self) -> Path:
        return self.folder / "config"

    def start(self) -> "PackagedOrthanc":
        storage = self.folder / "storage"
        logs = self.folder / "logs"
        for made in (storage, logs):
            made.mkdir(parents=True)
            shutil.chown(made, "orthanc", "orthanc")
        # Owners and modes as generated: Orthanc, as user orthanc, must be
        # able to read them, credentials included.
        shutil.copytree(ORTHANC_FOLDER, self.config)
        for copy in [self.config, *self.config.iterdir()]:
            source = (ORTHANC_FOLDER / copy.relative_to(self.config)).stat()
            os.chown(copy, source.st_uid, source.st_gid)
        self._override(
            HttpPort=self.http_port,
            DicomPort=self.dicom_port,
            StorageDirectory=str(storage),
            IndexDirectory=str(storage),
        )

        command = drop_in_command()
        assert command[-1] == str(ORTHANC_FOLDER), command
        command = [
            f"--logdir={logs}" if part.startswith("--logdir=") else part
            for part in command[:-1]
        ] + [str(self.config)]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.folder,
            **as_service_user(preexec_fn=None),
        )
        wait_until(self._answers, 20, "the packaged Orthanc to answer")

        return self

    def stop(self) -> None:
        stop(self.process)
        self.process = None

    def get(self, path: str, password: str | None = None) -> Any:
        password = password or PASSWORD_FILE.read_text().strip()
        token = b64encode(f"hyperwheel:{password}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310 - loopback test server
            self.url + path, headers={"Authorization": f"Basic {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
            return json.loads(reply.read())

    def _override(self, **values: Any) -> None:
        path = self.config / "orthanc.json"
        text = path.read_text()
        # The generated file starts with // comment lines, JSON after them.
        comments = "".join(
            line for line in text.splitlines(True) if line.startswith("//")
        )
        document = json.loads(text[len(comments) :])
        for key in values:
            assert key in document, f"{key} missing from the generated orthanc.json"
        document.update(values)
        path.write_text(comments + json.dumps(document, indent=2))

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            logs = "\n".join(
                p.read_text(errors="replace")[-2000:]
                for p in (self.folder / "logs").glob("*.log")
            )
            raise RuntimeError(f"Orthanc exited {self.process.returncode}:\n{logs}")
        try:
            self.get("/system")
        except (urllib.error.URLError, ConnectionError):
            return False
        return True
