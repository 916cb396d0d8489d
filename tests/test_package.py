"""The Debian package: its parts, its builds for amd64 and arm64, and a real
install with apt, a run beside the real Orthanc, then remove and purge.

Slow tests build the packages (``HYPERWHEEL_DEB`` / ``HYPERWHEEL_DEB_ARM64``
name ready ones to reuse), install them as root and always purge them.
"""

import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers.dicom import send, three_series_study, write_study
from tests.helpers.package import (
    DROP_IN,
    MACHINES,
    ORTHANC_FOLDER,
    PACKAGE,
    PASSWORD_FILE,
    REPO,
    PackagedOrthanc,
    apt_get,
    as_service_user,
    build_deb,
    elf_machine,
    installed_package,
    package_state,
    require_tools,
    run,
    stop,
)
from tests.helpers.ports import free_port
from tests.helpers.sshd import RAW_FOLDER, SshdServer
from tests.helpers.waiting import wait_until

PACKAGING = REPO / "packaging"
UNIT = PACKAGING / "debian" / "hyperwheel.service"
ETC = Path("/etc/hyperwheel")
STATE = Path("/var/lib/hyperwheel")
STAGING = Path("/var/lib/orthanc/export")
VENV = "usr/lib/hyperwheel/venv"
SITE = f"{VENV}/lib/python3.11/site-packages"
# Each line sets a key, or shows one commented out: "# timezone = ...".
_KEY_LINE = re.compile(r"^#?\s*([a-z_]+)\s*=", re.MULTILINE)


