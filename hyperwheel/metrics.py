"""Prometheus instruments, all in one registry of hyperwheel's own.

Counters are incremented where the work happens. Gauges that describe the
store (studies by state, the oldest unfinished study, held reasons) are set
at scrape time by :func:`describe_studies`, so they cannot drift from what
``hyperwheel status`` shows.
"""

import platform
import re
from datetime import UTC, datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from hyperwheel import __version__
from hyperwheel.store import StudyRecord
from hyperwheel.study import UNFINISHED, StudyState

REGISTRY = CollectorRegistry(auto_describe=True)

BUILD = Info("hyperwheel_build", "Version of the running service", registry=REGISTRY)
BUILD.info({"version": __version__, "python": platform.python_version()})

STUDIES = Gauge(
    "hyperwheel_studies", "Studies in each state", ["state"], registry=REGISTRY
)
OLDEST_UNFINISHED = Gauge(
    "hyperwheel_oldest_unfinished_study_age_seconds",
    "Time since the oldest study not yet purged or held last changed state",
    registry=REGISTRY,
)
HELD = Gauge(
    "hyperwheel_held_studies",
    "Held studies by the step or cause that held them",
    ["reason"],
    registry=REGISTRY,
)
INSTANCES_STAGED = Counter(
    "hyperwheel_instances_staged_total",
    "DICOM instances copied into the staging tree",
    registry=REGISTRY,
)
RAW_BYTES_PULLED = Counter(
    "hyperwheel_raw_pulled_bytes_total",
    "Bytes of raw research data pulled from the scanner",
    registry=REGISTRY,
)
UPLOADED_BYTES = Counter(
    "hyperwheel_uploaded_bytes_total",
    "Bytes uploaded to Flywheel",
    registry=REGISTRY,
)
FILES_VERIFIED = Counter(
    "hyperwheel_files_verified_total",
    "Files whose name, size and hash matched on Flywheel",
    registry=REGISTRY,
)
VERIFY_MISMATCHES = Counter(
    "hyperwheel_verify_mismatches_total",
    "Files that were missing or different on Flywheel when verified",
    registry=REGISTRY,
)
PURGES = Counter(
    "hyperwheel_purges_total", "Studies purged after verification", registry=REGISTRY
)
INSTANCES_DELETED = Counter(
    "hyperwheel_instances_deleted_total",
    "Verified instances deleted from Orthanc",
    registry=REGISTRY,
)
STEP_ERRORS = Counter(
    "hyperwheel_step_errors_total",
    "Failed attempts of a pipeline step, by step and error kind",
    ["step", "kind"],
    registry=REGISTRY,
)
AUTH_FAILURES = Counter(
    "hyperwheel_flywheel_auth_failures_total",
    "Flywheel calls refused for the API key (401 or 403)",
    registry=REGISTRY,
)
FLYWHEEL_FAILED_CALLS = Counter(
    "hyperwheel_flywheel_failed_calls_total",
    "Flywheel creates and uploads that failed (5xx, timeout, no answer)",
    ["call"],
    registry=REGISTRY,
)
STEP_DURATION = Histogram(
    "hyperwheel_step_duration_seconds",
    "Time one pipeline step took, successful or not",
    ["step"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
    registry=REGISTRY,
)
FEED_CURSOR = Gauge(
    "hyperwheel_change_feed_cursor",
    "Last Orthanc change fully handled",
    registry=REGISTRY,
)
FEED_LAG = Gauge(
    "hyperwheel_change_feed_lag_changes",
    "Orthanc changes not yet handled",
    registry=REGISTRY,
)
ORTHANC_UP = Gauge(
    "hyperwheel_orthanc_up", "1 while Orthanc answers, 0 otherwise", registry=REGISTRY
)
STAGING_FREE = Gauge(
    "hyperwheel_staging_free_bytes",
    "Free bytes on the file system of the staging root",
    registry=REGISTRY,
)
DISK_GUARD = Gauge(
    "hyperwheel_disk_guard_active",
    "1 while staging and raw pulls wait for free space, 0 otherwise",
    registry=REGISTRY,
)
HEALTHY = Gauge(
    "hyperwheel_healthy", "1 while /healthz answers 200, 0 otherwise", registry=REGISTRY
)

# Free-text held reasons would make a label per study; the part before the
# first colon names the step or cause ("upload", "routing", ...).
_REASON_PREFIX = re.compile(r"^([a-z][a-z _-]{0,30}):")
# Held before any upload: these need routing.json or the keychain fixed.
_ROUTING_CAUSES = (
    ("no routing key", "unroutable"),
    ("no route for", "unroutable"),
    ("no api key for", "no api key"),
)


def describe_studies(studies: list[StudyRecord], now: datetime | None = None) -> None:
    """Set the gauges that summarise the store from this list of all studies."""
    now = now or datetime.now(UTC)

    counts = dict.fromkeys((state.name for state in StudyState), 0)
    held: dict[str, int] = {}
    oldest = 0.0
    for study in studies:
        counts[study.state.name] += 1
        if study.state is StudyState.HELD:
            cause = held_cause(study.held_reason)
            held[cause] = held.get(cause, 0) + 1
        if study.state in UNFINISHED:
            oldest = max(oldest, _age_seconds(study.updated_at, now))

    for state, count in counts.items():
        STUDIES.labels(state=state).set(count)
    HELD.clear()
    for cause, count in held.items():
        HELD.labels(reason=cause).set(count)
    OLDEST_UNFINISHED.set(oldest)


def held_cause(reason: str | None) -> str:
    """A short, bounded label for why a study is held."""
    text = (reason or "").lower()
    for phrase, cause in _ROUTING_CAUSES:
        if phrase in text:
            return cause
    match = _REASON_PREFIX.match(text)

    return match.group(1).strip() if match else "other"


def exposition() -> bytes:
    return generate_latest(REGISTRY)


def _age_seconds(stamp: str, now: datetime) -> float:
    then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    return max(0.0, (now - then).total_seconds())
