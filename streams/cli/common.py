"""Wiring shared by subcommands: the root app, ``--json`` output, confirmation, logging, and where Kafka is
(starting the embedded broker when it is nowhere)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import orjson
import typer

from streams.config import LIBRDKAFKA_LOG, KafkaSettings
from streams.errors import ConfigError
from streams.kafka.admin import check_reachable
from streams.kafka.embedded import EmbeddedBroker
from streams.registry import RegistryServer


def examples(*lines: str) -> str:
    """A command's epilog: example invocations, one per line of the help."""
    return "\n\n".join(["Examples:", *(f"  $ {line}" for line in lines)])


# The root app: each command module declares its commands on it when imported (streams.cli imports them in
# help order).
app = typer.Typer(name="streams", no_args_is_help=True, rich_markup_mode="rich", add_completion=True,
                  pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]})
RUN, OPERATE, DEVELOP, MEASURE = "Run", "Operate", "Develop", "Measure"  # sections of `streams --help`


def emit_json(value: Any, indent: bool = False) -> int:
    """A command's result as one JSON document on stdout (everything else goes to stderr); 0, its exit status."""
    option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if indent else 0)
    sys.stdout.write(orjson.dumps(value, default=str, option=option).decode() + "\n")
    sys.stdout.flush()
    return 0


def confirm(yes: bool, question: str, not_a_terminal: str, refused: str) -> bool:
    """Whether a destructive step may go ahead: ``--yes``, or a "y" at a terminal (elsewhere ``not_a_terminal``
    is the error, as nobody can answer); on any other answer ``refused`` is printed."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise ConfigError(not_a_terminal)
    if input(f"{question} [y/N] ").strip().lower() == "y":
        return True
    print(refused)
    return False


def bootstrap_given(bootstrap: str | None) -> str | None:
    """``--bootstrap``, else ``$KAFKA_BOOTSTRAP_SERVERS``: None means the embedded broker would be started."""
    return bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None


def running_kafka(bootstrap: str | None, why: str) -> None:
    """Refuse to go on without a Kafka of the user's: a broker started for the command would be empty."""
    if not bootstrap_given(bootstrap):
        raise ConfigError(why)


@contextlib.contextmanager
def kafka_or_embedded(bootstrap: str | None, quiet: bool = False, service: bool = False) -> Iterator[KafkaSettings]:
    """Kafka settings from flags/environment; with neither, an embedded broker for this command's lifetime.

    A command that does one thing and exits (not a ``service``, which waits for Kafka and logs while it does)
    fails at once when no bootstrap server answers, and keeps librdkafka's connection chatter to itself: the
    command's own one-line error says what went wrong.
    """
    bootstrap = bootstrap_given(bootstrap)
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
