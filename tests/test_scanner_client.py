"""ScannerClient against a real OpenSSH sshd on loopback."""

import asyncio
import hashlib
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hyperwheel import scanner
from hyperwheel.scanner import (
    HostKeyMismatch,
    RemoteFile,
    RemoteFileChanged,
    ScannerAuthRefused,
    ScannerClient,
    ScannerError,
    ScannerUnreachable,
)
from tests.helpers.ports import free_port
from tests.helpers.sshd import SshdServer, scanner_settings

FOLDER = "rrdf_20261203_100000"
MIB = 1024 * 1024


@pytest.fixture
async def client(sshd: SshdServer) -> AsyncIterator[ScannerClient]:
    """A client of the test's sshd, closed afterwards."""
    connected = ScannerClient(scanner_settings(sshd))
    try:
        yield connected
    finally:
        await connected.close()


class Durable:
    """Records the offsets ``pull`` reports as durable."""

    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.reported = asyncio.Event()

    async def __call__(self, offset: int) -> None:
        self.offsets.append(offset)
        self.reported.set()


def write_remote(sshd: SshdServer, relative: str, data: bytes) -> Path:
    path = sshd.root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)

    return path


def write_random(path: Path, size: int) -> None:
    """Incompressible content without holding it all: one random block repeated."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(MIB + 7)
    with open(path, "wb") as handle:
        left = size
        while left:
            left -= handle.write(block[: min(left, len(block))])


def sha384_of(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha384").hexdigest()


def remote_file(sshd: SshdServer, relative: str) -> RemoteFile:
    """The file as a listing would describe it (SFTP v3 has whole seconds)."""
    path = sshd.root / relative
    status = path.stat()
    folder, below = relative.split("/", 1)

    return RemoteFile(
        path=str(path),
        folder=folder,
        relative=below,
        size=status.st_size,
        mtime=float(int(status.st_mtime)),
    )


def append_to(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def new_key(path: Path) -> Path:
    """A fresh ed25519 key pair that no server knows."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True
    )

    return path


def other_ed25519_line(sshd: SshdServer, folder: Path) -> str:
    """A known_hosts line for this server's address with some other host key."""
    key = new_key(folder / "impostor")
    kind, blob = Path(f"{key}.pub").read_text().split()[:2]

    return f"[127.0.0.1]:{sshd.port} {kind} {blob}\n"


# Listing


async def test_listing_finds_h5_files_recursively_below_rrdf_folders(
    sshd: SshdServer, client: ScannerClient
) -> None:
    """Only regular *.h5 files below real rrdf_* folders are listed, at any depth."""
    top = write_remote(sshd, f"{FOLDER}/scan_20261203_100100.h5", b"a" * 10)
    deep = write_remote(sshd, f"{FOLDER}/sub/deeper/scan_b.h5", b"b" * 25)
    other = write_remote(sshd, "rrdf_20261204_090000/c.h5", b"c")
    write_remote(sshd, f"{FOLDER}/notes.txt", b"not raw data")
    write_remote(sshd, f"{FOLDER}/sub/partial.h5.tmp", b"still copying")
    write_remote(sshd, "other/scan.h5", b"not in an rrdf folder")
    write_remote(sshd, "scan_top.h5", b"not in an rrdf folder")
    write_remote(sshd, "rrdf_file_not_folder", b"a file named like a folder")
    (sshd.root / FOLDER / "link.h5").symlink_to(sshd.root / "other" / "scan.h5")
    (sshd.root / "rrdf_linked").symlink_to(sshd.root / "other")
    os.utime(top, (1_796_292_000, 1_796_292_060))
    os.utime(deep, (1_796_292_000, 1_796_292_123))
    os.utime(other, (1_796_292_000, 1_796_371_200))

    listed = await client.list_rrdf()

    root = str(sshd.root)
    assert listed == [
        RemoteFile(
            path=f"{root}/{FOLDER}/scan_20261203_100100.h5",
            folder=FOLDER,
            relative="scan_20261203_100100.h5",
            size=10,
            mtime=1_796_292_060.0,
        ),
        RemoteFile(
            path=f"{root}/{FOLDER}/sub/deeper/scan_b.h5",
            folder=FOLDER,
            relative="sub/deeper/scan_b.h5",
            size=25,
            mtime=1_796_292_123.0,
        ),
        RemoteFile(
            path=f"{root}/rrdf_20261204_090000/c.h5",
            folder="rrdf_20261204_090000",
            relative="c.h5",
            size=1,
            mtime=1_796_371_200.0,
        ),
    ]


