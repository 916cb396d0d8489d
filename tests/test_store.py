"""The study model on the store: every transition, holds, cycles, old databases."""

import itertools
import shutil
import sqlite3
from pathlib import Path

import pytest

from hyperwheel.schema import MIGRATIONS
from hyperwheel.store import StateStore
from hyperwheel.study import STUDY_TRANSITIONS, StudyState
from statemachine import InvalidTransition

FIXTURES = Path(__file__).parent / "fixtures"

# The moves DESIGN section 3 names; the table must hold exactly these.
EXPECTED = {
    ("RECEIVING", "STABLE"),
    ("STABLE", "RRDF_SYNCED"),
    ("RRDF_SYNCED", "UPLOADED"),
    ("UPLOADED", "VERIFIED"),
    ("VERIFIED", "PURGED"),
    ("PURGED", "RECEIVING"),
    *{(s, "RECEIVING") for s in ("STABLE", "RRDF_SYNCED", "UPLOADED", "VERIFIED")},
    *{
        (s, "HELD")
        for s in ("RECEIVING", "STABLE", "RRDF_SYNCED", "UPLOADED", "VERIFIED")
    },
    *{
        ("HELD", s)
        for s in ("RECEIVING", "STABLE", "RRDF_SYNCED", "UPLOADED", "VERIFIED")
    },
}


async def new_store(tmp_path: Path) -> StateStore:
    store = await StateStore.open(tmp_path / "state" / "state.db")
    await store.ensure_study("s1", study_instance_uid="1.2.3")
    return store


def test_study_table_is_exactly_the_designed_one() -> None:
    """No move is allowed that DESIGN does not name, and none is missing."""
    allowed = {(a.name, b.name) for a, b in STUDY_TRANSITIONS}
    assert allowed == EXPECTED


@pytest.mark.parametrize(
    ("source", "target"), list(itertools.product(StudyState, StudyState))
)
async def test_store_applies_every_study_cell(
    tmp_path: Path, source: StudyState, target: StudyState
) -> None:
    """Allowed study moves persist with a journal row; forbidden ones raise."""
    store = await new_store(tmp_path)
    await store.update_study("s1", state=source.name)

    if STUDY_TRANSITIONS.allows(source, target):
        await store.move("s1", target, "because")
        record = await store.study("s1")
        assert record is not None and record.state is target
        assert (await store.history("s1"))[-1].reason == "because"
    else:
        with pytest.raises(InvalidTransition):
            await store.move("s1", target, "because")
        record = await store.study("s1")
        assert record is not None and record.state is source
    await store.close()


async def test_hold_and_release_return_to_the_held_state(tmp_path: Path) -> None:
    """A study held in UPLOADED is released back to UPLOADED with the reason gone."""
    store = await new_store(tmp_path)
    await store.update_study("s1", state="UPLOADED", attempts=5)
    await store.hold("s1", "verify mismatch on a.dicom.zip")
    held = await store.study("s1")
    assert held is not None
    assert (held.state, held.held_from, held.held_reason) == (
        StudyState.HELD,
        StudyState.UPLOADED,
        "verify mismatch on a.dicom.zip",
    )

    assert await store.release("s1") is StudyState.UPLOADED
    released = await store.study("s1")
    assert released is not None
    assert (released.held_reason, released.held_from, released.attempts) == (
        None,
        None,
        0,
    )
    await store.close()


async def test_skip_rrdf_releases_a_raw_data_hold_past_the_pull(tmp_path: Path) -> None:
    """retry --skip-rrdf on a study held in STABLE moves it to RRDF_SYNCED."""
    store = await new_store(tmp_path)
    await store.move("s1", StudyState.STABLE, "stable")
    await store.hold("s1", "scanner unreachable for 24 h")

    assert await store.release("s1", skip_rrdf=True) is StudyState.RRDF_SYNCED
    assert "skip-rrdf" in (await store.history("s1"))[-1].reason
    await store.close()


async def test_late_instance_after_purge_starts_a_new_cycle(tmp_path: Path) -> None:
    """Reopening a PURGED study bumps its cycle; an active one keeps it."""
    store = await new_store(tmp_path)
    await store.update_study("s1", state="VERIFIED")
    await store.reopen("s1", "late instance")
    record = await store.study("s1")
    assert record is not None and (record.state, record.cycle) == (
        StudyState.RECEIVING,
        1,
    )

    await store.update_study("s1", state="PURGED")
    await store.reopen("s1", "sent again after purge")
    record = await store.study("s1")
    assert record is not None and (record.state, record.cycle) == (
        StudyState.RECEIVING,
        2,
    )
    await store.close()


async def test_late_instance_keeps_a_held_study_held(tmp_path: Path) -> None:
    """A held study stays held, but will restart from RECEIVING when released."""
    store = await new_store(tmp_path)
    await store.update_study("s1", state="RRDF_SYNCED")
    await store.hold("s1", "no route for 'x'")
    await store.reopen("s1", "late instance")

    record = await store.study("s1")
    assert record is not None
    assert (record.state, record.held_from) == (StudyState.HELD, StudyState.RECEIVING)
    await store.close()


async def test_committed_v1_database_opens_and_keeps_its_studies(
    tmp_path: Path,
) -> None:
    """The v1 fixture migrates to the current schema with its rows intact."""
    path = tmp_path / "state.db"
    shutil.copy(FIXTURES / "state-v1.db", path)

    store = await StateStore.open(path)
    record = await store.study("1.2.3.4")
    assert record is not None
    assert (record.id, record.state, record.route, record.file_count) == (
        "aaaa-v1",
        StudyState.STABLE,
        "prisma",
        1,
    )
    assert await store.get_meta("orthanc.changes_cursor") == "42"
    await store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
