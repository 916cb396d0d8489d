"""Makes the emulator fixtures available to the tests in this folder."""

from .fixtures import flywheel_client, flywheel_emulator, flywheel_seed

__all__ = ["flywheel_client", "flywheel_emulator", "flywheel_seed"]
