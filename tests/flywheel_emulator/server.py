"""The emulator itself: an aiohttp application speaking Flywheel's API."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from .admin_routes import add_admin_routes
from .blobs import BlobStore
from .container_routes import add_container_routes
from .faults import FaultPlan, parse_plan
from .file_routes import add_file_routes
from .ids import ObjectIdFactory
from .journal import RequestJournal
from .keys import KeyGrant, KeyRing
from .middlewares import error_middleware, fault_middleware, journal_middleware
from .seed import Seed, parse_seed
from .state import STATE_KEY, EmulatorState, write_snapshot
from .store import Store

SNAPSHOT_NAME = "state.json"
# Long enough for an in-flight request to finish, short enough that stopping
# never stalls a test run.
SHUTDOWN_GRACE_SECONDS = 1.0


class FlywheelEmulator:
    """A Flywheel API look-alike for tests and demos; not Flywheel.

    ``data_dir`` keeps file contents and a ``state.json`` snapshot of the tree
    there for inspection; without it a temporary folder is used and removed
    on stop.  ``faults`` takes the same JSON as ``POST /__admin/faults``.
    """

    def __init__(
        self,
        seed: Seed | Mapping[str, Any],
        *,
        data_dir: Path | None = None,
        faults: Mapping[str, Any] | None = None,
        fault_seed: int = 0,
        signed_url: bool = False,
    ) -> None:
        self.seed = seed if isinstance(seed, Seed) else parse_seed(seed)
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._fault_plan = FaultPlan(seed=fault_seed)
        if faults is not None:
            rules, plan_seed = parse_plan(faults)
            self._fault_plan.replace(rules, plan_seed)
        self._signed_url = signed_url

        self._state: EmulatorState | None = None
        self._runner: web.AppRunner | None = None
        self._temporary_root: Path | None = None
        self._write_snapshot: Callable[[], None] | None = None
        self._host = "127.0.0.1"
        self._port: int | None = None

    @property
    def state(self) -> EmulatorState:
        if self._state is None:
            raise RuntimeError("the emulator has not been started")
        return self._state

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the emulator has not been started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def sdk_key(self, key: str) -> str:
        """The string ``flywheel.Client`` needs to reach this emulator with ``key``."""
        return f"{self._host}:{self.port}:__force_insecure:{key}"

    def sdk_key_for(self, project_path: str) -> str:
        """An SDK key string for the first seeded key granted ``group/label``."""
        keys = self.seed.keys_for_project(project_path)
        if not keys:
            raise KeyError(f"no seeded api key may touch {project_path!r}")
        return self.sdk_key(keys[0].key)

    def dump(self) -> dict[str, Any]:
        """Same document as ``GET /__admin/dump``."""
        return self.state.dump()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")

        self._state = self._build_state()
        if self._write_snapshot is not None:
            self._write_snapshot()

        app = web.Application(
            middlewares=[journal_middleware, error_middleware, fault_middleware]
        )
        app[STATE_KEY] = self._state
        add_container_routes(app)
        add_file_routes(app)
        add_admin_routes(app)

        # Handlers must outlive a client that gave up, or a request held by
        # the timeout fault could never commit after the client left.
        runner = web.AppRunner(
            app,
            access_log=None,
            handler_cancellation=False,
            shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()

        self._runner = runner
        self._host = host
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is None:
            return
        self.state.stopping.set()
        await self._runner.cleanup()
        self._runner = None

        if self._temporary_root is not None:
            shutil.rmtree(self._temporary_root, ignore_errors=True)
            self._temporary_root = None

    def _build_state(self) -> EmulatorState:
        root = self._storage_root()
        ids = ObjectIdFactory()
        store = Store(ids, on_change=self._snapshotter(root))
        project_ids = self._plant_seed(store)

        grants = [
            KeyGrant(
                key=key.key,
                user=key.user,
                project_ids=frozenset(project_ids[path] for path in key.projects),
            )
            for key in self.seed.keys
        ]
        return EmulatorState(
            ids=ids,
            store=store,
            blobs=BlobStore(root / "blobs"),
            keys=KeyRing(grants),
            faults=self._fault_plan,
            journal=RequestJournal(),
            signed_url=self._signed_url,
            stopping=asyncio.Event(),
        )

    def _storage_root(self) -> Path:
        if self._data_dir is not None:
            self._data_dir.mkdir(parents=True, exist_ok=True)
            return self._data_dir
        self._temporary_root = Path(tempfile.mkdtemp(prefix="flywheel-emulator-"))
        return self._temporary_root

    def _snapshotter(self, root: Path) -> Callable[[], None] | None:
        if self._data_dir is None:
            return None
        snapshot_path = root / SNAPSHOT_NAME

        def write() -> None:
            if self._state is not None:
                write_snapshot(snapshot_path, self._state.dump())

        self._write_snapshot = write
        return write

    def _plant_seed(self, store: Store) -> dict[str, str]:
        groups = {
            group.id: store.add_group(group.id, group.label)
            for group in self.seed.groups
        }
        project_ids = {}
        for project in self.seed.projects:
            created = store.add_project(
                groups[project.group], project.label, project.id
            )
            project_ids[project.path] = created.id
        return project_ids
