"""The scanner's side: raw-data files listed and pulled over SFTP.

One SSH connection per :class:`ScannerClient`, opened on first use and shared
by every call, concurrent pulls included. Only key authentication is offered
and the host key must already be in ``known_hosts``; an unknown host is
refused, never learned.

Error handling: nothing here retries or sleeps. Every failure is raised as a
:class:`ScannerError` subclass whose text is a plain-words reason fit for
``hyperwheel status``: :class:`ScannerUnreachable` (refused, timed out, name
unknown, connection lost), :class:`ScannerAuthRefused`,
:class:`HostKeyMismatch`, :class:`RemoteFileChanged` (a file grew, shrank or
was rewritten while pulled). A call that finds the connection broken drops
it, so the next call opens a fresh one; the caller decides when that is, with
its own backoff. A silent dead link is noticed by keepalives within about a
minute. Errors writing the local part file (a full disk) are ``OSError`` and
pass through unchanged, because retrying the scanner would not help.
"""

import asyncio
import hashlib
import os
import posixpath
import shlex
import stat
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import structlog
from asyncssh.encryption import get_default_encryption_algs
from asyncssh.sftp import MAX_SFTP_READ_LEN, SAFE_SFTP_READ_LEN

from hyperwheel.crashpoints import crash_point
from hyperwheel.errors import TransientError
from hyperwheel.settings import ScannerSettings

log = structlog.get_logger(__name__)

PREFERRED_CIPHER = "aes128-gcm@openssh.com"

# One bound for TCP connect, key exchange and authentication together.
_LOGIN_TIMEOUT = 30.0
_KEEPALIVE_INTERVAL = 15.0
_KEEPALIVE_MISSES = 4
_CHECKSUM_TIMEOUT = 1800.0
_CLOSE_TIMEOUT = 5.0

# Room for the reads of several concurrent pulls, so the server never waits
# for a window update while requests are outstanding.
_CHANNEL_WINDOW = 16 * 1024 * 1024
# Used when the server does not announce its limits: OpenSSH serves up to
# 255 KiB per read, and a larger request would come back short.
_FALLBACK_READ_SIZE = 255 * 1024
# Per pull. More measured slower on loopback: blocks that wait long in
# buffers have left the CPU cache before they are hashed and written.
_BYTES_IN_FLIGHT = 1536 * 1024
# Bounds what a power cut costs: at most this much is pulled again.
_DURABLE_EVERY = 64 * 1024 * 1024
_APPEND_BATCH = 1024 * 1024
_REHASH_CHUNK = 1024 * 1024
# Deeper than any scanner layout; it only guards against a pathological tree.
_MAX_FOLDER_DEPTH = 32

_CONNECTION_ERRORS = (
    asyncssh.DisconnectError,
    asyncssh.SFTPConnectionLost,
    asyncssh.SFTPNoConnection,
    asyncssh.ChannelOpenError,
    ConnectionError,
    TimeoutError,
)


@dataclass(frozen=True)
class RemoteFile:
    """One raw-data file on the scanner, as listed."""

    path: str  # absolute POSIX path on the scanner
    folder: str  # the rrdf_* folder holding it, e.g. "rrdf_20261203_100000"
    relative: str  # POSIX path below that folder
    size: int
    mtime: float  # POSIX seconds (UTC)


@dataclass(frozen=True)
class PullResult:
    """What a completed pull wrote into the part file."""

    size: int
    sha384: str  # hex digest of the whole local file
    sha256: str  # the same file, to compare with the scanner's sha256sum


class ScannerError(TransientError):
    """Something between hyperwheel and the scanner's files went wrong."""


class ScannerUnreachable(ScannerError):
    """No connection: refused, timed out, unknown name, or lost mid-call."""


class ScannerAuthRefused(ScannerError):
    """The scanner did not accept the client key, or it could not be read."""


class HostKeyMismatch(ScannerError):
    """The scanner's host key is not the one in known_hosts."""


class RemoteFileChanged(ScannerError):
    """The file differs from the one listed; list again, pull from the start."""


@dataclass
class _Session:
    """A live connection with its SFTP channel and the read shape it allows."""

    connection: asyncssh.SSHClientConnection
    sftp: asyncssh.SFTPClient
    read_size: int
    reads_in_flight: int

    def usable(self) -> bool:
        return not self.connection.is_closed()


