"""Named places where the process can be made to die, for crash tests.

``HYPERWHEEL_CRASH_AT=<name>`` makes the process call ``os._exit`` when it
reaches that point: no cleanup, no flush, as close to a power cut as a test
can get. Every name lives in :data:`CRASH_POINTS`, and the crash tests iterate
over that tuple, so a point added here is tested without further work.
"""

import os
import sys
from typing import Final

from hyperwheel.study import StudyState

ENV: Final = "HYPERWHEEL_CRASH_AT"
EXIT_CODE: Final = 86

_STEP_POINTS = (
    "staging.after_download",
    "staging.after_fsync",
    "staging.after_rename",
    "staging.after_record",
    "follower.before_cursor",
    "follower.after_cursor",
    "rrdf.after_listing",
    "rrdf.after_claim",
    "scanner.after_fsync",
    "rrdf.after_durable_offset",
    "rrdf.after_pull",
    "rrdf.after_rename",
    "flywheel.before_create",
    "flywheel.after_create",
    "flywheel.after_zip",
    "flywheel.before_upload",
    "flywheel.after_upload",
    "flywheel.before_verify",
    "flywheel.after_verify",
    "purge.after_receipt",
    "purge.after_delete_instance",
    "purge.after_remove_files",
)

_TRANSITION_POINTS = tuple(
    f"transition.{state.name.lower()}.{moment}"
    for state in StudyState
    for moment in ("before_commit", "after_commit")
)

CRASH_POINTS: Final[tuple[str, ...]] = _STEP_POINTS + _TRANSITION_POINTS


def configured() -> str | None:
    """The point named in the environment; an unknown name is refused loudly."""
    name = os.environ.get(ENV) or None
    if name is not None and name not in CRASH_POINTS:
        raise ValueError(f"{ENV}={name!r} is not a crash point; see CRASH_POINTS")

    return name


# Read once: the check runs on every step, and the environment does not change.
_armed = os.environ.get(ENV) or None


def crash_point(name: str) -> None:
    """Die here if this is the armed point; otherwise cost one comparison."""
    if name not in CRASH_POINTS:
        raise AssertionError(f"crash point {name!r} is missing from CRASH_POINTS")
    if name == _armed:
        sys.stderr.write(f"hyperwheel: crashing at {name} ({ENV})\n")
        sys.stderr.flush()
        os._exit(EXIT_CODE)
