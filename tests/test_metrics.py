"""Summaries of the store as Prometheus sees them."""

from datetime import UTC, datetime

import pytest

from hyperwheel import metrics
from hyperwheel.metrics import held_cause
from hyperwheel.store import StudyRecord
from hyperwheel.study import StudyState


@pytest.mark.parametrize(
    ("reason", "cause"),
    [
        ("upload: no route for 'x' in /etc/hyperwheel/routing.json", "unroutable"),
        ("upload: no routing key: OperatorsName is empty", "unroutable"),
        (
            "upload: no API key for 'x' in /etc/hyperwheel/fw_keychain.json",
            "no api key",
        ),
        ("raw data: scanner unreachable (failing since …)", "raw data"),
        ("verify: verification failed after 5 upload(s)", "verify"),
        ("something a person wrote by hand", "other"),
        (None, "other"),
    ],
)
def test_held_reasons_become_a_few_bounded_labels(
    reason: str | None, cause: str
) -> None:
    assert held_cause(reason) == cause


def record(**fields: object) -> StudyRecord:
    defaults: dict[str, object] = dict.fromkeys(StudyRecord.__dataclass_fields__, None)
    defaults.update(
        state=StudyState.RECEIVING,
        created_at="2026-12-03T10:00:00.000Z",
        updated_at="2026-12-03T10:00:00.000Z",
        cycle=1,
        attempts=0,
        file_count=0,
        byte_count=0,
    )
    defaults.update(fields)
    return StudyRecord(**defaults)  # type: ignore[arg-type]


def test_state_gauges_count_studies_and_age_the_oldest_unfinished() -> None:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    studies = [
        record(id="a", state=StudyState.PURGED),
        record(id="b", updated_at="2026-12-03T11:00:00.000Z"),
        record(
            id="c",
            state=StudyState.HELD,
            held_reason="upload: no routing key: OperatorsName is empty",
        ),
    ]

    metrics.describe_studies(studies, now)

    assert metrics.STUDIES.labels(state="PURGED")._value.get() == 1
    assert metrics.STUDIES.labels(state="RECEIVING")._value.get() == 1
    assert metrics.STUDIES.labels(state="VERIFIED")._value.get() == 0
    assert metrics.HELD.labels(reason="unroutable")._value.get() == 1
    assert metrics.OLDEST_UNFINISHED._value.get() == 3600