class ScannerClient:
    """The scanner as hyperwheel sees it: ``rrdf_*`` folders of ``.h5`` files."""

    def __init__(self, settings: ScannerSettings) -> None:
        self._settings = settings
        self._session: _Session | None = None
        self._opening = asyncio.Lock()
        self._writer_pool: ThreadPoolExecutor | None = None

    async def list_rrdf(self) -> list[RemoteFile]:
        """Every ``<rrdf_root>/rrdf_*/**/*.h5``, sorted by path.

        Only real folders and regular files count; symbolic links are not
        followed, so a link loop cannot make the walk endless.
        """
        session = await self._current_session()
        root = posixpath.normpath(self._settings.rrdf_root)

        with self._translated(session, f"listing {root}"):
            entries = await session.sftp.readdir(root)
            folders = sorted(
                name
                for entry in entries
                if (name := _name_of(entry, root)) is not None
                and name.startswith("rrdf_")
                and _is_folder(entry)
            )
            found = []
            for folder in folders:
                found += await _h5_files_below(session.sftp, root, folder)

        return sorted(found, key=lambda remote: remote.path)

    async def pull(
        self,
        remote: RemoteFile,
        part: Path,
        *,
        resume_from: int,
        on_durable: Callable[[int], Awaitable[None]],
    ) -> PullResult:
        """Copy ``remote`` into ``part``, hashing it on the way.

        With ``resume_from > 0`` the first ``resume_from`` bytes of ``part``
        are kept (anything after them is cut off) and re-read for the hash,
        and the copy continues at that offset; the remote file must then still
        have the listed size and mtime, or the kept bytes could belong to an
        older version (:class:`RemoteFileChanged`). ``on_durable(offset)`` is
        awaited after each fsync, at least every 64 MiB and at the end, with
        offsets that only grow. The part file keeps its name; renaming it is
        the caller's job.
        """
        session = await self._current_session()
        started = time.monotonic()

        with self._translated(session, f"pulling {remote.path}"):
            async with await session.sftp.open(
                remote.path, "rb", block_size=0
            ) as source:
                before = await source.stat()
                _check_resumable(remote, before, resume_from)
                result = await _copy(
                    session,
                    self._writer(),
                    source,
                    part,
                    resume_from,
                    before.size or 0,
                    on_durable,
                )
            after = await session.sftp.stat(remote.path)
        _check_unchanged(remote, before, after, result.size)

        elapsed = max(time.monotonic() - started, 1e-6)
        log.debug(
            "scanner.pulled",
            path=remote.path,
            size=result.size,
            resumed_from=resume_from,
            mb_per_s=round((result.size - resume_from) / elapsed / 1e6, 1),
        )

        return result

    async def remote_sha256(self, remote: RemoteFile) -> str | None:
        """The scanner's own ``sha256sum`` of the file; None when it has none.

        A missing command, a refused exec channel, a non-zero exit or output
        that is not a digest all mean "the scanner cannot tell us".
        """
        session = await self._current_session()
        command = f"sha256sum -- {shlex.quote(remote.path)}"

        with self._translated(session, f"hashing {remote.path} on the scanner"):
            try:
                result = await session.connection.run(
                    command,
                    check=False,
                    timeout=_CHECKSUM_TIMEOUT,
                    stdin=asyncssh.DEVNULL,
                    encoding="utf-8",
                    errors="replace",
                )
            except asyncssh.ChannelOpenError as error:
                if not session.usable():
                    raise
                log.info("scanner.no_remote_hash", reason=error.reason)
                return None
            except asyncssh.TimeoutError:
                raise ScannerError(
                    f"sha256sum of {remote.path} on the scanner took longer "
                    f"than {_CHECKSUM_TIMEOUT:.0f} s"
                ) from None

        digest = _sha256_from_output(result.stdout)
        if result.exit_status != 0 or digest is None:
            log.info(
                "scanner.no_remote_hash",
                path=remote.path,
                exit_status=result.exit_status,
            )
            return None

        return digest

    async def close(self) -> None:
        """Close the connection, if one is open; the client can still reopen."""
        async with self._opening:
            session, self._session = self._session, None
        if session is not None:
            await _close_quietly(session)
        if self._writer_pool is not None:
            self._writer_pool.shutdown(wait=False)
            self._writer_pool = None

    def _writer(self) -> Executor:
        """One thread writes and hashes for every pull of this client.

        More threads measured slower: on a small machine they take CPU from
        the event loop, which decrypts for all pulls.
        """
        if self._writer_pool is None:
            self._writer_pool = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="hyperwheel-scanner-writer"
            )

        return self._writer_pool

    # Connection

    async def _current_session(self) -> _Session:
        async with self._opening:
            if self._session is not None and self._session.usable():
                return self._session
            if self._session is not None:
                self._forget(self._session, "the connection had closed")
            self._session = await self._open_session()

            return self._session

    async def _open_session(self) -> _Session:
        settings = self._settings
        started = time.monotonic()
        connection = await self._connect()
        try:
            sftp = await connection.start_sftp_client(path_errors="surrogateescape")
        except (asyncssh.Error, OSError) as error:
            lost = connection.is_closed()
            connection.close()
            kind = ScannerUnreachable if lost else ScannerError
            raise kind(
                f"the scanner at {settings.host}:{settings.port} accepted the "
                f"login but not SFTP: {_reason(error)}"
            ) from error

        read_size = _read_size(sftp)
        session = _Session(
            connection=connection,
            sftp=sftp,
            read_size=read_size,
            reads_in_flight=max(2, min(64, _BYTES_IN_FLIGHT // read_size)),
        )
        log.info(
            "scanner.connected",
            host=settings.host,
            port=settings.port,
            username=settings.username,
            cipher=connection.get_extra_info("recv_cipher"),
            read_size=session.read_size,
            reads_in_flight=session.reads_in_flight,
            seconds=round(time.monotonic() - started, 3),
        )

        return session

    async def _connect(self) -> asyncssh.SSHClientConnection:
        settings = self._settings
        where = f"{settings.host}:{settings.port}"
        known_hosts = _read_known_hosts(settings.known_hosts)
        client_keys = _load_client_keys(settings.client_keys)

        try:
            return await asyncssh.connect(
                settings.host,
                settings.port,
                username=settings.username,
                client_keys=client_keys,
                known_hosts=known_hosts,
                config=None,
                agent_path=None,
                password=None,
                preferred_auth=("publickey",),
                encryption_algs=_encryption_algorithms(),
                connect_timeout=_LOGIN_TIMEOUT,
                login_timeout=_LOGIN_TIMEOUT,
                keepalive_interval=_KEEPALIVE_INTERVAL,
                keepalive_count_max=_KEEPALIVE_MISSES,
                window=_CHANNEL_WINDOW,
            )
        except asyncssh.HostKeyNotVerifiable as error:
            problem: ScannerError = HostKeyMismatch(
                f"the host key of {where} does not match "
                f"{settings.known_hosts}; check the scanner's identity, then "
                "fix that file"
            )
            cause: BaseException = error
        except asyncssh.PermissionDenied as error:
            problem = ScannerAuthRefused(
                f"{where} refused the key login as {settings.username!r}; "
                "is the client key in the scanner's authorized_keys?"
            )
            cause = error
        except (asyncssh.Error, OSError) as error:
            problem = ScannerUnreachable(
                f"cannot connect to the scanner at {where}: {_reason(error)}"
            )
            cause = error

        log.warning("scanner.connect_failed", host=settings.host, reason=str(problem))
        raise problem from cause

    @contextmanager
    def _translated(self, session: _Session, action: str) -> Iterator[None]:
        """Turn asyncssh's errors during ``action`` into :class:`ScannerError`."""
        try:
            yield
        except _CONNECTION_ERRORS as error:
            self._forget(session, _reason(error))
            raise ScannerUnreachable(
                f"lost the connection to the scanner while {action}: {_reason(error)}"
            ) from error
        except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath) as error:
            raise ScannerError(f"not found on the scanner while {action}") from error
        except asyncssh.SFTPError as error:
            raise ScannerError(
                f"the scanner refused {action}: {_reason(error)}"
            ) from error

    def _forget(self, session: _Session, reason: str) -> None:
        """Drop a broken session, unless another call already replaced it."""
        if self._session is not session:
            return
        self._session = None
        session.connection.close()
        log.warning("scanner.connection_lost", host=self._settings.host, reason=reason)


# Transfer


async def _copy(
    session: _Session,
    writer: Executor,
    source: asyncssh.SFTPClientFile,
    part: Path,
    resume_from: int,
    end: int,
    on_durable: Callable[[int], Awaitable[None]],
) -> PullResult:
    """Copy the remote bytes from ``resume_from`` to ``end`` into ``part``."""
    target = await asyncio.to_thread(_PartFile.open, part, resume_from)
    blocks = _ReadAhead(source, resume_from, end, session)
    appender = _Appender(target, writer)
    try:
        async for block in blocks:
            await appender.add(block)
            if appender.received - target.durable >= _DURABLE_EVERY:
                await appender.drain()
                await _make_durable(target, on_durable)

        await appender.drain()
        await _make_durable(target, on_durable)
    finally:
        await blocks.abandon()
        await appender.abandon()
        target.close()

    sha384, sha256 = target.hexdigests()

    return PullResult(size=target.offset, sha384=sha384, sha256=sha256)


class _ReadAhead:
    """A remote file's blocks in order, with several reads kept in flight.

    At most ``reads_in_flight`` blocks are requested ahead of the consumer,
    so memory stays the same whatever the file size.
    """

    def __init__(
        self, source: asyncssh.SFTPClientFile, start: int, end: int, session: _Session
    ) -> None:
        self._source = source
        self._next = start
        self._end = end
        self._block_size = session.read_size
        self._depth = session.reads_in_flight
        self._reads: deque[tuple[int, int, asyncio.Future[bytes]]] = deque()

    def __aiter__(self) -> "_ReadAhead":
        return self

    async def __anext__(self) -> bytes:
        self._request_more()
        if not self._reads:
            raise StopAsyncIteration

        offset, length, oldest = self._reads.popleft()
        self._request_more()
        block = await oldest
        if len(block) < length:
            block += await self._rest(offset + len(block), offset + length)

        return block

    async def abandon(self) -> None:
        """Cancel reads nobody will consume, and collect their outcomes."""
        reads = [read for _, _, read in self._reads]
        self._reads.clear()
        for read in reads:
            read.cancel()
        await asyncio.gather(*reads, return_exceptions=True)

    def _request_more(self) -> None:
        while len(self._reads) < self._depth and self._next < self._end:
            length = min(self._block_size, self._end - self._next)
            read = asyncio.ensure_future(_read(self._source, length, self._next))
            self._reads.append((self._next, length, read))
            self._next += length

    async def _rest(self, start: int, end: int) -> bytes:
        """The missing end of a block that came back short."""
        pieces = []
        position = start
        while position < end:
            piece = await _read(self._source, end - position, position)
            if not piece:
                raise RemoteFileChanged("the file shrank on the scanner while pulled")
            pieces.append(piece)
            position += len(piece)

        return b"".join(pieces)


class _Appender:
    """Hands blocks to the client's writer thread, which writes and hashes.

    Blocks that arrive while the thread is busy are gathered and handed over
    together (up to ``_APPEND_BATCH`` bytes); fewer hand-overs leave the
    event loop more time to decrypt.
    """

    def __init__(self, target: "_PartFile", writer: Executor) -> None:
        self._target = target
        self._writer = writer
        self._running: asyncio.Future[None] | None = None
        self._waiting: list[bytes] = []
        self._waiting_bytes = 0
        self.received = target.offset

    async def add(self, block: bytes) -> None:
        self._waiting.append(block)
        self._waiting_bytes += len(block)
        self.received += len(block)
        idle = self._running is None or self._running.done()
        if idle or self._waiting_bytes >= _APPEND_BATCH:
            await self._hand_over()

    async def drain(self) -> None:
        """Return once every block added so far is written."""
        await self._hand_over()
        if self._running is not None:
            await self._running
            self._running = None

    async def abandon(self) -> None:
        """Wait out a running write without raising; used on the way out."""
        if self._running is not None:
            await asyncio.gather(self._running, return_exceptions=True)
            self._running = None

    async def _hand_over(self) -> None:
        if self._running is not None:
            await self._running
            self._running = None
        if self._waiting:
            blocks, self._waiting, self._waiting_bytes = self._waiting, [], 0
            loop = asyncio.get_running_loop()
            self._running = loop.run_in_executor(
                self._writer, self._target.append, blocks
            )


async def _read(source: asyncssh.SFTPClientFile, length: int, offset: int) -> bytes:
    data: bytes = await source.read(length, offset)

    return data


async def _make_durable(
    target: "_PartFile", on_durable: Callable[[int], Awaitable[None]]
) -> None:
    already = target.durable
    await asyncio.to_thread(target.sync)
    crash_point("scanner.after_fsync")
    if target.durable > already:
        await on_durable(target.durable)


class _PartFile:
    """The local part file: appended in order, hashed on the way, fsynced.

    ``append`` runs in a worker thread; the lock keeps ``close`` from
    releasing the descriptor while a write is still using it.
    """

    def __init__(
        self, fd: int, hashers: tuple["hashlib._Hash", "hashlib._Hash"], offset: int
    ) -> None:
        self._fd: int | None = fd
        # sha384 is Flywheel's; sha256 is what a scanner's sha256sum reports.
        self._hashers = hashers
        self._lock = threading.Lock()
        self.offset = offset
        self.durable = offset

    @classmethod
    def open(cls, part: Path, resume_from: int) -> "_PartFile":
        """Open ``part``, cut it to ``resume_from`` and hash what stays."""
        flags = os.O_RDWR | os.O_CREAT | (0 if resume_from else os.O_TRUNC)
        fd = os.open(part, flags, 0o640)
        try:
            length = os.fstat(fd).st_size
            if length < resume_from:
                raise ValueError(
                    f"{part} holds {length} bytes, fewer than resume_from={resume_from}"
                )
            os.ftruncate(fd, resume_from)
            hashers = (hashlib.sha384(), hashlib.sha256())
            position = 0
            while position < resume_from:
                wanted = min(_REHASH_CHUNK, resume_from - position)
                chunk = os.pread(fd, wanted, position)
                if not chunk:
                    raise ValueError(f"{part} ended early while it was re-read")
                for hasher in hashers:
                    hasher.update(chunk)
                position += len(chunk)
            os.lseek(fd, resume_from, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise

        return cls(fd, hashers, resume_from)

    def append(self, blocks: list[bytes]) -> None:
        with self._lock:
            fd = self._open_fd()
            for block in blocks:
                for hasher in self._hashers:
                    hasher.update(block)
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view) :]
                self.offset += len(block)

    def sync(self) -> None:
        with self._lock:
            os.fsync(self._open_fd())
            self.durable = self.offset

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def hexdigests(self) -> tuple[str, str]:
        return self._hashers[0].hexdigest(), self._hashers[1].hexdigest()

    def _open_fd(self) -> int:
        if self._fd is None:
            raise ValueError("the part file is already closed")
        return self._fd