async def test_listing_an_empty_root_finds_nothing(client: ScannerClient) -> None:
    """A scanner with no rrdf_* folders yet lists no files and raises nothing."""
    assert await client.list_rrdf() == []


async def test_missing_rrdf_root_is_a_scanner_error(sshd: SshdServer) -> None:
    """An rrdf_root that does not exist raises ScannerError, not a crash."""
    missing = scanner_settings(sshd, rrdf_root=str(sshd.root / "absent"))
    client = ScannerClient(missing)
    try:
        with pytest.raises(ScannerError) as caught:
            await client.list_rrdf()
    finally:
        await client.close()

    assert not isinstance(caught.value, ScannerUnreachable)


# Pulling


async def test_pull_is_byte_identical_and_hashes_match(
    sshd: SshdServer, client: ScannerClient, tmp_path: Path
) -> None:
    """A pulled file equals the remote one; sha384 and remote sha256 match hashlib."""
    data = os.urandom(3 * MIB + 12_345)
    write_remote(sshd, f"{FOLDER}/sub/scan_20261203_100100.h5", data)
    remote = remote_file(sshd, f"{FOLDER}/sub/scan_20261203_100100.h5")
    part = tmp_path / "scan.part"
    durable = Durable()

    result = await client.pull(remote, part, resume_from=0, on_durable=durable)

    assert part.read_bytes() == data
    assert result.size == len(data)
    assert result.sha384 == hashlib.sha384(data).hexdigest()
    assert durable.offsets == [len(data)]
    assert await client.remote_sha256(remote) == hashlib.sha256(data).hexdigest()
    assert result.sha256 == hashlib.sha256(data).hexdigest()


async def test_pull_of_an_empty_file_gives_an_empty_part(
    sshd: SshdServer, client: ScannerClient, tmp_path: Path
) -> None:
    """An empty remote file yields an empty part file and the empty digest."""
    write_remote(sshd, f"{FOLDER}/empty.h5", b"")
    part = tmp_path / "empty.part"
    part.write_bytes(b"left over from an earlier try")

    result = await client.pull(
        remote_file(sshd, f"{FOLDER}/empty.h5"),
        part,
        resume_from=0,
        on_durable=Durable(),
    )

    assert part.read_bytes() == b""
    assert result.size == 0
    assert result.sha384 == hashlib.sha384(b"").hexdigest()


async def test_pull_resumes_after_durable_bytes_and_drops_the_tail(
    sshd: SshdServer, client: ScannerClient, tmp_path: Path
) -> None:
    """resume_from keeps the durable prefix, cuts a zero/garbage tail, continues."""
    data = os.urandom(5 * MIB + 99)
    write_remote(sshd, f"{FOLDER}/scan.h5", data)
    part = tmp_path / "scan.part"
    durable_length = 2 * MIB + 5
    part.write_bytes(
        data[:durable_length] + bytes(MIB) + b"garbage after a power cut" * 1000
    )
    durable = Durable()

    result = await client.pull(
        remote_file(sshd, f"{FOLDER}/scan.h5"),
        part,
        resume_from=durable_length,
        on_durable=durable,
    )

    assert part.read_bytes() == data
    assert result.sha384 == hashlib.sha384(data).hexdigest()
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert durable.offsets == [len(data)]


async def test_resume_beyond_a_shrunken_remote_file_asks_for_a_fresh_pull(
    sshd: SshdServer, client: ScannerClient, tmp_path: Path
) -> None:
    """A remote file now shorter than resume_from raises RemoteFileChanged."""
    write_remote(sshd, f"{FOLDER}/scan.h5", b"x" * 100)
    part = tmp_path / "scan.part"
    part.write_bytes(b"x" * 200)

    with pytest.raises(RemoteFileChanged):
        await client.pull(
            remote_file(sshd, f"{FOLDER}/scan.h5"),
            part,
            resume_from=200,
            on_durable=Durable(),
        )


async def test_resume_of_a_rewritten_remote_file_asks_for_a_fresh_pull(
    sshd: SshdServer, client: ScannerClient, tmp_path: Path
) -> None:
    """Same size but another mtime than listed: RemoteFileChanged, part untouched."""
    source = write_remote(sshd, f"{FOLDER}/scan.h5", b"x" * 100)
    os.utime(source, (1_796_292_000, 1_796_292_000))
    listed = remote_file(sshd, f"{FOLDER}/scan.h5")
    source.write_bytes(b"y" * 100)
    os.utime(source, (1_796_292_000, 1_796_292_600))
    part = tmp_path / "scan.part"
    part.write_bytes(b"x" * 50)

    with pytest.raises(RemoteFileChanged):
        await client.pull(listed, part, resume_from=50, on_durable=Durable())

    assert part.read_bytes() == b"x" * 50


