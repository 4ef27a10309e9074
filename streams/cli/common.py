"""Wiring shared by subcommands: where Kafka is, and starting the embedded broker when it is nowhere."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

import orjson
import typer

from streams.config import LIBRDKAFKA_LOG, KafkaSettings
from streams.kafka.admin import check_reachable
from streams.kafka.embedded import EmbeddedBroker
from streams.registry import RegistryServer

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

# The option every command that talks to Kafka takes, declared once.
Bootstrap = Annotated[str | None, typer.Option(help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)",
                                               rich_help_panel="Connection")]


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


def examples(*lines: str) -> str:
    """A command's epilog: example invocations, one per line of the help."""
    return "\n\n".join(["Examples:", *(f"  $ {line}" for line in lines)])


def namespace(**values: Any) -> argparse.Namespace:
    """The parsed options as the attribute bag the command bodies read (``args.topology``...)."""
    return argparse.Namespace(**values)


@contextlib.contextmanager
def kafka_or_embedded(args: argparse.Namespace, quiet: bool = False, service: bool = False) -> Iterator[KafkaSettings]:
    """Kafka settings from flags/environment; with neither, an embedded broker for this command's lifetime.

    A command that does one thing and exits (not a ``service``, which waits for Kafka and logs while it does)
    fails at once when no bootstrap server answers, and keeps librdkafka's connection chatter to itself: the
    command's own one-line error says what went wrong.
    """
    bootstrap = getattr(args, "bootstrap", None) or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap:
        settings = KafkaSettings.from_env(bootstrap)
        if service:
            yield settings
            return
        check_reachable(settings)
        LIBRDKAFKA_LOG.disabled = True
        try:
            yield settings
        finally:
            LIBRDKAFKA_LOG.disabled = False
        return
    with EmbeddedBroker() as broker:
        if not quiet:
            print(f"streams: started embedded broker on {broker.bootstrap} (memory-only)", file=sys.stderr)
        yield broker.settings()


@contextlib.contextmanager
def registry_or_embedded(kafka: KafkaSettings, who: str) -> Iterator[str]:
    """The schema registry's URL: ``$SCHEMA_REGISTRY_URL``, else an embedded one on ``kafka`` for the block."""
    url = os.environ.get("SCHEMA_REGISTRY_URL")
    if url:
        yield url
        return
    with RegistryServer(kafka, port=0, topic="_streams_schemas") as reg:
        log(f"{who}: started embedded schema registry on {reg.url}")
        yield reg.url


_STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class _Json(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the structured fields (entity key, trace
    id, offsets...) a call passed in ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        out.update({k: v for k, v in vars(record).items() if k not in _STD})
        return orjson.dumps(out, default=str).decode()


# Control characters (C0, DEL, C1), line and paragraph separators, and bidi overrides: what lets text from outside
# (a record key, a header, a URL, a subject) end a log line early, forge the next one or recolour a terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def escape_controls(text: str) -> str:
    """``text`` with every control character written as its Python escape (``\\n``, ``\\x1b``, ``\\u202e``)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class _Text(logging.Formatter):
    """The terminal form: the message, then the structured fields as key=value; one record is one line, whatever
    the message carries (the JSON form is safe by construction: its encoder escapes them)."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STD)
        return escape_controls(record.getMessage() + (f"  [{extras}]" if extras else ""))


def configure_logging(fmt: str | None = None) -> None:
    """``STREAMS_LOG_FORMAT=json`` for log shippers; human-readable text otherwise. Idempotent."""
    fmt = (fmt or os.environ.get("STREAMS_LOG_FORMAT") or "text").lower()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Json() if fmt == "json" else _Text())
    if fmt == "json":
        logging.Formatter.converter = time.gmtime
    root = logging.getLogger("streams")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def log(msg: str) -> None:
    logging.getLogger("streams").info(msg)


def configure_tracing() -> None:
    """Export the workers' OpenTelemetry spans when asked the standard way (``OTEL_TRACES_EXPORTER``):
    ``console``, or ``otlp`` when opentelemetry-exporter-otlp is installed. Without the otel extra, nothing."""
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "").lower()
    if kind not in ("console", "otlp"):
        return
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError:
        log("tracing: OTEL_TRACES_EXPORTER is set but the otel extra is not installed (pip install streams[otel])")
        return
    exporter: SpanExporter
    if kind == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter,
            )
        except ImportError:
            log("tracing: OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http")
            return
        exporter = OTLPSpanExporter()
    else:
        exporter = ConsoleSpanExporter(out=sys.stderr)
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME",
                                                                                       "streams")}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


F = TypeVar("F", bound=Callable[..., Any])


def with_options(options: Callable[..., Any]) -> Callable[[F], F]:
    """Give a command the options ``options`` declares (its parameters) besides its own, as keyword arguments:
    options shared by several commands (``worker`` and ``service``) are written once."""
    def wrap(fn: F) -> F:
        # Evaluated here: typer reads a given __signature__ as it is, and this module postpones annotations.
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        shared = list(inspect.signature(options, eval_str=True).parameters.values())
        fn.__signature__ = sig.replace(parameters=[*own, *shared])  # type: ignore[attr-defined]
        fn.__annotations__ = {**options.__annotations__, **fn.__annotations__}
        return fn
    return wrap


# Sections of `streams --help`.
RUN, OPERATE, DEVELOP, MEASURE = "Run", "Operate", "Develop", "Measure"