# Listing


async def _h5_files_below(
    sftp: asyncssh.SFTPClient, root: str, folder: str
) -> list[RemoteFile]:
    """Every regular ``*.h5`` file below ``root/folder``, at any depth.

    A subfolder that vanishes or cannot be read is skipped with a warning:
    it is listed again next time, and it should not hide the other files.
    """
    found = []
    pending = [("", 0)]
    while pending:
        relative, depth = pending.pop()
        directory = posixpath.join(root, folder, relative)
        try:
            entries = await sftp.readdir(directory)
        except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPPermissionDenied) as error:
            log.warning("scanner.folder_skipped", path=directory, reason=error.reason)
            continue

        for entry in entries:
            name = _name_of(entry, directory)
            if name is None or name in (".", "..") or entry.attrs.permissions is None:
                continue
            below = posixpath.join(relative, name) if relative else name
            if _is_folder(entry) and depth < _MAX_FOLDER_DEPTH:
                pending.append((below, depth + 1))
            elif stat.S_ISREG(entry.attrs.permissions) and name.endswith(".h5"):
                found.append(
                    RemoteFile(
                        path=posixpath.join(root, folder, below),
                        folder=folder,
                        relative=below,
                        size=entry.attrs.size or 0,
                        mtime=float(entry.attrs.mtime or 0),
                    )
                )

    return found


