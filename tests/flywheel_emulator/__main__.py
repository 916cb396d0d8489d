"""Run the emulator by hand: ``python -m tests.flywheel_emulator --seed S.json``."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

from .seed import SeedError, load_seed
from .server import FlywheelEmulator


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.flywheel_emulator",
        description="Serve a Flywheel API emulator on 127.0.0.1 (a test partner).",
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--seed", type=Path, required=True, help="seed JSON file")
    parser.add_argument(
        "--data-dir", type=Path, help="keep file contents and state.json here"
    )
    parser.add_argument("--faults", type=Path, help="fault rules JSON file")
    parser.add_argument("--fault-seed", type=int, default=0, help="seed of fault RNG")
    parser.add_argument(
        "--signed-url",
        action="store_true",
        help="advertise the signed_url feature (ticketed uploads)",
    )
    return parser.parse_args(argv)


async def serve(arguments: argparse.Namespace) -> None:
    faults = None
    if arguments.faults is not None:
        faults = json.loads(arguments.faults.read_text("utf-8"))

    emulator = FlywheelEmulator(
        load_seed(arguments.seed),
        data_dir=arguments.data_dir,
        faults=faults,
        fault_seed=arguments.fault_seed,
        signed_url=arguments.signed_url,
    )
    await emulator.start(port=arguments.port)
    # Tests and scripts read this line to learn the port when they ask for 0.
    print(f"Flywheel emulator listening on {emulator.url}", flush=True)
    for key in emulator.seed.keys:
        print(f"  {key.user}: {emulator.sdk_key(key.key)}", flush=True)

    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop_requested.set)
    try:
        await stop_requested.wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        asyncio.run(serve(arguments))
    except (SeedError, OSError, ValueError) as error:
        print(f"flywheel emulator: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
