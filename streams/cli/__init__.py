"""The ``streams`` command: the only place where concrete adapters are wired together.

Each subcommand lives in its own module with ``add(subparsers)``; errors of ours become one readable line on
stderr and a non-zero exit, never a traceback. Foreign exceptions are translated where they arise (the Kafka
and HTTP adapters), so nothing but ours reaches here.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from streams.cli.common import configure_logging, configure_tracing
from streams.errors import StreamsError

# Subcommand modules, in help order. Each defines add(subparsers) and sets `func` on its parser.
COMMANDS = [
    "streams.cli.broker",
    "streams.cli.kafka",
    "streams.cli.topics",
    "streams.cli.registry",
    "streams.cli.schemas",
    "streams.cli.worker",
    "streams.cli.dlq",
    "streams.cli.replay",
    "streams.cli.status",
    "streams.cli.signal",
    "streams.cli.demo",
    "streams.cli.init",
    "streams.cli.dev",
    "streams.cli.lag",
    "streams.cli.doctor",
    "streams.cli.dashboard",
    "streams.cli.workflow",
    "streams.cli.bench",
    "streams.cli.chaos",
    "streams.cli.acls",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"streams: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="streams", description="A Kafka-native workflow engine.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(name).add(sub)
    return parser


def exit_code(exc: StreamsError) -> int:
    """2: the input is wrong (a flag, a file, a name), so running again unchanged fails again. 1: the system
    failed (a broker, registry or worker did not answer), so running again later may succeed."""
    return 1 if exc.retryable else 2


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    configure_tracing()
    try:
        rc = args.func(args)
    except StreamsError as exc:
        print(f"streams: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)