async def test_remote_file_growing_during_pull_raises_file_changed(
    sshd: SshdServer,
    client: ScannerClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A remote file that grows while pulled raises RemoteFileChanged."""
    monkeypatch.setattr(scanner, "_DURABLE_EVERY", MIB)
    source = write_remote(sshd, f"{FOLDER}/scan.h5", os.urandom(4 * MIB))

    async def grow_the_source(offset: int) -> None:
        await asyncio.to_thread(append_to, source, b"more data from the scanner")

    with pytest.raises(RemoteFileChanged):
        await client.pull(
            remote_file(sshd, f"{FOLDER}/scan.h5"),
            tmp_path / "scan.part",
            resume_from=0,
            on_durable=grow_the_source,
        )


async def test_pull_of_a_vanished_file_is_a_scanner_error(
    sshd: SshdServer, client: ScannerClient, tmp_path: Path
) -> None:
    """A file deleted after listing: ScannerError (not Unreachable), no part file."""
    write_remote(sshd, f"{FOLDER}/gone.h5", b"soon gone")
    remote = remote_file(sshd, f"{FOLDER}/gone.h5")
    (sshd.root / FOLDER / "gone.h5").unlink()

    with pytest.raises(ScannerError) as caught:
        await client.pull(
            remote, tmp_path / "gone.part", resume_from=0, on_durable=Durable()
        )

    assert not isinstance(caught.value, ScannerUnreachable)
    assert not (tmp_path / "gone.part").exists()


@pytest.mark.slow
async def test_killed_connection_mid_pull_raises_and_the_next_pull_resumes(
    sshd: SshdServer,
    client: ScannerClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Connections killed mid-file: ScannerUnreachable, then a resumed exact copy."""
    full = os.environ.get("HYPERWHEEL_FULL") == "1"
    size = (200 if full else 40) * MIB + 321
    if not full:
        monkeypatch.setattr(scanner, "_DURABLE_EVERY", 2 * MIB)
    source = sshd.root / FOLDER / "big.h5"
    write_random(source, size)
    remote = remote_file(sshd, f"{FOLDER}/big.h5")
    part = tmp_path / "big.part"
    durable = Durable()

    pull = asyncio.create_task(
        client.pull(remote, part, resume_from=0, on_durable=durable)
    )
    await asyncio.wait_for(durable.reported.wait(), timeout=30)
    killed = await asyncio.to_thread(sshd.kill_connections)
    with pytest.raises(ScannerUnreachable):
        await asyncio.wait_for(pull, timeout=60)

    assert killed > 0
    assert 0 < durable.offsets[-1] < size
    assert part.stat().st_size >= durable.offsets[-1]
    first_attempt = list(durable.offsets)

    result = await client.pull(
        remote, part, resume_from=first_attempt[-1], on_durable=durable
    )

    assert result.size == size
    assert result.sha384 == sha384_of(source)
    assert sha384_of(part) == result.sha384
    assert durable.offsets == sorted(set(durable.offsets))
    assert durable.offsets[-1] == size
    assert sshd.logins() == 2


# Connection


async def test_prefers_aes128_gcm_when_the_server_offers_it(tmp_path: Path) -> None:
    """The negotiated cipher is aes128-gcm@openssh.com when the server has it."""
    server = SshdServer(tmp_path / "sshd", extra_config=("LogLevel DEBUG1",)).start()
    client = ScannerClient(scanner_settings(server))
    try:
        await client.list_rrdf()
    finally:
        await client.close()
        server.stop()

    assert "client->server cipher: aes128-gcm@openssh.com" in server.log()
    assert "server->client cipher: aes128-gcm@openssh.com" in server.log()


async def test_connects_to_a_server_without_the_preferred_cipher(
    tmp_path: Path,
) -> None:
    """A server that lacks aes128-gcm still works with another cipher."""
    server = SshdServer(
        tmp_path / "sshd",
        extra_config=("Ciphers aes256-ctr", "LogLevel DEBUG1"),
    ).start()
    client = ScannerClient(scanner_settings(server))
    try:
        assert await client.list_rrdf() == []
    finally:
        await client.close()
        server.stop()

    assert "server->client cipher: aes256-ctr" in server.log()


async def test_one_connection_serves_every_call(
    sshd: SshdServer, client: ScannerClient, tmp_path: Path
) -> None:
    """Listing, concurrent pulls and remote hashing share one SSH login."""
    for number in range(4):
        write_remote(sshd, f"{FOLDER}/scan_{number}.h5", os.urandom(MIB + number))

    listed = await client.list_rrdf()
    await asyncio.gather(
        *(
            client.pull(
                remote,
                tmp_path / f"{remote.relative}.part",
                resume_from=0,
                on_durable=Durable(),
            )
            for remote in listed
        )
    )
    await client.remote_sha256(listed[0])
    await client.list_rrdf()

    assert sshd.logins() == 1
    assert sshd.connection_count() == 1


async def test_remote_sha256_is_none_when_the_scanner_cannot_run_it(
    tmp_path: Path,
) -> None:
    """An SFTP-only account (ForceCommand internal-sftp) gives None, not an error."""
    server = SshdServer(
        tmp_path / "sshd", extra_config=("ForceCommand internal-sftp",)
    ).start()
    write_remote(server, f"{FOLDER}/scan.h5", b"raw data")
    client = ScannerClient(scanner_settings(server))
    try:
        remote = (await client.list_rrdf())[0]
        assert await client.remote_sha256(remote) is None
        assert remote.size == len(b"raw data")
    finally:
        await client.close()
        server.stop()


async def test_client_reconnects_after_close(
    sshd: SshdServer, client: ScannerClient
) -> None:
    """close() ends the connection; the next call opens a new one."""
    await client.list_rrdf()
    await client.close()

    assert await client.list_rrdf() == []
    assert sshd.logins() == 2


# Refusals


async def test_wrong_host_key_is_a_mismatch_and_nothing_is_written(
    sshd: SshdServer, tmp_path: Path
) -> None:
    """A known_hosts with another key for the host: HostKeyMismatch, no part file."""
    sshd.known_hosts.write_text(other_ed25519_line(sshd, tmp_path))
    write_remote(sshd, f"{FOLDER}/scan.h5", b"raw data")
    client = ScannerClient(scanner_settings(sshd))
    part = tmp_path / "scan.part"
    try:
        with pytest.raises(HostKeyMismatch) as listing:
            await client.list_rrdf()
        with pytest.raises(HostKeyMismatch):
            await client.pull(
                remote_file(sshd, f"{FOLDER}/scan.h5"),
                part,
                resume_from=0,
                on_durable=Durable(),
            )
    finally:
        await client.close()

    assert not part.exists()
    assert_no_key_material(str(listing.value), sshd.client_key)


async def test_host_missing_from_known_hosts_is_a_mismatch(
    sshd: SshdServer,
) -> None:
    """An unknown host is refused, never learned: known_hosts stays as it was."""
    sshd.known_hosts.write_text("")
    client = ScannerClient(scanner_settings(sshd))
    try:
        with pytest.raises(HostKeyMismatch):
            await client.list_rrdf()
    finally:
        await client.close()

    assert sshd.known_hosts.read_text() == ""


async def test_unknown_client_key_is_auth_refused(
    sshd: SshdServer, tmp_path: Path
) -> None:
    """A key not in authorized_keys raises ScannerAuthRefused without key text."""
    stranger = new_key(tmp_path / "stranger")
    client = ScannerClient(scanner_settings(sshd, client_keys=(stranger,)))
    try:
        with pytest.raises(ScannerAuthRefused) as caught:
            await client.list_rrdf()
    finally:
        await client.close()

    assert_no_key_material(str(caught.value), stranger)


async def test_unreadable_client_key_is_auth_refused(
    sshd: SshdServer, tmp_path: Path
) -> None:
    """A client key file that is not a private key names the file, not contents."""
    broken = tmp_path / "broken_key"
    broken.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n")
    client = ScannerClient(scanner_settings(sshd, client_keys=(broken,)))
    try:
        with pytest.raises(ScannerAuthRefused) as caught:
            await client.list_rrdf()
    finally:
        await client.close()

    assert str(broken) in str(caught.value)
    assert "not a key" not in str(caught.value)


async def test_nothing_listening_is_unreachable(sshd: SshdServer) -> None:
    """A port with no server raises ScannerUnreachable in plain words."""
    client = ScannerClient(scanner_settings(sshd, port=free_port()))
    try:
        with pytest.raises(ScannerUnreachable) as caught:
            await client.list_rrdf()
    finally:
        await client.close()

    assert "cannot connect to the scanner" in str(caught.value)
    assert_no_key_material(str(caught.value), sshd.client_key)


def assert_no_key_material(message: str, private_key: Path) -> None:
    lines = private_key.read_text().splitlines()
    body = [line for line in lines if line and not line.startswith("-----")]
    assert body
    assert not any(line in message for line in body)
    assert "PRIVATE KEY" not in message
