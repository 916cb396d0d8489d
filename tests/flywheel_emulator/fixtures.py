"""Pytest fixtures for testing against the emulator through flywheel-sdk.

Import this module before anything imports ``flywheel``: the SDK reads its
retry settings once, at import, and the defaults sleep for minutes.  In a
``conftest.py``::

    from tests.flywheel_emulator.fixtures import (  # noqa: F401
        flywheel_client, flywheel_emulator, flywheel_seed,
    )
"""

from __future__ import annotations

import copy
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .threaded import RunningEmulator, running_emulator

GROUP = "radiology"
BRAIN_PROJECT = "radiology/Brain MRI"
SPINE_PROJECT = "radiology/Spine MRI"
BRAIN_KEY = "brain-uploader-key"
SPINE_KEY = "spine-uploader-key"

DEFAULT_SEED: dict[str, Any] = {
    "groups": [{"id": GROUP, "label": "Radiology"}],
    "projects": [
        {"group": GROUP, "label": "Brain MRI"},
        {"group": GROUP, "label": "Spine MRI"},
    ],
    "api_keys": [
        {
            "key": BRAIN_KEY,
            "user": "brain-uploader@example.org",
            "projects": [BRAIN_PROJECT],
        },
        {
            "key": SPINE_KEY,
            "user": "spine-uploader@example.org",
            "projects": [SPINE_PROJECT],
        },
    ],
}

# Retries stay on, so tests still see the SDK retry, but back off for
# milliseconds rather than the default two minutes.
FAST_SDK_ENVIRONMENT = {
    "FLYWHEEL_SDK_BACKOFF_FACTOR": "0.02",
    "FLYWHEEL_SDK_BACKOFF_MAX": "0.05",
    "FLYWHEEL_SDK_CONNECT_TIMEOUT": "5",
    "FLYWHEEL_SDK_REQUEST_TIMEOUT": "10",
}


def use_fast_sdk_settings() -> None:
    """Shorten SDK backoff and timeouts unless the environment already set them."""
    if "flywheel.rest" in sys.modules:
        warnings.warn(
            "flywheel was imported before the emulator fixtures; its retry "
            "backoff keeps the slow defaults",
            stacklevel=2,
        )
    for name, value in FAST_SDK_ENVIRONMENT.items():
        os.environ.setdefault(name, value)

    # The emulator is local; an HTTP proxy from the environment must not
    # intercept the SDK's requests to it.
    for name in ("NO_PROXY", "no_proxy"):
        hosts = [h for h in os.environ.get(name, "").split(",") if h]
        if "127.0.0.1" not in hosts:
            os.environ[name] = ",".join([*hosts, "127.0.0.1"])


use_fast_sdk_settings()


def default_seed() -> dict[str, Any]:
    """One group, two projects, one key per project."""
    return copy.deepcopy(DEFAULT_SEED)


@pytest.fixture
def flywheel_seed() -> dict[str, Any]:
    """The seed for ``flywheel_emulator``; override this fixture to change it."""
    return default_seed()


@pytest.fixture
def flywheel_emulator(
    flywheel_seed: dict[str, Any], tmp_path: Path
) -> Iterator[RunningEmulator]:
    """A running emulator, its files under ``tmp_path/flywheel``, stopped after."""
    with running_emulator(flywheel_seed, data_dir=tmp_path / "flywheel") as emulator:
        yield emulator


@pytest.fixture
def flywheel_client(flywheel_emulator: RunningEmulator) -> Iterator[Any]:
    """A ``flywheel.Client`` holding the first API key of the seed."""
    import flywheel

    first_key = flywheel_emulator.emulator.seed.keys[0].key
    client = flywheel.Client(flywheel_emulator.sdk_key(first_key))
    yield client
    client.shutdown()
