"""The ``streams`` command (typer + rich): the only place where concrete adapters are wired together.

Each command lives in its own module, which declares it on the root app (:data:`streams.cli.common.app`) with
its typed options as the parameters of its body. Every error ends the same way, decided here: one line on
stderr, exit 2 for bad input (a usage error or a non-retryable error of ours), 1 for a failure of the system,
no traceback unless ``--debug``. Foreign exceptions are translated where they arise (the Kafka and HTTP
adapters), so nothing but ours reaches here.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import typer
from typer import _click as click  # typer's own copy of click: its exceptions are what parsing raises
from typer._click.exceptions import BadParameter, ClickException, MissingParameter, NoArgsIsHelpError, UsageError
from typer.core import TyperGroup as Group
from typer.core import TyperOption as Option
from typer.exceptions import Abort, Exit

from streams.cli.common import app, configure_logging, configure_tracing, escape_controls
from streams.cli.options import flag
from streams.errors import StreamsError

# Command modules, in help order: importing one declares its command(s) on the app.
COMMANDS = [
    "streams.cli.worker",
    "streams.cli.dev",
    "streams.cli.demo",
    "streams.cli.broker",
    "streams.cli.kafka",
    "streams.cli.registry",
    "streams.cli.dashboard",
    "streams.cli.topics",
    "streams.cli.schemas",
    "streams.cli.dlq",
    "streams.cli.replay",
    "streams.cli.status",
    "streams.cli.signal",
    "streams.cli.lag",
    "streams.cli.doctor",
    "streams.cli.acls",
    "streams.cli.init",
    "streams.cli.workflow",
    "streams.cli.bench",
    "streams.cli.chaos",
]

# Options that took several values (argparse nargs="+"), spelled `--partitions 0 1` in scripts and docs: each
# value after them becomes its own `--partitions P`, which the commands declare as repeatable.
_VARIADIC = ("--partitions", "--positions")
_DEBUG = {"on": False}


def _version() -> str:
    try:
        return version("streams")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        print(f"streams {_version()}")
        raise typer.Exit(0)


def _root(
    show_version: Annotated[bool, typer.Option("--version", help="print the package version and exit", metavar="",
                                               callback=_show_version, is_eager=True)] = False,
    debug: Annotated[bool, flag("--debug", "show the traceback of an error (default: one line; or set "
                                "STREAMS_DEBUG=1)")] = False,
) -> None:
    """A Kafka-native workflow engine: per-entity state machines in stream workers."""
    _DEBUG["on"] = debug or _DEBUG["on"]
    configure_logging()
    configure_tracing()


for _name in COMMANDS:
    importlib.import_module(_name)
app.callback(invoke_without_command=False)(_root)


_COMMAND: dict[str, click.Command] = {}


def command() -> click.Command:
    """The click command the app compiles to, built once per process (tests call :func:`main` many times)."""
    if "root" not in _COMMAND:
        _COMMAND["root"] = _metavars(typer.main.get_command(app))
    return _COMMAND["root"]


def _metavars(cmd: click.Command) -> click.Command:
    """An option's value is shown as its name (``--topology TOPOLOGY``, as argparse did), not as a Python type
    (``<str>``); a flag takes no value and shows none."""
    for param in cmd.params:
        if isinstance(param, Option) and param.metavar is None:
            param.metavar = "" if param.is_flag else str(param.name).upper()
    for sub in getattr(cmd, "commands", {}).values():
        _metavars(sub)
    return cmd


def parse(argv: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """The command path and the leaf's parameters ``argv`` names, without running it (compose files are checked
    this way). A bad ``argv`` raises click's UsageError."""
    ctx = command().make_context("streams", _spread(argv), resilient_parsing=False)
    path: list[str] = []
    while isinstance(ctx.command, Group) and (left := [*getattr(ctx, "_protected_args", []), *ctx.args]):
        name, sub, rest = ctx.command.resolve_command(ctx, left)
        assert name is not None and sub is not None
        path.append(name)
        ctx = sub.make_context(name, rest, parent=ctx)
    return path, dict(ctx.params)


def exit_code(exc: StreamsError) -> int:
    """2: the input is wrong (a flag, a file, a name), so running again unchanged fails again. 1: the system
    failed (a broker, registry or worker did not answer), so running again later may succeed."""
    return 1 if exc.retryable else 2


def _spread(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    flag = None
    for arg in argv:
        if arg in _VARIADIC:
            flag = arg
        elif flag is not None and not arg.startswith("-") and out[-1] != flag:
            out.append(flag)
        elif arg.startswith("-"):
            flag = None
        out.append(arg)
    return out


def usage_line(exc: UsageError) -> str:
    """click's usage error as the one line argparse used to print: what was wrong, and where help is."""
    if isinstance(exc, MissingParameter):
        text = exc.format_message()
    elif isinstance(exc, BadParameter) and exc.param is not None:
        names = exc.param.opts if isinstance(exc.param, Option) else [str(exc.param.name).upper()]
        text = f"argument {'/'.join(names)}: {exc.message}"
    elif isinstance(exc, BadParameter) and isinstance(exc.param_hint, str):  # raised by a command's own check
        text = f"argument {exc.param_hint}: {exc.message}"
    else:
        text = exc.format_message()
    where = exc.ctx.command_path if exc.ctx is not None else "streams"
    return f"streams: error: {' '.join(text.split())} (see `{where} --help`)"


def main(argv: Sequence[str] | None = None) -> int:
    args = _spread(sys.argv[1:] if argv is None else argv)
    _DEBUG["on"] = bool(os.environ.get("STREAMS_DEBUG"))
    try:
        rc = command().main(args=args, prog_name="streams", standalone_mode=False)
    except NoArgsIsHelpError:  # `streams` alone, or `streams topics`: typer has shown what there is to choose from
        return 2
    except UsageError as exc:
        print(escape_controls(usage_line(exc)), file=sys.stderr)
        return 2
    except Exit as exc:
        return int(exc.exit_code)
    except ClickException as exc:  # e.g. a file option that cannot be opened
        print(escape_controls(f"streams: error: {' '.join(exc.format_message().split())}"), file=sys.stderr)
        return int(exc.exit_code)
    except StreamsError as exc:
        if _DEBUG["on"]:
            traceback.print_exc()
        print(escape_controls(f"streams: {type(exc).__name__}: {exc}"), file=sys.stderr)  # input may be in it
        return exit_code(exc)
    except (KeyboardInterrupt, Abort):
        return 130
    except Exception as exc:  # a bug of ours: still one line, with the way to see more
        if _DEBUG["on"]:
            raise
        print(escape_controls(f"streams: internal error: {type(exc).__name__}: {exc} (run `streams --debug ...` "
                              "for the traceback)"), file=sys.stderr)
        return 1
    return int(rc or 0)
