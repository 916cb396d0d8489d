"""SFTP pull throughput: hyperwheel against the OpenSSH CLI and paramiko.

A real sshd on loopback serves FILES random files of MB megabytes each. Every
round pulls all of them several ways, in an order that rotates between rounds:
hyperwheel's ScannerClient (4 pulls at once over one connection, hashing and
fsyncing as the service does); the OpenSSH ``sftp`` CLI in batch mode with its
default cipher, with aes128-gcm, and with the same work as hyperwheel (``-f``
to fsync each file, then a sha384 of each); and paramiko's ``get`` one file
after another with its defaults. Each figure is the median over the rounds;
the disk is synced before every timed pull so no one pays for another's
writes.

Targets: ratio_vs_sftp_cli >= 0.9 and ratio_vs_paramiko >= 2.0
(ratio_vs_sftp_cli compares with the CLI's default cipher).
"""

import argparse
import asyncio
import hashlib
import logging
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import paramiko
from _support import summary

from hyperwheel import logs
from hyperwheel.scanner import RemoteFile, ScannerClient
from tests.helpers.sshd import SshdServer, scanner_settings

MB = 1024 * 1024
GCM = "aes128-gcm@openssh.com"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--mb", type=int, default=50, help="size of each file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    logs.configure(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="hyperwheel-sftp-") as folder:
        run(Path(folder), args.files, args.mb, args.rounds, args.concurrency)


def run(folder: Path, files: int, mb: int, rounds: int, concurrency: int) -> None:
    server = SshdServer(folder / "sshd").start()
    try:
        sources = write_sources(server.root / "rrdf_20261203_100000", files, mb)
        target = folder / "pulled"
        contenders: dict[str, Callable[[], None]] = {
            "hyperwheel": lambda: pull_with_hyperwheel(server, target, concurrency),
            "sftp_cli": lambda: pull_with_cli(server, sources, target, None),
            "sftp_cli_gcm": lambda: pull_with_cli(server, sources, target, GCM),
            "sftp_cli_same_work": lambda: pull_with_cli_and_hash(
                server, sources, target
            ),
            "paramiko": lambda: pull_with_paramiko(server, sources, target),
        }
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        names = list(contenders)
        for round_number in range(rounds):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                rate = timed(contenders[name], target, sources)
                rates[name].append(rate)
                print(f"round {round_number + 1}: {name} {rate:.0f} MB/s", flush=True)
    finally:
        server.stop()

    median = {name: statistics.median(values) for name, values in rates.items()}
    summary(
        files=files,
        mb_each=mb,
        rounds=rounds,
        hyperwheel_mb_s=round(median["hyperwheel"]),
        sftp_cli_mb_s=round(median["sftp_cli"]),
        sftp_cli_gcm_mb_s=round(median["sftp_cli_gcm"]),
        sftp_cli_same_work_mb_s=round(median["sftp_cli_same_work"]),
        paramiko_mb_s=round(median["paramiko"]),
        ratio_vs_sftp_cli=round(median["hyperwheel"] / median["sftp_cli"], 2),
        ratio_vs_sftp_cli_gcm=round(median["hyperwheel"] / median["sftp_cli_gcm"], 2),
        ratio_vs_sftp_cli_same_work=round(
            median["hyperwheel"] / median["sftp_cli_same_work"], 2
        ),
        ratio_vs_paramiko=round(median["hyperwheel"] / median["paramiko"], 2),
    )


def write_sources(folder: Path, files: int, mb: int) -> list[Path]:
    """Incompressible files, written from one random block to save time."""
    folder.mkdir(parents=True)
    block = os.urandom(MB)
    paths = []
    for number in range(files):
        path = folder / f"scan_{number:03d}.h5"
        with open(path, "wb") as handle:
            for _ in range(mb):
                handle.write(block)
        paths.append(path)
    os.sync()

    return paths


def timed(pull: Callable[[], None], target: Path, sources: list[Path]) -> float:
    """MB/s of one complete pull into an empty ``target``, checked by size."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    # The previous contender's unflushed writes must not slow this one down.
    os.sync()

    started = time.monotonic()
    pull()
    elapsed = time.monotonic() - started

    total = sum(path.stat().st_size for path in sources)
    pulled = sum(path.stat().st_size for path in target.iterdir())
    if pulled != total:
        raise RuntimeError(f"pulled {pulled} bytes, expected {total}")

    return total / elapsed / 1e6


def pull_with_hyperwheel(server: SshdServer, target: Path, concurrency: int) -> None:
    asyncio.run(_pull_all(server, target, concurrency))


async def _pull_all(server: SshdServer, target: Path, concurrency: int) -> None:
    client = ScannerClient(scanner_settings(server, concurrency=concurrency))
    slots = asyncio.Semaphore(concurrency)

    async def durable(offset: int) -> None:
        pass

    async def pull(remote: RemoteFile) -> None:
        async with slots:
            part = target / f"{remote.relative}.part"
            await client.pull(remote, part, resume_from=0, on_durable=durable)

    try:
        await asyncio.gather(*(pull(remote) for remote in await client.list_rrdf()))
    finally:
        await client.close()


def pull_with_cli_and_hash(
    server: SshdServer, sources: list[Path], target: Path
) -> None:
    """What hyperwheel guarantees, the CLI way: durable files, then digests."""
    pull_with_cli(server, sources, target, None, "-f")
    for path in sources:
        with open(target / path.name, "rb") as handle:
            hashlib.file_digest(handle, "sha384")


def pull_with_cli(
    server: SshdServer,
    sources: list[Path],
    target: Path,
    cipher: str | None,
    *flags: str,
) -> None:
    batch = "".join(f'get "{path}" "{target / path.name}"\n' for path in sources)
    options = ["-o", f"Ciphers={cipher}"] if cipher else []
    subprocess.run(
        [
            "sftp",
            "-q",
            *flags,
            "-b",
            "-",
            "-i",
            str(server.client_key),
            "-o",
            f"UserKnownHostsFile={server.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            *options,
            "-P",
            str(server.port),
            "127.0.0.1",
        ],
        input=batch.encode(),
        check=True,
        capture_output=True,
        timeout=3600,
    )


def pull_with_paramiko(server: SshdServer, sources: list[Path], target: Path) -> None:
    client = paramiko.SSHClient()
    client.load_host_keys(str(server.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        "127.0.0.1",
        port=server.port,
        key_filename=str(server.client_key),
        look_for_keys=False,
        allow_agent=False,
    )
    try:
        with client.open_sftp() as sftp:
            for path in sources:
                sftp.get(str(path), str(target / path.name))
    finally:
        client.close()


if __name__ == "__main__":
    main()
