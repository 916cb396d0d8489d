"""Running the emulator on a background thread, for synchronous SDK tests.

The flywheel SDK blocks, so the emulator's event loop has to live on a
thread of its own.  Tests steer it over HTTP through ``/__admin/`` exactly
as they would a separately started emulator.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .seed import Seed
from .server import FlywheelEmulator

START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 10.0
ADMIN_TIMEOUT_SECONDS = 10.0


class AdminError(RuntimeError):
    """An admin call was refused; the message carries the emulator's reason."""


class AdminClient:
    """Blocking access to the ``/__admin/`` endpoints of one emulator."""

    def __init__(self, base_url: str) -> None:
        if not base_url.startswith("http://"):
            raise ValueError(f"the emulator is served over http://, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        # The emulator is always local; a proxy from the environment must not
        # get between a test and its emulator.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def dump(self) -> dict[str, Any]:
        """The whole tree with every file version, plus key revocation states."""
        return dict(self._call("GET", "/__admin/dump"))

    def set_faults(
        self, rules: list[Mapping[str, Any]], seed: int | None = None
    ) -> dict[str, Any]:
        """Replace all fault rules (see ``faults.py`` for the rule fields)."""
        body: dict[str, Any] = {"rules": list(rules)}
        if seed is not None:
            body["seed"] = seed
        return dict(self._call("POST", "/__admin/faults", body))

    def clear_faults(self) -> None:
        self._call("DELETE", "/__admin/faults")

    def faults(self) -> dict[str, Any]:
        """Active rules with how often each has fired."""
        return dict(self._call("GET", "/__admin/faults"))

    def set_signed_url(self, enabled: bool) -> None:
        """Switch the ``signed_url`` feature advertised by ``/api/config``."""
        self._call("POST", "/__admin/features", {"signed_url": enabled})

    def revoke_key(self, key: str) -> None:
        self._call("POST", "/__admin/keys/revoke", {"key": key})

    def restore_key(self, key: str) -> None:
        self._call("POST", "/__admin/keys/restore", {"key": key})

    def requests(self) -> list[dict[str, Any]]:
        """Every API request seen so far, oldest first."""
        return list(self._call("GET", "/__admin/requests"))

    def clear_requests(self) -> None:
        self._call("DELETE", "/__admin/requests")

    def wait_for_dump(
        self,
        condition: Callable[[dict[str, Any]], bool],
        timeout: float = 5.0,
        interval: float = 0.02,
    ) -> dict[str, Any]:
        """Poll the dump until ``condition`` holds; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            document = self.dump()
            if condition(document):
                return document
            if time.monotonic() >= deadline:
                raise TimeoutError(f"dump did not satisfy the condition in {timeout}s")
            time.sleep(interval)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        # The scheme is pinned to http:// in __init__.
        request = urllib.request.Request(  # noqa: S310
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with self._opener.open(request, timeout=ADMIN_TIMEOUT_SECONDS) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")
            raise AdminError(f"{method} {path} -> {error.code}: {detail}") from error


@dataclass
class RunningEmulator:
    """Handle on an emulator serving from a background thread."""

    emulator: FlywheelEmulator
    admin: AdminClient

    @property
    def port(self) -> int:
        return self.emulator.port

    @property
    def url(self) -> str:
        return self.emulator.url

    @property
    def api_url(self) -> str:
        return self.emulator.api_url

    def sdk_key(self, key: str) -> str:
        """``"127.0.0.1:PORT:__force_insecure:KEY"`` for ``flywheel.Client``."""
        return self.emulator.sdk_key(key)

    def sdk_key_for(self, project_path: str) -> str:
        """SDK key string of the first seeded key granted ``group/label``."""
        return self.emulator.sdk_key_for(project_path)


@contextmanager
def running_emulator(
    seed: Seed | Mapping[str, Any],
    *,
    data_dir: Path | None = None,
    faults: Mapping[str, Any] | None = None,
    fault_seed: int = 0,
    signed_url: bool = False,
) -> Iterator[RunningEmulator]:
    """Serve an emulator on 127.0.0.1 (free port) for the ``with`` block."""
    emulator = FlywheelEmulator(
        seed,
        data_dir=data_dir,
        faults=faults,
        fault_seed=fault_seed,
        signed_url=signed_url,
    )
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failures: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(emulator.start())
        except BaseException as error:
            failures.append(error)
            started.set()
            loop.close()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=serve, name="flywheel-emulator", daemon=True)
    thread.start()
    if not started.wait(START_TIMEOUT_SECONDS):
        raise RuntimeError("the Flywheel emulator did not start in time")
    if failures:
        thread.join(STOP_TIMEOUT_SECONDS)
        raise failures[0]

    try:
        yield RunningEmulator(emulator=emulator, admin=AdminClient(emulator.url))
    finally:
        stopping = asyncio.run_coroutine_threadsafe(emulator.stop(), loop)
        try:
            stopping.result(STOP_TIMEOUT_SECONDS)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(STOP_TIMEOUT_SECONDS)
