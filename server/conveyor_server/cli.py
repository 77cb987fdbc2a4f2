"""The `conveyor` command: `conveyor serve` and the other subcommands.

Every `serve` flag can also come from an environment variable named
CONVEYOR_<FLAG> (e.g. --data-dir -> CONVEYOR_DATA_DIR); a flag on the command
line wins over the variable. Both are declared once, in config.SERVE_OPTIONS,
and parsed by the same function.

Subcommands from other packages (the worker SDK's `worker`, the benchmarks'
`bench`) register through the `conveyor.commands` entry point group, so this
package never imports them: each entry point is a function that adds its
subparser. One whose package is not installed (a slim image without `bench`)
is left out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, NoReturn

from conveyor_server import log_format
from conveyor_server.commands import health, queues, tasks
from conveyor_server.commands import schedule as schedule_commands
from conveyor_server.config import SERVE_OPTIONS, ServeConfig, ServeOption, config_from

ENTRY_POINT_GROUP = "conveyor.commands"


class CommandParser(argparse.ArgumentParser):
    """argparse with a one-line error (exit 2): `conveyor serve: --listen: ...`."""

    def error(self, message: str) -> NoReturn:
        message = message.removeprefix("argument ")
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class BadVariable:
    """A CONVEYOR_* value that does not parse. Kept as the option's default, so that
    only `serve` refuses it (other commands build the same parser) and a flag given
    on the command line replaces it."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __str__(self) -> str:
        return "invalid, see the variable"


def _argparse_type(option: ServeOption) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return option.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = option.dest  # argparse names the flag's type in some messages
    return parse


def _shown(option: ServeOption) -> str:  # the built-in default, whatever the environment says
    default = option.default
    return option.show(default) if default not in ("", ()) else "none"


def _add_serve(subparsers: Any) -> None:
    p = subparsers.add_parser("serve", help="run the broker daemon")
    for option in SERVE_OPTIONS:
        default = option.default
        raw = os.environ.get(option.env)
        if raw is not None:
            try:
                default = option.parse(raw)
            except ValueError as exc:  # said when `serve` runs, unless the flag replaces it
                default = BadVariable(f"{option.env}={raw!r}: {exc}")
        p.add_argument(
            option.flag,
            dest=option.dest,
            default=default,
            type=_argparse_type(option),
            help=f"{option.help} [env {option.env}; default {_shown(option)}]",
        )
    p.set_defaults(run=_run_serve)


def _refusal(config: ServeConfig) -> str | None:
    """What makes this configuration unusable before anything opens, or None."""
    if bool(config.tls_cert) != bool(config.tls_key):
        return "--tls-cert and --tls-key go together"
    if config.tls_client_ca and not config.tls_cert:
        return "--tls-client-ca needs --tls-cert and --tls-key"
    if config.database_url and config.max_store_bytes != ServeConfig().max_store_bytes:
        # the PostgreSQL store cannot enforce it: refused rather than silently ignored
        return "--max-store-bytes limits the LMDB store only; size PostgreSQL itself"
    data_dir = Path(config.data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        return f"--data-dir {config.data_dir!r} is not a directory"
    return None


def _run_serve(args: argparse.Namespace) -> int:
    from conveyor_server.app import serve
    from conveyor_server.core.errors import ConveyorError

    bad = [value for value in vars(args).values() if isinstance(value, BadVariable)]
    if bad:
        print(f"conveyor serve: {bad[0].message} (see conveyor serve --help)", file=sys.stderr)
        return 2
    config = config_from(vars(args))
    refusal = _refusal(config)
    if refusal is not None:
        print(f"conveyor: {refusal}", file=sys.stderr)
        return 2
    log_format.configure(config.log_level, config.log_format, config.auth_tokens)
    try:
        asyncio.run(serve(config))
    except ConveyorError as exc:  # e.g. data dir locked, schema mismatch: say it, no traceback
        print(f"conveyor: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the data dir cannot be created
        print(f"conveyor: {exc}", file=sys.stderr)
        return 2
    return 0


def _plugin_commands() -> list[Callable[[Any], None]]:
    """Subcommands other installed packages declare (entry point group conveyor.commands)."""
    found = []
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        try:
            found.append(point.load())
        except ImportError:  # declared by this distribution, but that package is not installed
            continue
    return found


def _add_migrate(subparsers: Any) -> None:
    p = subparsers.add_parser("migrate", help="create or migrate the PostgreSQL store's schema")
    p.add_argument(
        "--database-url",
        default=os.environ.get("CONVEYOR_DATABASE_URL", ""),
        help="postgresql:// URL [env CONVEYOR_DATABASE_URL]",
    )
    p.set_defaults(run=_run_migrate)


def _run_migrate(args: argparse.Namespace) -> int:
    from conveyor_server.config import parse_database_url
    from conveyor_server.core.errors import ConveyorError

    url = parse_database_url(args.database_url)  # ValueError: exit 2 in main()
    if not url:
        print("conveyor migrate: --database-url is required", file=sys.stderr)
        return 2
    from conveyor_server.store.pg_store import migrate

    try:
        version = migrate(url)
    except ConveyorError as exc:
        print(f"conveyor: {exc}", file=sys.stderr)
        return 2
    print(f"schema version {version}")
    return 0


#: Each adds one subcommand to the parser.
SUBCOMMANDS: list[Callable[[Any], None]] = [
    _add_serve,
    _add_migrate,
    *schedule_commands.SUBCOMMANDS,
    *queues.SUBCOMMANDS,
    *tasks.SUBCOMMANDS,
    *health.SUBCOMMANDS,
]


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="conveyor", description="Conveyor task broker")
    parser.add_argument("--version", action="version", version=f"conveyor {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    for add in [*SUBCOMMANDS, *_plugin_commands()]:
        add(subparsers)
    return parser


def _version() -> str:
    from conveyor_server import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.run(args)
    except (ValueError, OverflowError) as exc:  # the boundary: a value no check above caught
        print(f"conveyor {args.command}: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)