def _name_of(entry: asyncssh.SFTPName, directory: str) -> str | None:
    """The entry's name, or None for one that is not printable UTF-8.

    Such a name could be neither stored nor shown, so the file is skipped
    with a warning rather than failing the whole listing.
    """
    name = entry.filename
    if isinstance(name, str) and name.isprintable() and _is_utf8(name):
        return name
    log.warning("scanner.name_skipped", folder=directory, name=repr(name))

    return None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False

    return True


def _is_folder(entry: asyncssh.SFTPName) -> bool:
    return entry.attrs.permissions is not None and stat.S_ISDIR(entry.attrs.permissions)


# Checks


def _check_resumable(
    remote: RemoteFile, attributes: asyncssh.SFTPAttrs, resume_from: int
) -> None:
    """Refuse to append to bytes that came from another version of the file."""
    if resume_from == 0:
        return
    size = attributes.size or 0
    mtime = float(attributes.mtime or 0)
    if (size, mtime) != (remote.size, remote.mtime) or size < resume_from:
        raise RemoteFileChanged(
            f"{remote.path} changed on the scanner since it was listed "
            f"({remote.size} bytes then, {size} now); it must be pulled again "
            "from the start"
        )


def _check_unchanged(
    remote: RemoteFile,
    before: asyncssh.SFTPAttrs,
    after: asyncssh.SFTPAttrs,
    pulled: int,
) -> None:
    if (after.size, after.mtime) != (before.size, before.mtime) or pulled != (
        after.size or 0
    ):
        raise RemoteFileChanged(
            f"{remote.path} changed on the scanner while it was pulled "
            f"({before.size} bytes before, {after.size} after, {pulled} pulled)"
        )


