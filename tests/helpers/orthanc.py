"""A real Orthanc (Debian package) started as a foreground process for a test."""

import base64
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers.ports import free_port
from tests.helpers.waiting import wait_until

ORTHANC_BINARY = "/usr/sbin/Orthanc"
USERNAME = "hyperwheel"
PASSWORD = "orthanc-test-password-4f2a"


@dataclass
class OrthancServer:
    """One Orthanc on free loopback ports with its own storage folder."""

    folder: Path
    stable_age: int = 2
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.folder / "orthanc.log"

    def start(self) -> "OrthancServer":
        self.folder.mkdir(parents=True, exist_ok=True)
        storage = self.folder / "db"
        config = {
            "Name": "hyperwheel-test",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "HYPERWHEEL",
            "StableAge": self.stable_age,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USERNAME: PASSWORD},
            "Plugins": [],
            "SaveJobs": False,
            "MaximumStorageSize": 0,
            "MaximumPatientCount": 0,
        }
        config_path = self.folder / "orthanc.json"
        config_path.write_text(json.dumps(config, indent=2))
        environment = {**os.environ, "TCP_NODELAY": "1"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [ORTHANC_BINARY, str(config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                cwd=self.folder,
            )
        wait_until(self._answers, 15, "Orthanc to answer /system")

        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"Orthanc exited with {self.process.returncode}: "
                + self.log_path.read_text(errors="replace")[-2000:]
            )
        try:
            self.get("/system")
        except (urllib.error.URLError, ConnectionError):
            return False
        return True

    def request(self, method: str, path: str) -> Any:
        token = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310 - loopback test server
            self.url + path,
            method=method,
            headers={"Authorization": f"Basic {token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
            body = reply.read()
        return json.loads(body) if body else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
