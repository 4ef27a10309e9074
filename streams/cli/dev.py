"""``streams dev``: a project's whole topology on one machine, in one terminal.

Broker (embedded Tansu, or ``$KAFKA_BOOTSTRAP_SERVERS``), schema registry (embedded, or ``$SCHEMA_REGISTRY_URL``),
the topology's topics, its schemas registered, and one worker process per processor, each serving HTTP (status,
signals, metrics). Workers' log lines are prefixed with their processor's name; a summary of entities per state
follows every few seconds when it changed. Ctrl-C or SIGTERM stops everything and exits 0; a worker that dies
on its own stops everything with exit 1 (see :mod:`streams.ops.dev` for why not a restart).
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from streams.cli.common import DEVELOP, app, bootstrap_given, examples, kafka_or_embedded, registry_or_embedded
from streams.cli.options import SECONDS, Bootstrap
from streams.cli.progress import progress
from streams.contracts import Catalogue, RegistryClient, RegistrySettings
from streams.errors import ConfigError
from streams.kafka.admin import Admin
from streams.kafka.embedded import free_port
from streams.ops.dashboard import beside, groups_of
from streams.ops.dev import Supervisor, census, child_env, register_schemas, summary_line
from streams.processors.avro import default_schemas
from streams.topology import load


@app.command(rich_help_panel=DEVELOP, epilog=examples(
    "streams dev   # in a project made by `streams init`",
    "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 streams dev --topology topology.yaml --summary-every 10"))
def dev(
    topology: Annotated[str, typer.Option(help="topology YAML file")] = "topology.yaml",
    summary_every: Annotated[float, typer.Option(parser=SECONDS, metavar="SECONDS", help="how often to print the "
                                                 "entities-per-state summary when it changed")] = 5.0,
    ready_timeout: Annotated[float, typer.Option(parser=SECONDS, metavar="SECONDS", help="how long the workers "
                                                 "may take to start processing")] = 120.0,
    bootstrap: Bootstrap = None,
) -> int:
    """Run a project's whole topology locally (broker, registry, every worker)."""
    path = Path(topology)
    if not path.is_file():
        raise ConfigError(f"no topology at {path} (run `streams dev` in a project from `streams init`, "
                          "or give --topology FILE)")
    topo = load(path)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    out = Supervisor(sys.stdout, {})
    with kafka_or_embedded(bootstrap, quiet=True) as kafka, registry_or_embedded(kafka, "dev") as registry, \
            tempfile.TemporaryDirectory(prefix="streams-dev-") as state:
        embedded = not bootstrap_given(bootstrap)
        with progress() as bar:
            Admin(kafka).ensure(topo.all_topics(), bar)
            subjects = register_schemas(Catalogue.load(topo.schemas or default_schemas()),
                                        RegistryClient(RegistrySettings.from_env(registry)),
                                        (str(p.options.get("subject_strategy", "topic"))
                                         for p in topo.processors.values()), bar)
        out.env = child_env(os.environ, kafka.bootstrap_servers, registry, str(path.resolve().parent))
        out.say(f"streams dev: topology {path} ({topo.name}), {len(topo.all_topics())} topics, "
                f"{subjects} schema subjects registered")
        out.say(f"  kafka     {kafka.bootstrap_servers}{' (embedded, memory-only)' if embedded else ''}")
        out.say(f"  registry  {registry}")
        out.say(f"  export KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers} SCHEMA_REGISTRY_URL={registry}"
                "   # for streams signal in another terminal")
        for name in topo.processors:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            out.say(f"  worker    {name:<14} {url}")
            out.start(name, [sys.executable, "-m", "streams", "worker", "--topology", str(path.resolve()),
                             "--processor", name, "--state-dir", str(Path(state) / name), "--http-port", str(port),
                             "--instance-id", f"dev-{name}"], url)
        try:
            with beside(kafka, groups_of(topo), out.say, "dev", token=os.environ.get("STREAMS_HTTP_TOKEN")):
                return _watch(out, stop, summary_every, ready_timeout)
        finally:
            out.stop()
            out.say("dev: stopped")


def _watch(out: Supervisor, stop: threading.Event, summary_every: float, ready_timeout: float) -> int:
    late = out.wait_ready(ready_timeout, stop)
    if not stop.is_set() and not out.exited():
        if late:
            out.say(f"dev: {', '.join(c.name for c in late)} not processing after {ready_timeout:.0f}s")
        else:
            out.say("dev: every worker is processing; Ctrl-C stops")
    urls = [c.url for c in out.children if c.url]
    last, shown_at = "", 0.0
    while not stop.wait(0.25):
        dead = out.exited()
        if dead:
            for c in dead:
                out.say(f"dev: {c.name} exited with code {c.proc.returncode}; stopping everything")
            return 1
        if time.monotonic() - shown_at >= summary_every:
            line = summary_line(*census(urls))
            shown_at = time.monotonic()
            if line != last:
                out.say(line)
                last = line
    return 0
