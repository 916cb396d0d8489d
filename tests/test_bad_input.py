"""Bad input gets a clear answer and loses nothing: configuration files of
any shape, keychains, and DICOM without the tags the layout is built from."""

import ast
import json
import string
import tomllib
from datetime import datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperwheel import labels
from hyperwheel.routing import load_keychain, load_routes
from hyperwheel.settings import inspect_settings
from tests.helpers.dicom import SeriesSpec, StudySpec, send, write_study
from tests.helpers.orthanc import OrthancServer
from tests.helpers.service import ServiceProcess
from tests.helpers.waiting import wait_until
from tests.helpers.workspace import REPO, Workspace

_SECTIONS = ("orthanc", "paths", "scanner", "flywheel", "metrics", "bogus")
_KEYS = (
    "url",
    "poll_interval",
    "staging",
    "min_free_bytes",
    "host",
    "port",
    "client_keys",
    "listen",
    "allow_remote",
    "max_attempts",
    "password",
    "surprise",
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.lists(st.text(max_size=10), max_size=3)
)
_DOCUMENTS = st.dictionaries(
    st.sampled_from(_SECTIONS),
    st.dictionaries(st.sampled_from(_KEYS), _SCALARS, max_size=5) | _SCALARS,
    max_size=5,
)


def _toml(document: dict[str, object]) -> str:
    """TOML text for the generated shapes; TOML has no null, so None is left out."""
    top = [f"{k} = {_value(v)}" for k, v in document.items() if _plain(v)]
    tables = [
        f"[{name}]\n"
        + "".join(f"{k} = {_value(v)}\n" for k, v in body.items() if v is not None)
        for name, body in document.items()
        if isinstance(body, dict)
    ]
    return "\n".join(top) + "\n\n" + "\n".join(tables)


def _plain(value: object) -> bool:
    return value is not None and not isinstance(value, dict)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # inf and -inf are TOML too
    # JSON strings, integers and string arrays are valid TOML values.
    return json.dumps(value)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_DOCUMENTS)
def test_any_configuration_gives_settings_or_located_problems(
    tmp_path: Path, document: dict[str, object]
) -> None:
    """Never a traceback: either settings, or problems naming file and key."""
    path = tmp_path / "h.toml"
    path.write_text(_toml(document))

    settings_, problems = inspect_settings(path)

    errors = [p for p in problems if p.severity == "error"]
    assert (settings_ is None) == bool(errors)
    for problem in problems:
        assert problem.file == str(path)
        assert problem.key and problem.reason


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=string.printable, max_size=200))
def test_a_damaged_configuration_file_names_itself(tmp_path: Path, text: str) -> None:
    """Half-written TOML (a power cut mid-edit) is an error, never a crash."""
    path = tmp_path / "h.toml"
    path.write_text(text)

    settings_, problems = inspect_settings(path)

    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        assert settings_ is None
        assert problems[0].file == str(path) and "TOML" in problems[0].reason


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(
        st.text(max_size=20),
        st.none() | st.integers() | st.text(max_size=40) | st.lists(st.integers()),
        max_size=6,
    )
    | st.lists(st.integers(), max_size=3)
    | st.text(max_size=20)
)
def test_routing_and_keychain_of_any_shape_are_reported_not_echoed(
    tmp_path: Path, document: object
) -> None:
    """Every entry is a route/key or a problem; a key's value is never shown."""
    routing = tmp_path / "routing.json"
    keychain = tmp_path / "keychain.json"
    for path in (routing, keychain):
        path.write_text(json.dumps(document))
    keychain.chmod(0o600)

    routes, route_problems = load_routes(routing)
    keys, key_problems = load_keychain(keychain)

    if isinstance(document, dict):
        assert len(routes) + len(route_problems) == len(document)
        assert len(keys) + len(key_problems) == len(document)
        for problem in key_problems:
            value = document[problem.key]
            if isinstance(value, str) and len(value.strip()) > 3:
                assert value.strip() not in str(problem)
    else:
        assert not routes and not keys
        assert route_problems and key_problems


def test_missing_layout_tags_get_the_documented_fallbacks_and_a_held_reason(
    tmp_path: Path,
    orthanc: OrthancServer,
    workspace: Workspace,
    service: ServiceProcess,
) -> None:
    """No PatientID, StudyDate, SeriesNumber or OperatorsName: staged under
    'unknown' and zeros, held for the routing key, nothing deleted."""
    study = StudySpec(
        patient_id=None,
        study_date=None,
        study_time=None,
        series=[SeriesSpec(None, "T1", datetime(2026, 12, 3, 10), operators_name=None)],
    )
    paths = write_study(study, tmp_path / "sent")
    service.start()
    send(paths, orthanc.dicom_port)
    wait_until(lambda: workspace.state_of(study.uid) == "HELD", 60, "HELD")

    [staged_folder] = {p.parent for p in workspace.staging.rglob("*.dcm")}
    relative = staged_folder.relative_to(workspace.staging).parts
    assert relative == (
        labels.UNKNOWN,
        labels.UNKNOWN,
        "0000-00-00_00_00_00",
        "0 - T1",
    )
    [row] = json.loads(workspace.cli("status", "--json").stdout)
    assert "OperatorsName is empty" in row["held_reason"]
    assert len(orthanc.get("/instances")) == len(paths)


# What SQL text may interpolate: table and column names and "?" placeholder
# lists, all built from constants in the code (reviewed). A new interpolation
# fails this test until someone checks it carries no value.
_SAFE_INTERPOLATIONS = frozenset(
    {
        "STUDY_TABLE",
        "JOURNAL_TABLE",
        "_STUDY_COLUMNS",
        "journal_table",
        "state_table",
        "names",
        "where",
        "assignments",
        "updates",
        "placeholders",
        "', '.join(names)",
        "', '.join(('?' for _ in names))",
        "', '.join(('?' for _ in chunk))",
        # Schema migrations: SQL text and version numbers written in the code.
        "journal_schema(JOURNAL_TABLE)",
        "migration.sql",
        "int(migration.version)",
    }
)
_SQL_WORDS = ("SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "PRAGMA")


def test_every_sql_statement_takes_its_values_as_parameters() -> None:
    """SQL text is built from code constants only; values travel as parameters."""
    offenders = []
    code = REPO / "hyperwheel", REPO / "statemachine"
    for path in sorted(p for folder in code for p in folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.JoinedStr):
                continue
            text = "".join(
                part.value
                for part in node.values
                if isinstance(part, ast.Constant) and isinstance(part.value, str)
            )
            if not any(word in text for word in _SQL_WORDS):
                continue
            for part in node.values:
                if isinstance(part, ast.FormattedValue):
                    expression = ast.unparse(part.value)
                    if expression not in _SAFE_INTERPOLATIONS:
                        offenders.append(f"{path.name}:{node.lineno}: {expression}")

    assert not offenders, offenders
