"""Configuration: every problem reported at once, secrets never shown."""

import json
from pathlib import Path

import pytest

from hyperwheel.errors import ConfigError
from hyperwheel.routing import load_keychain, load_routes
from hyperwheel.settings import inspect_settings, load_settings
from tests.helpers.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_fill_every_missing_key(tmp_path: Path) -> None:
    """An almost empty file gets the documented defaults."""
    settings = load_settings(write(tmp_path / "h.toml", "[orthanc]\n"))

    assert settings.orthanc.url == "http://127.0.0.1:8042"
    assert settings.orthanc.poll_interval == 1.0
    assert settings.orthanc.reconcile_interval == 300
    assert str(settings.paths.staging) == "/var/lib/orthanc/export"
    assert settings.paths.min_free_bytes == 2147483648
    assert settings.scanner is None
    assert settings.flywheel.max_attempts == 5
    assert settings.metrics.listen == "127.0.0.1:9108"


def test_example_config_only_lacks_the_installed_password_file() -> None:
    """The shipped example is valid apart from the file an install creates."""
    _, problems = inspect_settings(REPO / "config" / "hyperwheel.toml")

    assert [(p.key, p.reason.split(":")[0]) for p in problems] == [
        ("orthanc.password_file", "cannot read /etc/hyperwheel/orthanc-password")
    ]


def test_every_problem_is_listed_with_file_key_and_reason(tmp_path: Path) -> None:
    """Unknown keys, wrong types, relative paths and missing required keys, at once."""
    path = write(
        tmp_path / "h.toml",
        """
[orthanc]
url = "ftp://x"
poll_interval = "fast"
colour = "blue"

[paths]
staging = "relative/export"

[scanner]
host = "scanner"
port = 70000

[nonsense]
""",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    found = {(p.key, p.reason.split(" ")[0]) for p in caught.value.problems}
    assert ("orthanc.url", "must") in found
    assert ("orthanc.poll_interval", "must") in found
    assert ("orthanc.colour", "unknown") in found
    assert ("paths.staging", "must") in found
    assert ("scanner.port", "must") in found
    assert ("scanner.username", "required") in found
    assert ("scanner.rrdf_root", "required") in found
    assert ("nonsense", "unknown") in found
    assert all(p.file == str(path) for p in caught.value.problems)


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    """A syntax error stops loading with the file and the TOML message."""
    path = write(tmp_path / "h.toml", "[orthanc\nurl=")
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load_settings(path)
    assert str(path) in str(caught.value)


def test_password_never_appears_in_repr_or_errors(tmp_path: Path) -> None:
    """The Orthanc password is masked in the settings' repr."""
    path = write(
        tmp_path / "h.toml",
        '[orthanc]\nusername = "u"\npassword = "hunter2-very-secret"\n',
    )
    settings = load_settings(path)

    assert "hunter2-very-secret" not in repr(settings)
    assert settings.orthanc.password is not None
    assert settings.orthanc.password.reveal() == "hunter2-very-secret"


def test_keychain_readable_by_others_is_refused(tmp_path: Path) -> None:
    """Mode 0644 on the keychain is an error; 0640 is fine."""
    keychain = write(tmp_path / "k.json", json.dumps({"prisma": "host:secretkey123"}))
    keychain.chmod(0o644)
    keys, problems = load_keychain(keychain)
    assert keys == {} and "chmod" in problems[0].reason

    keychain.chmod(0o640)
    keys, problems = load_keychain(keychain)
    assert problems == [] and keys["prisma"].reveal() == "host:secretkey123"


def test_malformed_keychain_error_does_not_echo_the_key(tmp_path: Path) -> None:
    """A JSON error in the keychain is located without printing its content."""
    keychain = write(tmp_path / "k.json", '{"prisma": "host:leaky-key-987" ')
    keychain.chmod(0o600)
    _, problems = load_keychain(keychain)

    assert "line 1" in problems[0].reason
    assert "leaky-key-987" not in str(problems[0])


def test_bad_routes_are_reported(tmp_path: Path) -> None:
    """Routes must be fw://group/project; each bad one is named."""
    routing = write(
        tmp_path / "r.json",
        json.dumps({"ok": "fw://lab/mri", "bad": "lab/mri", " ": "fw://a/b"}),
    )
    routes, problems = load_routes(routing)

    assert str(routes["ok"]) == "fw://lab/mri"
    assert {p.key for p in problems} == {"bad", "' '"}


def test_check_config_lists_every_problem_and_fails(tmp_path: Path) -> None:
    """check-config prints all errors (config, routing, keychain) and exits 1."""
    workspace = Workspace(tmp_path, routes={"x": "nowhere"}).write()
    (tmp_path / "fw_keychain.json").chmod(0o666)
    workspace.config.write_text(workspace.config.read_text() + "\n[flywheel]\nport=1\n")

    result = workspace.cli("check-config", check=False)

    assert result.returncode == 1
    assert "flywheel.port: unknown key" in result.stderr
    assert "routing.json: x: must be 'fw://" in result.stderr
    assert "fw_keychain.json: -: mode 0666" in result.stderr


def test_check_config_empty_keychain_is_only_a_warning(tmp_path: Path) -> None:
    """A fresh install ({} keychain) passes check-config with a warning."""
    workspace = Workspace(tmp_path, keys={}).write()

    result = workspace.cli("check-config", check=False)

    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stderr and "keychain is empty" in result.stderr


def test_run_with_malformed_config_stops_naming_file_key_reason(tmp_path: Path) -> None:
    """`hyperwheel run` refuses to start on a bad config and says why."""
    workspace = Workspace(tmp_path).write()
    workspace.config.write_text("[orthanc]\npoll_interval = -1\n")

    result = workspace.cli("run", check=False)

    assert result.returncode == 1
    assert (
        f"{workspace.config}: orthanc.poll_interval: must be greater" in result.stderr
    )


@pytest.mark.parametrize(
    ("listen", "allow_remote", "refused"),
    [
        ("0.0.0.0:9108", False, True),
        ("192.0.2.7:9108", False, True),
        ("0.0.0.0:9108", True, False),
        ("[::1]:9108", False, False),
        ("localhost:9108", False, False),
        ("127.0.0.2:9108", False, False),
    ],
)
def test_status_page_beyond_loopback_needs_an_explicit_yes(
    tmp_path: Path, listen: str, allow_remote: bool, refused: bool
) -> None:
    """It shows subject labels: serving it to the network must be a decision."""
    text = (
        f'[metrics]\nlisten = "{listen}"\nallow_remote = {str(allow_remote).lower()}\n'
    )

    settings, problems = inspect_settings(write(tmp_path / "h.toml", text))

    assert (settings is None) is refused
    assert [p.key for p in problems] == (["metrics.listen"] if refused else [])
    if refused:
        assert "allow_remote" in problems[0].reason
