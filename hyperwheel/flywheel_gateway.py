"""flywheel-sdk behind asyncio: imported lazily, bounded, in a private pool.

The SDK is synchronous and reads its retry and timeout settings from the
environment once, when imported; so those are set here first, and every call
runs in this module's own thread pool. On SIGTERM the pool is shut down
without waiting: no SDK call can hold the process (Python 3.11's
``asyncio.run`` would wait forever for the default executor).

Error handling: the SDK itself retries GET/PUT/DELETE on 429/502/503/504 a
few times; what still fails is mapped here: 401/403 to
:class:`FlywheelDenied` (a person must fix the key or the permissions), 404 to
:class:`NotFound`, timeouts, connection errors and other 5xx to
:class:`FlywheelUnavailable` (retried by the pipeline with backoff).
"""

import asyncio
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog

from hyperwheel import metrics
from hyperwheel.errors import NotFound, PermanentError, TransientError
from hyperwheel.secret import Secret

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Short SDK-level retries: the pipeline retries for longer, with backoff, and
# a shutdown must never wait minutes for an SDK sleep.
SDK_ENVIRONMENT = {
    "FLYWHEEL_SDK_CONNECT_TIMEOUT": "15",
    "FLYWHEEL_SDK_REQUEST_TIMEOUT": "60",
    "FLYWHEEL_SDK_TOTAL_RETRIES": "3",
    "FLYWHEEL_SDK_BACKOFF_MAX": "8",
}


class FlywheelUnavailable(TransientError):
    """Flywheel did not answer usefully: timeout, connection, 5xx."""


class FlywheelDenied(PermanentError):
    """The key was refused (401) or may not do this (403)."""


def import_flywheel() -> Any:
    """The ``flywheel`` module, with our settings in place before its import."""
    for name, value in SDK_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    import flywheel

    return flywheel


class FlywheelGateway:
    """Runs SDK calls in threads; one SDK client per API key."""

    def __init__(self, max_workers: int = 4) -> None:
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="flywheel")
        self._clients: dict[Secret, Any] = {}
        self._lock = threading.Lock()

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one SDK call in the pool, mapping its errors to ours."""
        loop = asyncio.get_running_loop()
        work = functools.partial(self._mapped, function, *args, **kwargs)

        return await loop.run_in_executor(self._pool, work)

    async def client(self, key: Secret) -> Any:
        """The SDK client for ``key``; building it checks the key (one GET)."""
        return await self.call(self._client_for, key)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for client in self._clients.values():
            shutdown = getattr(client, "shutdown", None)
            if shutdown is not None:
                shutdown()
        self._clients.clear()

    def _client_for(self, key: Secret) -> Any:
        with self._lock:
            if key not in self._clients:
                flywheel = import_flywheel()
                self._clients[key] = flywheel.Client(key.reveal())
            return self._clients[key]

    def forget(self, key: Secret) -> None:
        """Drop a cached client, so a fixed key is checked afresh."""
        with self._lock:
            self._clients.pop(key, None)

    def _mapped(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        flywheel = import_flywheel()
        try:
            return function(*args, **kwargs)
        except flywheel.ApiException as error:
            raise self._translate(error) from None
        except (OSError, TimeoutError) as error:
            raise FlywheelUnavailable(f"Flywheel unreachable: {error}") from None
        except Exception as error:
            if type(error).__module__.startswith(("httpx", "httpcore")):
                raise FlywheelUnavailable(
                    f"Flywheel unreachable: {type(error).__name__}: {error}"
                ) from None
            raise

    def _translate(self, error: Any) -> Exception:
        status = int(getattr(error, "status", 0) or 0)
        detail = getattr(error, "detail", None) or getattr(error, "reason", "")
        if status in (401, 403):
            metrics.AUTH_FAILURES.inc()
            what = "refused the API key" if status == 401 else "denied access"
            return FlywheelDenied(f"Flywheel {what} ({status}): {detail}")
        if status == 404:
            return NotFound(f"Flywheel: not found: {detail}")
        if status == 409:
            return FlywheelUnavailable(f"Flywheel conflict (409): {detail}")
        if 400 <= status < 500:
            return PermanentError(f"Flywheel refused the request ({status}): {detail}")

        return FlywheelUnavailable(
            f"Flywheel error ({status or 'no status'}): {detail}"
        )
