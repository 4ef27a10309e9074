"""The options and option parsers several commands share, declared once; a bad value is one line naming the option."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

N = TypeVar("N", int, float)


class BadValue(typer.BadParameter):
    """A flag's value is wrong: the CLI reports it as ``argument --flag: <message>`` and exits 2."""


def number(cast: Callable[[str], N], low: N | None = None, high: N | None = None,
           above: N | None = None) -> Callable[[str], N]:
    """A typer ``parser``: the text as a number within bounds, else one line (the CLI names the option)."""
    kind = "a whole number" if cast is int else "a number"

    def parse(text: str) -> N:
        try:
            value = cast(text)
        except ValueError:
            raise BadValue(f"must be {kind}, got {text!r}") from None
        if above is not None and not value > above:
            raise BadValue(f"must be > {above}, got {text!r}")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"<= {high}" if low is None else f"within {low}..{high}"
            raise BadValue(f"must be {bounds}, got {text!r}")
        return value

    return parse


SECONDS = number(float, above=0.0)
PORT = number(int, 0, 65535)
SHARE = number(float, 0.0, 1.0)  # a rate: a share of attempts, orders...


def choice(*values: str, upper: bool = False) -> Callable[[str], str]:
    """A typer ``parser`` refusing anything but ``values`` (``upper``: compared after upper-casing)."""
    def parse(text: str) -> str:
        value = text.upper() if upper else text
        if value not in values:
            raise BadValue(f"invalid choice: {text!r} (choose from {', '.join(values)})")
        return value
    return parse


def flag(name: str, help: str, panel: str | None = None) -> Any:
    """A boolean option spelled only ``name`` (typer would otherwise add a ``--no-...`` twin)."""
    return typer.Option(name, help=help, rich_help_panel=panel, metavar="")  # no value: no "<bool>" in the help


def one_of(*values: str) -> str:
    """The metavar of a :func:`choice` option."""
    return "[" + "|".join(values) + "]"


Bootstrap = Annotated[str | None, typer.Option(help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)",
                                               rich_help_panel="Connection")]
TopologyFile = Annotated[str, typer.Option(help="topology YAML file, or a built-in example: orders, loan, counter")]
Processor = Annotated[str | None, typer.Option(help="which processor of the topology (default: the only one)")]
Group = Annotated[str | None, typer.Option(help="consumer group (default: <topology>-<processor>)")]
TokenFile = Annotated[str | None, typer.Option(metavar="PATH", help="read the bearer token from this file (mode 600)")]
Yes = Annotated[bool, flag("--yes", "do not ask for confirmation")]
Registry = Annotated[str | None, typer.Option(help="schema registry URL (default: $SCHEMA_REGISTRY_URL or "
                                               "http://127.0.0.1:8081)", rich_help_panel="Connection")]


def exactly_one(hint: str, *given: object) -> None:
    """Options of which exactly one must be given: else a usage error naming them (``hint``: ``--a/--b``)."""
    if sum(g is not None and g is not False for g in given) != 1:
        raise BadValue("give exactly one of them", param_hint=hint)


F = TypeVar("F", bound=Callable[..., Any])


def with_options(options: Callable[..., Any]) -> Callable[[F], F]:
    """Give a command the options ``options`` declares (its keyword parameters; positional-only ones are not
    options) besides its own, as keyword arguments: options shared by several commands are written once."""
    def wrap(fn: F) -> F:
        # Evaluated here: typer reads a given __signature__ as it is, and this module postpones annotations.
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        shared = [p for p in inspect.signature(options, eval_str=True).parameters.values()
                  if p.kind is not p.POSITIONAL_ONLY]
        fn.__signature__ = sig.replace(parameters=[*own, *shared])  # type: ignore[attr-defined]
        fn.__annotations__ = {**{p.name: p.annotation for p in shared}, **fn.__annotations__}
        return fn
    return wrap