def _configure_module() -> ModuleType:
    path = PACKAGING / "files" / "configure.py"
    spec = importlib.util.spec_from_file_location("hyperwheel_configure", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    return module


configure = _configure_module()


def _deb(arch: str, variable: str, factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get(variable)
    if not given:
        return build_deb(arch, factory.mktemp(f"deb-{arch}"))
    deb = Path(given)
    if not deb.is_file():
        pytest.fail(f"{variable}={given}: no such file")
    # build-deb lints what it builds; a package made elsewhere is linted here.
    require_tools("lintian")
    run("lintian", "--fail-on", "error,warning", str(deb))

    return deb


@pytest.fixture(scope="session")
def amd64_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _deb("amd64", "HYPERWHEEL_DEB", tmp_path_factory)


@pytest.fixture(scope="session")
def arm64_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _deb("arm64", "HYPERWHEEL_DEB_ARM64", tmp_path_factory)


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A temporary folder user orthanc can enter (pytest's are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="hyperwheel-package-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def staging_restored() -> Iterator[None]:
    """Purge keeps the staging folder by design; the test takes back its own."""
    before = set(STAGING.iterdir()) if STAGING.exists() else None
    try:
        yield
    finally:
        if before is None:
            shutil.rmtree(STAGING, ignore_errors=True)
        elif STAGING.exists():
            for made in set(STAGING.iterdir()) - before:
                shutil.rmtree(made, ignore_errors=True)


def _mode(path: Path) -> tuple[str, str, int]:
    info = path.stat()
    return path.owner(), path.group(), stat.S_IMODE(info.st_mode)


# The parts, without building anything.


def test_changelog_version_is_the_project_version() -> None:
    """debian/changelog names the version pyproject.toml gives hyperwheel."""
    from hyperwheel import __version__

    changelog = (PACKAGING / "debian" / "changelog").read_text()
    with open(REPO / "pyproject.toml", "rb") as handle:
        project = tomllib.load(handle)["project"]

    assert changelog.startswith(f"hyperwheel ({__version__}) ")
    assert project["version"] == __version__


def test_service_unit_exposure_is_at_most_two() -> None:
    """systemd-analyze rates the unit's exposure at 2.0 or less."""
    require_tools("systemd-analyze")
    result = run(
        "systemd-analyze", "security", "--offline=true", "--threshold=20", str(UNIT)
    )

    level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert level is not None, result.stdout
    assert float(level.group(1)) <= 2.0


def test_packaged_config_names_every_documented_key() -> None:
    """The installed hyperwheel.toml shows every key config/ documents."""
    documented = set(_KEY_LINE.findall((REPO / "config/hyperwheel.toml").read_text()))
    packaged_text = (PACKAGING / "files" / "hyperwheel.toml").read_text()
    packaged = tomllib.loads(packaged_text)

    assert documented <= set(_KEY_LINE.findall(packaged_text))
    assert packaged["paths"]["staging"] == str(STAGING)
    assert packaged["paths"]["state"] == str(STATE / "state.db")
    assert packaged["orthanc"]["password_file"] == str(PASSWORD_FILE)
    assert packaged["scanner"]["client_keys"] == [str(ETC / "scanner_ed25519")]


def test_packaging_scripts_pass_shellcheck() -> None:
    """The build scripts, maintainer scripts and the command wrapper."""
    require_tools("shellcheck")
    debian = PACKAGING / "debian"
    scripts = [
        PACKAGING / "build-deb",
        PACKAGING / "update-lock",
        PACKAGING / "files" / "hyperwheel",
        *(debian / f"hyperwheel.{name}" for name in ("postinst", "prerm", "postrm")),
    ]

    run("shellcheck", *map(str, scripts))


def test_orthanc_comments_are_removed_but_not_inside_strings() -> None:
    """// and /* */ comments go; a // inside a string stays."""
    text = '{ /* note */ "Url": "http://x//y", // end\n "N": 1 }'

    assert json.loads(configure.strip_comments(text)) == {"Url": "http://x//y", "N": 1}


def _debian_folder(folder: Path) -> Path:
    folder.mkdir()
    (folder / "orthanc.json").write_text(
        '{\n  /** General **/\n  "Name" : "Orthanc",\n'
        '  "StorageDirectory" : "/var/lib/orthanc/db-v6",\n'
        '  "SslCertificate" : "certificate.pem",\n'
        '  "DicomAet" : "ORTHANC",\n  "HttpPort" : 8042,\n'
        '  "LuaScripts" : [ "/usr/share/orthanc/export.lua" ],\n'
        '  "ExecuteLuaEnabled" : true,\n'
        '  // "AuthenticationEnabled" : false,\n'
        '  "Plugins" : [ "/usr/share/orthanc/plugins/" ]\n}\n'
    )
    (folder / "credentials.json").write_text(
        '{ "RegisteredUsers" : { "alice" : "alicePassword" } }'
    )

    return folder


def test_generated_orthanc_config_forces_what_hyperwheel_relies_on(
    tmp_path: Path,
) -> None:
    """Ours win, the rest of Debian's stays, and the old Lua script is dropped."""
    source = _debian_folder(tmp_path / "orthanc")
    settings = configure.read_orthanc_folder(source)

    orthanc, credentials, notes = configure.orthanc_documents(settings, source, "pw")

    assert orthanc["DicomAet"] == "HYPERWHEEL"
    assert orthanc["DicomPort"] == 4242
    assert orthanc["StableAge"] == 60
    assert orthanc["AuthenticationEnabled"] is True
    assert orthanc["RemoteAccessAllowed"] is False
    assert orthanc["MaximumStorageSize"] == 0
    assert orthanc["MaximumPatientCount"] == 0
    assert orthanc["ExecuteLuaEnabled"] is False
    assert orthanc["RestApiWriteToFileSystemEnabled"] is False
    assert orthanc["LuaScripts"] == []
    assert orthanc["HttpPort"] == 8042
    assert orthanc["SslCertificate"] == str(source / "certificate.pem")
    assert "RegisteredUsers" not in orthanc
    assert credentials == {
        "RegisteredUsers": {"alice": "alicePassword", "hyperwheel": "pw"}
    }
    assert any("export.lua" in note for note in notes)


def test_generated_orthanc_folder_is_private_and_keeps_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Files are 0640, the password is made once, overrides are told once."""
    source = _debian_folder(tmp_path / "orthanc")
    target = tmp_path / "ours"
    password_file = tmp_path / "orthanc-password"

    configure.write_orthanc_folder(source, target, password_file)
    first = capsys.readouterr().out
    password = password_file.read_text().strip()
    configure.write_orthanc_folder(source, target, password_file)

    assert "DicomAet: 'ORTHANC' -> 'HYPERWHEEL'" in first
    assert capsys.readouterr().out == ""

    assert len(password) >= 32
    assert password_file.read_text().strip() == password
    for name in ("orthanc.json", "credentials.json"):
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o640
    text = (target / "credentials.json").read_text()
    users = json.loads(configure.strip_comments(text))["RegisteredUsers"]
    assert users["hyperwheel"] == password


def test_key_set_in_two_orthanc_files_is_refused(tmp_path: Path) -> None:
    """Like Orthanc itself, a key in two files of the folder is an error."""
    source = _debian_folder(tmp_path / "orthanc")
    (source / "extra.json").write_text('{ "DicomAet" : "OTHER" }')

    with pytest.raises(configure.SetupError, match="DicomAet"):
        configure.read_orthanc_folder(source)


def test_old_pipeline_files_beside_orthanc_are_not_orthanc_settings(
    tmp_path: Path,
) -> None:
    """routing.json and .fw_keychain.json in /etc/orthanc are not merged."""
    source = _debian_folder(tmp_path / "orthanc")
    (source / "routing.json").write_text('{"prisma": "fw://lab/mri"}')
    (source / ".fw_keychain.json").write_text('{"prisma": "site:secret"}')

    settings = configure.read_orthanc_folder(source)

    assert "prisma" not in settings


def _old_pipeline(root: Path, keys: dict[str, str]) -> tuple[Path, list[Path]]:
    lua = root / "usr-share-orthanc" / "export.lua"
    lua.parent.mkdir(parents=True)
    lua.write_text("-- the old export\n")
    home = root / "home" / "pi"
    home.mkdir(parents=True)
    (home / "routing.json").write_text(json.dumps({"prisma": "fw://lab/mri"}))
    (home / ".fw_keychain.json").write_text(json.dumps(keys))
    etc = root / "etc-hyperwheel"
    etc.mkdir()

    return lua, [lua.parent, home]


def test_old_pipeline_routing_and_keys_are_imported_privately(tmp_path: Path) -> None:
    """Routes and keys are copied 0640, and no key is ever printed."""
    lua, folders = _old_pipeline(tmp_path, {"prisma": "site:secret-key"})
    etc = tmp_path / "etc-hyperwheel"

    messages = configure.import_old_pipeline(folders, lua, etc)

    keychain = etc / "fw_keychain.json"
    assert json.loads(keychain.read_text()) == {"prisma": "site:secret-key"}
    assert json.loads((etc / "routing.json").read_text()) == {"prisma": "fw://lab/mri"}
    assert stat.S_IMODE(keychain.stat().st_mode) == 0o640
    text = "\n".join(messages)
    assert "secret-key" not in text
    assert "imported 1 API keys" in text
    assert f"{lua} no longer runs" in text


def test_import_keeps_files_hyperwheel_already_has(tmp_path: Path) -> None:
    """An existing keychain is never overwritten by the old one."""
    lua, folders = _old_pipeline(tmp_path, {"prisma": "site:old"})
    keychain = tmp_path / "etc-hyperwheel" / "fw_keychain.json"
    keychain.write_text('{"prisma": "site:new"}')

    configure.import_old_pipeline(folders, lua, keychain.parent)

    assert json.loads(keychain.read_text()) == {"prisma": "site:new"}


def test_differing_old_keychains_are_not_guessed(tmp_path: Path) -> None:
    """Two different old keychains: neither is imported, both are named."""
    lua, folders = _old_pipeline(tmp_path, {"prisma": "site:one"})
    other = tmp_path / "home" / "tech"
    other.mkdir()
    (other / ".fw_keychain.json").write_text('{"prisma": "site:two"}')
    etc = tmp_path / "etc-hyperwheel"

    messages = configure.import_old_pipeline([*folders, other], lua, etc)

    assert not (etc / "fw_keychain.json").exists()
    assert any(str(other / ".fw_keychain.json") in m for m in messages)


def test_nothing_is_imported_without_the_old_pipeline(tmp_path: Path) -> None:
    """A routing.json alone is no sign of the old pipeline."""
    folder = tmp_path / "home" / "pi"
    folder.mkdir(parents=True)
    (folder / "routing.json").write_text('{"prisma": "fw://lab/mri"}')
    etc = tmp_path / "etc-hyperwheel"
    etc.mkdir()

    messages = configure.import_old_pipeline([folder], tmp_path / "no.lua", etc)

    assert messages == []
    assert not (etc / "routing.json").exists()


# The built packages.


def _contents(deb: Path, into: Path) -> Path:
    run("dpkg-deb", "-x", str(deb), str(into))
    return into


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_package_holds_a_bare_venv_for_its_architecture(
    arch: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Every binary is for ARCH; no pip, setuptools, wheel, bytecode or /opt."""
    deb = request.getfixturevalue(f"{arch}_deb")
    root = _contents(deb, tmp_path / "root")
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]

    machines = {p: elf_machine(p) for p in files}
    binaries = {p: m for p, m in machines.items() if m is not None}
    assert binaries, "the wheels' compiled modules are missing"
    wrong = {str(p): m for p, m in binaries.items() if m != MACHINES[arch]}
    assert wrong == {}
    others = [p for p in files if p not in binaries]
    assert all(p.suffix != ".pyc" for p in others)

    site = root / SITE
    for tool in ("pip", "setuptools", "wheel", "_distutils_hack"):
        assert not (site / tool).exists()
    assert not list(site.glob("hyperwheel-*.dist-info/direct_url.json"))
    assert (site / "hyperwheel" / "cli.py").is_file()
    assert not (root / "opt").exists()
    python = root / VENV / "bin" / "python"
    assert (python.parent / python.readlink()).resolve() == root / "usr/bin/python3.11"
    assert (root / VENV / "pyvenv.cfg").read_text().startswith("home = /usr/bin\n")
    fields = run("dpkg-deb", "-f", str(deb), "Architecture", "Depends").stdout
    assert f"Architecture: {arch}" in fields
    assert "python3.11, orthanc" in fields


def _service_config(orthanc: PackagedOrthanc, sshd: SshdServer, port: int) -> str:
    """The installed hyperwheel.toml, pointed at this test's Orthanc and sshd."""
    text = (ETC / "hyperwheel.toml").read_text()
    head, _, tail = text.partition("\n[scanner]\n")
    replacements = [
        ("head", 'url = "http://127.0.0.1:8042"', f'url = "{orthanc.url}"'),
        ("tail", 'host = "scanner.invalid"', 'host = "127.0.0.1"'),
        ("tail", "port = 22\n", f"port = {sshd.port}\n"),
        ("tail", 'username = "hyperwheel"', 'username = "root"'),
        ("tail", 'rrdf_root = "/data/rrdf"', f'rrdf_root = "{sshd.root}"'),
        ("tail", 'listen = "127.0.0.1:9108"', f'listen = "127.0.0.1:{port}"'),
    ]
    parts = {"head": head, "tail": tail}
    for part, old, new in replacements:
        assert parts[part].count(old) == 1, old
        parts[part] = parts[part].replace(old, new)

    return parts["head"] + "\n[scanner]\n" + parts["tail"]


_LIST_SCANNER = """
import asyncio, sys
from pathlib import Path
from hyperwheel.scanner import ScannerClient
from hyperwheel.settings import load_settings

async def main() -> None:
    client = ScannerClient(load_settings(Path(sys.argv[1])).scanner)
    try:
        print(len(await client.list_rrdf()))
    finally:
        await client.close()

asyncio.run(main())
"""


def _healthy(port: int) -> bool:
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, ConnectionError):
        return False


def _staged(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.dcm")) if folder.exists() else []


@pytest.mark.slow
@pytest.mark.usefixtures("staging_restored")
def test_fresh_install_runs_hardened_beside_orthanc_and_purge_keeps_staging(
    amd64_deb: Path, open_folder: Path, sshd: SshdServer
) -> None:
    """Install, check-config, Orthanc and the service as orthanc, remove, purge."""
    require_tools("storescu", "ssh-keyscan", "systemd-analyze")
    operator = f"pkgtest{uuid.uuid4().hex[:8]}"
    with installed_package(amd64_deb) as output:
        _check_fresh_install(output)
        _run_beside_orthanc(open_folder, sshd, operator)

        apt_get("remove", PACKAGE)
        assert not Path("/usr/lib/hyperwheel").exists()
        assert not DROP_IN.exists()
        assert not ORTHANC_FOLDER.exists()
        assert (ETC / "hyperwheel.toml").exists()
        assert STATE.exists()

        apt_get("purge", PACKAGE)
        assert package_state() == "not-installed"
        assert not ETC.exists()
        assert not STATE.exists()
        assert len(_staged(STAGING / operator)) == 9


def _check_fresh_install(output: str) -> None:
    assert "created the scanner key" in output
    assert _mode(ETC / "fw_keychain.json") == ("root", "orthanc", 0o640)
    assert json.loads((ETC / "fw_keychain.json").read_text()) == {}
    assert _mode(PASSWORD_FILE) == ("root", "orthanc", 0o640)
    assert _mode(ETC / "scanner_ed25519") == ("orthanc", "orthanc", 0o600)
    assert (ETC / "known_hosts").read_text() == ""
    assert _mode(STATE) == ("orthanc", "orthanc", 0o750)
    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", PACKAGE).stdout.split()
    assert sorted(p for p in conffiles if p.startswith("/")) == [
        str(ETC / "hyperwheel.toml"),
        str(ETC / "routing.example.json"),
    ]
    shipped = run("dpkg", "-L", PACKAGE).stdout.split()
    assert not [p for p in shipped if p.endswith(".pyc")]
    assert list(Path("/", SITE, "hyperwheel").glob("__pycache__/*.pyc"))

    check = run(
        "runuser", "-u", "orthanc", "--", "hyperwheel", "check-config", check=False
    )
    assert check.returncode == 0, check.stderr
    assert "ok (3 warning(s))" in check.stdout
    assert "error" not in check.stderr

    verify = run("systemd-analyze", "verify", "hyperwheel.service", check=False)
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")
    # systemd's own reading of orthanc.service with the drop-in: the Debian
    # ExecStart is gone, ours points at the generated folder.
    debug = {**os.environ, "SYSTEMD_LOG_LEVEL": "debug"}
    dump = run("systemd-analyze", "verify", "orthanc.service", env=debug)
    commands = re.findall(r"Command Line: (.*)", dump.stdout + dump.stderr)
    assert commands == [f"/usr/sbin/Orthanc --logdir=/var/log/orthanc {ORTHANC_FOLDER}"]


def _run_beside_orthanc(folder: Path, sshd: SshdServer, operator: str) -> None:
    orthanc = PackagedOrthanc(folder / "orthanc").start()
    service: subprocess.Popen[bytes] | None = None
    try:
        assert orthanc.get("/system")["DicomAet"] == "HYPERWHEEL"
        with pytest.raises(urllib.error.HTTPError, match="401"):
            orthanc.get("/system", password="wrong")

        # The scanner steps README gives: authorize the key, scan the host key.
        public = (ETC / "scanner_ed25519.pub").read_text()
        with open(sshd.folder / "authorized_keys", "a") as keys:
            keys.write(public)
        (sshd.root / RAW_FOLDER).mkdir()
        (sshd.root / RAW_FOLDER / "scan.h5").write_bytes(b"raw")
        scan = run("ssh-keyscan", "-p", str(sshd.port), "-t", "ed25519", "127.0.0.1")
        with open(ETC / "known_hosts", "a") as known_hosts:
            known_hosts.write(scan.stdout)

        metrics_port = free_port()
        config = folder / "hyperwheel.toml"
        config.write_text(_service_config(orthanc, sshd, metrics_port))
        config.chmod(0o644)

        # SFTP with the packaged key, venv, asyncssh and cryptography, as the
        # service user with MemoryDenyWriteExecute and NoNewPrivileges set.
        listing = run(
            f"/{VENV}/bin/python",
            "-I",
            "-c",
            _LIST_SCANNER,
            str(config),
            **as_service_user(),
        )
        # Logs go to stdout too; the count is the last line.
        assert listing.stdout.splitlines()[-1] == "1"

        log = folder / "service.log"
        with open(log, "wb") as sink:
            service = subprocess.Popen(
                ["/usr/bin/hyperwheel", "run", "--config", str(config)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                **as_service_user(),
            )
        wait_until(lambda: _healthy(metrics_port), 30, "the service's /healthz")

        study = three_series_study(operators_name=operator)
        send(write_study(study, folder / "study"), orthanc.dicom_port)
        wait_until(
            lambda: len(_staged(STAGING / operator)) == 9, 60, "nine staged files"
        )
        for staged in _staged(STAGING / operator):
            assert _mode(staged) == ("orthanc", "orthanc", 0o640)

        status = run("hyperwheel", "status", "--json")
        assert study.uid in status.stdout
    finally:
        code = stop(service)
        orthanc.stop()
    assert code == 0, log.read_text(errors="replace")[-3000:]


@pytest.mark.slow
@pytest.mark.usefixtures("staging_restored")
def test_install_over_the_old_pipeline_imports_its_routing_and_keys(
    amd64_deb: Path,
) -> None:
    """The old export.lua, routing and keychain found, imported, never printed."""
    lua = Path("/usr/share/orthanc/export.lua")
    home = Path("/home") / f"hyperwheel-test-{uuid.uuid4().hex[:8]}"
    if lua.exists():
        pytest.fail(f"{lua} exists on this machine; the test makes its own")
    keys = {"prisma": "flywheel.example.org:old-secret-key"}
    lua.write_text("-- the old pipeline's export\n")
    home.mkdir(parents=True)
    try:
        (home / "routing.json").write_text(json.dumps({"prisma": "fw://lab/mri"}))
        (home / ".fw_keychain.json").write_text(json.dumps(keys))

        with installed_package(amd64_deb) as output:
            assert "old-secret-key" not in output
            assert "imported 1 API keys" in output
            assert "imported 1 routes" in output
            assert f"{lua} no longer runs" in output
            assert json.loads((ETC / "fw_keychain.json").read_text()) == keys
            assert _mode(ETC / "fw_keychain.json") == ("root", "orthanc", 0o640)
            assert _mode(ETC / "routing.json") == ("root", "orthanc", 0o640)
            orthanc = (ORTHANC_FOLDER / "orthanc.json").read_text()
            assert '"LuaScripts": []' in orthanc
            assert '"ExecuteLuaEnabled": false' in orthanc

            check = run("runuser", "-u", "orthanc", "--", "hyperwheel", "check-config")
            assert "ok (1 warning(s))" in check.stdout
    finally:
        lua.unlink(missing_ok=True)
        shutil.rmtree(home, ignore_errors=True)
