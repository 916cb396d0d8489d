"""The state store's schema, one migration per version.

Migrations only ever append: a released version's SQL is never edited, so a
database written by any earlier package upgrades in place.
"""

from statemachine import Migration, journal_schema

STUDY_TABLE = "studies"
JOURNAL_TABLE = "study_journal"

_V1 = f"""
CREATE TABLE {STUDY_TABLE} (
    id TEXT PRIMARY KEY,               -- Orthanc's study id
    study_instance_uid TEXT,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    cycle INTEGER NOT NULL DEFAULT 1,  -- +1 each time a purged study returns
    route TEXT,                        -- the routing key (OperatorsName)
    route_problem TEXT,                -- why there is no routing key, if none
    patient_id TEXT,
    study_label TEXT,
    subject_label TEXT,
    session_label TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_at TEXT,
    last_error TEXT,
    held_reason TEXT,
    held_from TEXT
);

CREATE TABLE series (
    id TEXT PRIMARY KEY,               -- Orthanc's series id
    study_id TEXT NOT NULL REFERENCES {STUDY_TABLE}(id),
    series_instance_uid TEXT,
    series_number TEXT,
    description TEXT,
    acquisition_label TEXT NOT NULL,
    route TEXT,                        -- this series' routing key, or NULL
    started_at TEXT                    -- scanner-local ISO time, or NULL
);
CREATE INDEX series_study ON series(study_id);

CREATE TABLE files (
    id INTEGER PRIMARY KEY,
    study_id TEXT NOT NULL REFERENCES {STUDY_TABLE}(id),
    cycle INTEGER NOT NULL,
    kind TEXT NOT NULL,                -- 'dicom' (an Orthanc instance) or 'raw'
    source TEXT NOT NULL,              -- Orthanc instance id, or scanner path
    series_id TEXT,
    sop_instance_uid TEXT,
    staged_path TEXT NOT NULL,         -- relative to the staging root
    size INTEGER NOT NULL,
    sha384 TEXT NOT NULL,
    acquired_at TEXT,                  -- AcquisitionDateTime, scanner-local ISO
    content_at TEXT,                   -- ContentDate+Time, scanner-local ISO
    staged_at TEXT NOT NULL,
    uploaded_at TEXT,
    flywheel_name TEXT,
    flywheel_version INTEGER,
    verified_at TEXT,
    purged_at TEXT,
    UNIQUE (kind, source, cycle)
);
CREATE INDEX files_study ON files(study_id, cycle);

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

{journal_schema(JOURNAL_TABLE)}
"""


_V2 = f"""
-- One row per scanner raw file ever claimed: a file belongs to one study at
-- most, for good. The transfer's durable offset lives here so a pull resumes.
CREATE TABLE raw_claims (
    remote_path TEXT PRIMARY KEY,
    study_id TEXT NOT NULL REFERENCES {STUDY_TABLE}(id),
    cycle INTEGER NOT NULL,
    series_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    file_time TEXT NOT NULL,           -- scanner-local ISO time used to match
    time_source TEXT NOT NULL,         -- 'name' or 'mtime'
    staged_path TEXT NOT NULL,         -- relative to the staging root
    durable_offset INTEGER NOT NULL DEFAULT 0,
    sha384 TEXT,
    claimed_at TEXT NOT NULL,
    synced_at TEXT
);
CREATE INDEX raw_claims_study ON raw_claims(study_id, cycle);

-- Decisions worth showing a person (raw-file matching, skipped steps),
-- beside the transition journal.
CREATE TABLE study_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id TEXT NOT NULL,
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX study_events_study ON study_events(study_id, seq);

-- When the current step started failing; a step gives up after a while.
ALTER TABLE {STUDY_TABLE} ADD COLUMN failing_since TEXT;
"""

_V3 = f"""
-- Where a study lives on Flywheel, found or created once and remembered.
ALTER TABLE {STUDY_TABLE} ADD COLUMN fw_project_id TEXT;
ALTER TABLE {STUDY_TABLE} ADD COLUMN fw_subject_id TEXT;
ALTER TABLE {STUDY_TABLE} ADD COLUMN fw_session_id TEXT;
ALTER TABLE series ADD COLUMN fw_acquisition_id TEXT;
ALTER TABLE series ADD COLUMN fw_acquisition_label TEXT;
-- Upload and verify attempts of one file, for the give-up rule.
ALTER TABLE files ADD COLUMN upload_attempts INTEGER NOT NULL DEFAULT 0;
"""

MIGRATIONS = (
    Migration(1, "studies, series, files, journal, meta", _V1),
    Migration(2, "raw-data claims, study events, failing_since", _V2),
    Migration(3, "Flywheel container ids, upload attempts", _V3),
)
