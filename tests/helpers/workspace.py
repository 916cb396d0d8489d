"""A complete hyperwheel configuration in a temporary folder."""

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import orthanc as orthanc_helper
from tests.helpers.ports import free_port

REPO = Path(__file__).resolve().parents[2]
# Where the emulator's seed lets the tests' 'prisma' studies go.
ROUTE = "fw://radiology/Brain MRI"


@dataclass
class Workspace:
    folder: Path
    orthanc_url: str = "http://127.0.0.1:9"
    routes: dict[str, str] = field(default_factory=lambda: {"prisma": "fw://lab/mri"})
    keys: dict[str, str] = field(default_factory=dict)
    extra_toml: str = ""
    reconcile_interval: float = 300.0
    # Tests poll fast; benchmarks use the shipped default of 1 s.
    poll_interval: float = 0.2
    metrics_port: int = field(default_factory=free_port)
    min_free_bytes: int = 0
    unhealthy_after: float = 120.0

    @property
    def config(self) -> Path:
        return self.folder / "hyperwheel.toml"

    @property
    def staging(self) -> Path:
        return self.folder / "export"

    @property
    def state(self) -> Path:
        return self.folder / "state" / "state.db"

    def write(self) -> "Workspace":
        self.folder.mkdir(parents=True, exist_ok=True)
        routing = self.folder / "routing.json"
        routing.write_text(json.dumps(self.routes))
        keychain = self.folder / "fw_keychain.json"
        keychain.write_text(json.dumps(self.keys))
        keychain.chmod(0o600)
        password = self.folder / "orthanc-password"
        password.write_text(orthanc_helper.PASSWORD + "\n")
        self.config.write_text(
            f"""
[orthanc]
url = "{self.orthanc_url}"
username = "{orthanc_helper.USERNAME}"
password_file = "{password}"
poll_interval = {self.poll_interval}
reconcile_interval = {self.reconcile_interval}

[paths]
staging = "{self.staging}"
state = "{self.state}"
routing = "{routing}"
keychain = "{keychain}"
min_free_bytes = {self.min_free_bytes}

[metrics]
listen = "127.0.0.1:{self.metrics_port}"
unhealthy_after = {self.unhealthy_after}
{self.extra_toml}
"""
        )
        return self

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``python -m hyperwheel ARGS --config …`` and capture its output."""
        command = [
            sys.executable,
            "-m",
            "hyperwheel",
            *args,
            "--config",
            str(self.config),
        ]
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
            cwd=REPO,
            env=clean_environment(),
        )

    def query(self, sql: str, *parameters: object) -> list[dict[str, Any]]:
        """Rows straight from the store as the service left them; [] before it."""
        if not self.state.exists():
            return []
        db = sqlite3.connect(f"file:{self.state}?mode=ro", uri=True, timeout=10)
        try:
            db.row_factory = sqlite3.Row
            rows = db.execute(sql, parameters).fetchall()
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return []
            raise
        finally:
            db.close()
        return [dict(row) for row in rows]

    def studies(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM studies ORDER BY created_at")

    def files(self, kind: str = "dicom") -> list[dict[str, Any]]:
        return self.query("SELECT * FROM files WHERE kind = ?", kind)

    def transitions(self, study_uid: str) -> list[tuple[str | None, str]]:
        """(from, to) of every journaled transition of the study, in order."""
        rows = self.query(
            "SELECT j.from_state, j.to_state FROM study_journal j "
            "JOIN studies s ON s.id = j.entity WHERE s.study_instance_uid = ? "
            "ORDER BY j.seq",
            study_uid,
        )
        return [(row["from_state"], row["to_state"]) for row in rows]

    def reached(self, study_uid: str, state: str, times: int = 1) -> bool:
        """Whether the study has entered ``state`` at least ``times`` times."""
        entered = [t for t in self.transitions(study_uid) if t[1] == state]
        return len(entered) >= times

    def state_of(self, study_uid: str) -> str | None:
        for study in self.studies():
            if study["study_instance_uid"] == study_uid:
                return str(study["state"])
        return None


def clean_environment(**extra: str) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("HYPERWHEEL_")
    }
    environment["PYTHONPATH"] = str(REPO)
    environment.update(extra)
    return environment
