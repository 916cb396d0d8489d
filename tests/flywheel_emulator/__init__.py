"""A Flywheel API emulator for tests: a partner to test against, not Flywheel."""

from .seed import Seed, SeedError, load_seed, parse_seed
from .server import FlywheelEmulator
from .threaded import AdminClient, AdminError, RunningEmulator, running_emulator

__all__ = [
    "AdminClient",
    "AdminError",
    "FlywheelEmulator",
    "RunningEmulator",
    "Seed",
    "SeedError",
    "load_seed",
    "parse_seed",
    "running_emulator",
]
