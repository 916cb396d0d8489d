"""``hyperwheel run`` as a real subprocess: started, crashed, restarted, stopped."""

import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hyperwheel.crashpoints import ENV as CRASH_ENV
from hyperwheel.crashpoints import EXIT_CODE as CRASH_EXIT
from tests.helpers.workspace import REPO, Workspace, clean_environment


@dataclass
class ServiceProcess:
    workspace: Workspace
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.workspace.folder / "service.log"

    def start(
        self, crash_at: str | None = None, environment: dict[str, str] | None = None
    ) -> "ServiceProcess":
        assert self.process is None or self.process.poll() is not None
        extra = {CRASH_ENV: crash_at} if crash_at else {}
        extra.update(environment or {})
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hyperwheel",
                    "run",
                    "--config",
                    str(self.workspace.config),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=clean_environment(**extra),
            )
        self.starts += 1
        return self

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def crashed(self) -> bool:
        return self.process is not None and self.process.poll() == CRASH_EXIT

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM and wait; the exit code, or None if it was not running."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
                raise
        code = self.process.returncode
        return code

    def log(self) -> str:
        return (
            self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        )


def crash_and_restart(service: ServiceProcess, point: str, timeout: float = 60) -> None:
    """Run until ``point`` kills the process, then start it again normally.

    Fails if the point is never reached: a crash test that does not crash
    would pass without testing anything.
    """
    service.start(crash_at=point)
    code = service.wait_exit(timeout)
    assert code == CRASH_EXIT, (
        f"expected a crash at {point}, exit {code}:\n" + (service.log()[-3000:])
    )
    service.start()
