"""Pull memory: does pulling a large raw file keep hyperwheel's memory flat?

A real sshd on loopback serves one 1 GB file. A separate Python process
imports hyperwheel, connects with ScannerClient as the service would, and
reports ready; its resident memory then is idle_rss_mb. Its peak-RSS mark is
reset (``/proc/PID/clear_refs``), it pulls the file, and the new peak
(VmHWM) is peak_rss_mb. The pulled file's digest is checked.

Target: peak_rss_mb - idle_rss_mb <= 50.
"""

import argparse
import asyncio
import getpass
import hashlib
import logging
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _support import memory_mb, summary

from hyperwheel import logs
from hyperwheel.scanner import ScannerClient
from hyperwheel.settings import ScannerSettings
from tests.helpers.sshd import SshdServer, scanner_settings

MB = 1024 * 1024
STEP_TIMEOUT = 600.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=1024, help="size of the file")
    parser.add_argument("--child", nargs=5, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        asyncio.run(child(*args.child))
        return
    with tempfile.TemporaryDirectory(prefix="hyperwheel-memory-") as folder:
        run(Path(folder), args.mb)


def run(folder: Path, mb: int) -> None:
    server = SshdServer(folder / "sshd").start()
    try:
        source = server.root / "rrdf_20261203_100000" / "big.h5"
        expected = write_source(source, mb)
        settings = scanner_settings(server)
        process = start_child(settings, source, folder / "big.part")
        try:
            measured = measure(process)
        finally:
            process.kill()
            process.wait(timeout=10)
    finally:
        server.stop()

    idle, peak, reply = measured
    size, digest, seconds = reply.split()
    if int(size) != mb * MB or digest != expected:
        raise RuntimeError(f"pulled {size} bytes with digest {digest}, not the file")
    summary(
        size_mb=mb,
        mb_per_s=round(mb * MB / float(seconds) / 1e6),
        idle_rss_mb=round(idle, 1),
        peak_rss_mb=round(peak, 1),
        growth_mb=round(peak - idle, 1),
    )


def write_source(path: Path, mb: int) -> str:
    """A file of ``mb`` MiB from one repeated random block; its sha384."""
    path.parent.mkdir(parents=True)
    block = os.urandom(4 * MB)
    digest = hashlib.sha384()
    with open(path, "wb") as handle:
        for _ in range(mb // 4):
            handle.write(block)
            digest.update(block)
        handle.write(block[: (mb % 4) * MB])
        digest.update(block[: (mb % 4) * MB])
    os.sync()

    return digest.hexdigest()


def start_child(
    settings: ScannerSettings, source: Path, part: Path
) -> subprocess.Popen[str]:
    arguments = [
        str(settings.port),
        str(settings.client_keys[0]),
        str(settings.known_hosts),
        str(source),
        str(part),
    ]

    return subprocess.Popen(
        [sys.executable, __file__, "--child", *arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def measure(process: subprocess.Popen[str]) -> tuple[float, float, str]:
    """Idle RSS once connected, then the peak RSS of the pull alone."""
    expect(process, "ready")
    idle = memory_mb(process.pid)
    Path(f"/proc/{process.pid}/clear_refs").write_text("5")

    tell(process, "go")
    reply = expect(process, "pulled")
    peak = memory_mb(process.pid, "VmHWM")

    return idle, peak, reply


def expect(process: subprocess.Popen[str], word: str) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], STEP_TIMEOUT)
    line = process.stdout.readline() if ready else ""
    if not line.startswith(word):
        raise RuntimeError(f"child said {line!r}, expected {word!r}")

    return line[len(word) :].strip()


def tell(process: subprocess.Popen[str], word: str) -> None:
    assert process.stdin is not None
    process.stdin.write(word + "\n")
    process.stdin.flush()


async def child(port: str, key: str, known_hosts: str, source: str, part: str) -> None:
    """The measured process: connect, say ready, pull on "go", report."""
    logs.configure(level=logging.WARNING)
    settings = ScannerSettings(
        host="127.0.0.1",
        port=int(port),
        username=getpass.getuser(),
        client_keys=(Path(key),),
        known_hosts=Path(known_hosts),
        rrdf_root=str(Path(source).parents[1]),
        timezone=None,
        match_tolerance=120.0,
        concurrency=4,
        give_up_after=86400.0,
    )
    client = ScannerClient(settings)
    try:
        (remote,) = await client.list_rrdf()
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)

        async def durable(offset: int) -> None:
            pass

        started = time.monotonic()
        result = await client.pull(
            remote, Path(part), resume_from=0, on_durable=durable
        )
        elapsed = time.monotonic() - started
        print(f"pulled {result.size} {result.sha384} {elapsed:.3f}", flush=True)
    finally:
        await client.close()


if __name__ == "__main__":
    main()
