"""The study life cycle: its states and the one table of allowed moves."""

from enum import Enum

from statemachine import TransitionTable


class StudyState(Enum):
    RECEIVING = "RECEIVING"
    STABLE = "STABLE"
    RRDF_SYNCED = "RRDF_SYNCED"
    UPLOADED = "UPLOADED"
    VERIFIED = "VERIFIED"
    PURGED = "PURGED"
    HELD = "HELD"


R, S, Y, U, V, P, H = (
    StudyState.RECEIVING,
    StudyState.STABLE,
    StudyState.RRDF_SYNCED,
    StudyState.UPLOADED,
    StudyState.VERIFIED,
    StudyState.PURGED,
    StudyState.HELD,
)

# States from which work is still owed; a study in one of them may be held,
# and a late instance sends it back to RECEIVING.
UNFINISHED = frozenset({R, S, Y, U, V})

STUDY_TRANSITIONS: TransitionTable[StudyState] = TransitionTable.from_mapping(
    StudyState,
    {
        R: {S, H},
        S: {Y, R, H},
        Y: {U, R, H},
        U: {V, R, H},
        V: {P, R, H},
        P: {R},
        # Released by `hyperwheel retry`: back where it was held, or past the
        # raw-data step with --skip-rrdf.
        H: {R, S, Y, U, V},
    },
)