def _sha256_from_output(output: Any) -> str | None:
    """The digest in ``sha256sum`` output; a backslash marks an escaped name."""
    words = str(output or "").split(maxsplit=1)
    digest = words[0].lstrip("\\").lower() if words else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        return None

    return digest


# Connection set-up


def _encryption_algorithms() -> list[str]:
    """The preferred cipher first, then asyncssh's defaults for other servers."""
    defaults = [name.decode() for name in get_default_encryption_algs()]

    return [PREFERRED_CIPHER] + [name for name in defaults if name != PREFERRED_CIPHER]


def _read_known_hosts(path: Path) -> asyncssh.SSHKnownHosts:
    try:
        return asyncssh.read_known_hosts(str(path))
    except (OSError, ValueError, asyncssh.Error) as error:
        raise HostKeyMismatch(
            f"cannot read the known_hosts file {path}: {_reason(error)}"
        ) from None


def _load_client_keys(paths: tuple[Path, ...]) -> list[asyncssh.SSHKeyPair]:
    """Every configured key; errors name the file, never its contents."""
    keys: list[asyncssh.SSHKeyPair] = []
    for path in paths:
        try:
            keys += asyncssh.load_keypairs([str(path)])
        except OSError as error:
            raise ScannerAuthRefused(
                f"cannot read the client key {path}: {_reason(error)}"
            ) from None
        except (asyncssh.KeyImportError, ValueError):
            raise ScannerAuthRefused(
                f"the client key {path} is not an unencrypted private key"
            ) from None

    return keys


def _read_size(sftp: asyncssh.SFTPClient) -> int:
    """What the server allows per read; asyncssh's 16 KiB means "not told"."""
    allowed = int(sftp.limits.max_read_len)
    if allowed == SAFE_SFTP_READ_LEN:
        return _FALLBACK_READ_SIZE

    return min(allowed, MAX_SFTP_READ_LEN)


async def _close_quietly(session: _Session) -> None:
    session.sftp.exit()
    session.connection.close()
    with suppress(TimeoutError, asyncssh.Error, OSError):
        await asyncio.wait_for(session.connection.wait_closed(), _CLOSE_TIMEOUT)


def _reason(error: BaseException) -> str:
    """A short reason from an asyncssh or OS error, without a traceback."""
    if isinstance(error, asyncssh.Error) and error.reason:
        return str(error.reason)
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror

    return str(error) or type(error).__name__
