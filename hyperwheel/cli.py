"""The ``hyperwheel`` command: run, status, retry, check-config."""

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from hyperwheel import __version__, logs
from hyperwheel.errors import ConfigError, Problem
from hyperwheel.privileges import act_as_store_owner
from hyperwheel.routing import cross_check, load_keychain, load_routes
from hyperwheel.settings import (
    Settings,
    default_config_path,
    inspect_settings,
    load_settings,
    paths_section,
)
from hyperwheel.status import (
    live_progress,
    render_history,
    render_table,
    snapshot,
    study_json,
    with_progress,
)
from hyperwheel.store import StateStore
from hyperwheel.study import StudyState

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    # Nothing hyperwheel writes should be readable by others: subject labels
    # and API keys live in these files.
    os.umask(0o027)
    logs.configure()
    args = _parser().parse_args(argv)
    config = args.config or default_config_path()

    return int(args.handler(args, config))


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="hyperwheel.toml (default: $HYPERWHEEL_CONFIG, then "
        "/etc/hyperwheel/hyperwheel.toml)",
    )
    parser = argparse.ArgumentParser(
        prog="hyperwheel", description=__doc__, parents=[common]
    )
    parser.set_defaults(config=None)
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", parents=[common], help="run the service")
    run.set_defaults(handler=_run)

    status = commands.add_parser("status", parents=[common], help="show studies")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument("study", nargs="?", help="StudyInstanceUID or Orthanc id")
    status.set_defaults(handler=_status)

    retry = commands.add_parser("retry", parents=[common], help="release a study")
    retry.add_argument(
        "--skip-rrdf",
        action="store_true",
        help="send a study held at the raw-data step on without raw data",
    )
    retry.add_argument("study", help="StudyInstanceUID or Orthanc id")
    retry.set_defaults(handler=_retry)

    check = commands.add_parser(
        "check-config", parents=[common], help="validate the configuration"
    )
    check.set_defaults(handler=_check_config)

    return parser


def _load(config: Path) -> Settings | None:
    try:
        return load_settings(config)
    except ConfigError as error:
        _print_problems(error.problems)
        return None


def _run(args: argparse.Namespace, config: Path) -> int:
    from hyperwheel.service import run_service

    settings = _load(config)
    if settings is None:
        return EXIT_PROBLEMS

    return run_service(settings)


def _status(args: argparse.Namespace, config: Path) -> int:
    settings = _load(config)
    if settings is None:
        return EXIT_PROBLEMS
    # Asked before dropping privileges: a lazy import may need root's files.
    progress = live_progress(settings.metrics)
    act_as_store_owner(settings.paths.state)

    async def show() -> int:
        store = await StateStore.open(settings.paths.state)
        try:
            if args.study is None:
                studies = await snapshot(store)
                studies = with_progress(studies, progress)
                if args.json:
                    print(json.dumps(studies, indent=2))
                else:
                    print(render_table(studies))
                return EXIT_OK
            record = await store.study(args.study)
            if record is None:
                print(f"no study {args.study!r}", file=sys.stderr)
                return EXIT_PROBLEMS
            history = await store.history(record.id)
            events = await store.events(record.id)
            if args.json:
                document = study_json(record)
                document["history"] = [asdict(entry) for entry in history]
                document["decisions"] = [asdict(event) for event in events]
                print(json.dumps(document, indent=2))
            else:
                print(render_history(record, history, events))
            return EXIT_OK
        finally:
            await store.close()

    return asyncio.run(show())


def _retry(args: argparse.Namespace, config: Path) -> int:
    settings = _load(config)
    if settings is None:
        return EXIT_PROBLEMS
    act_as_store_owner(settings.paths.state)

    async def release() -> int:
        store = await StateStore.open(settings.paths.state)
        try:
            record = await store.study(args.study)
            if record is None:
                print(f"no study {args.study!r}", file=sys.stderr)
                return EXIT_PROBLEMS
            if record.state is not StudyState.HELD:
                print(
                    f"study {args.study} is {record.state.name}, not HELD; "
                    "nothing to retry",
                    file=sys.stderr,
                )
                return EXIT_PROBLEMS
            target = await store.release(record.id, skip_rrdf=args.skip_rrdf)
            print(f"study {args.study} released to {target.name}")
            return EXIT_OK
        finally:
            await store.close()

    return asyncio.run(release())


def _check_config(args: argparse.Namespace, config: Path) -> int:
    settings, problems = inspect_settings(config)
    paths = settings.paths if settings is not None else paths_section(config)
    if paths is not None:
        routes, route_problems = load_routes(paths.routing)
        keys, key_problems = load_keychain(paths.keychain)
        problems += route_problems + key_problems
        if not route_problems and not key_problems:
            problems += cross_check(routes, keys, paths.routing, paths.keychain)
    if settings is not None:
        problems += _path_problems(settings)

    _print_problems(problems)
    errors = [p for p in problems if p.severity == "error"]
    if not errors:
        print(f"{config}: ok ({len(problems)} warning(s))")

    return EXIT_PROBLEMS if errors else EXIT_OK


def _path_problems(settings: Settings) -> list[Problem]:
    problems = []
    name = str(settings.source)
    scanner = settings.scanner
    if scanner is not None:
        for key_path in scanner.client_keys:
            if not key_path.exists():
                problems.append(
                    Problem(name, "scanner.client_keys", f"{key_path} does not exist")
                )
        if not scanner.known_hosts.exists():
            problems.append(
                Problem(
                    name, "scanner.known_hosts", f"{scanner.known_hosts} does not exist"
                )
            )
        elif not scanner.known_hosts.read_text(encoding="utf-8").strip():
            reason = "empty: add the scanner's host key before raw data can be pulled"
            problems.append(Problem(name, "scanner.known_hosts", reason, "warning"))

    return problems


def _print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)
