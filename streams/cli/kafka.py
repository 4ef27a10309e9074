"""``streams kafka start|stop|status``: a real Apache Kafka cluster (1 or 3 KRaft nodes) on this machine.

Its nodes run detached from the command; everything of the cluster (config, data, logs, pids) lives in
``--dir``, which is how ``stop`` and ``status`` find it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from streams.cli.common import RUN, app, emit_json, examples, log
from streams.cli.options import SECONDS, BadValue, flag, number
from streams.kafka.apache import KAFKA_VERSION, ApacheKafka

DEFAULT_DIR = Path(".streams-kafka")
Dir = Annotated[Path, typer.Option(help="the cluster's directory: config, data, logs, pids")]

kafka = typer.Typer(help=f"Run a real Apache Kafka {KAFKA_VERSION} cluster on this machine.", no_args_is_help=True,
                    epilog=examples("KAFKA_BOOTSTRAP_SERVERS=$(streams kafka start --nodes 3)",
                                    "streams kafka status", "streams kafka stop"))
app.add_typer(kafka, name="kafka", rich_help_panel=RUN)


def _nodes(text: str) -> int:
    if str(text) not in ("1", "3"):  # typer passes the default (1) through the parser too
        raise BadValue(f"invalid choice: {text!r} (choose from 1, 3)")
    return int(text)


@kafka.command(epilog=examples("streams kafka start --nodes 3 --port 19092"))
def start(
    dir: Dir = DEFAULT_DIR,
    nodes: Annotated[int, typer.Option(parser=_nodes, metavar="[1|3]",
                                       help="KRaft nodes, each broker and controller")] = 1,
    port: Annotated[int | None, typer.Option(parser=number(int, 1, 65533), help="first client port on 127.0.0.1; "
                                             "node N gets PORT+N-1 (default: free ports)")] = None,
    timeout: Annotated[float, typer.Option(parser=SECONDS, help="seconds to wait until every node serves")] = 120.0,
) -> int:
    """Start the cluster (formatting it on first start); print its bootstrap servers."""
    cluster = ApacheKafka(dir, nodes=nodes, port=port, log=log)
    cluster.start(detach=True, timeout_s=timeout)
    log(f"kafka: {cluster.size} node(s) of Apache Kafka {KAFKA_VERSION} serving from {cluster.root}")
    print(cluster.bootstrap, flush=True)  # stdout is only the bootstrap servers: KAFKA_BOOTSTRAP_SERVERS=$(...)
    return 0


@kafka.command(epilog=examples("streams kafka stop --dir .streams-kafka"))
def stop(dir: Dir = DEFAULT_DIR) -> int:
    """Stop the cluster's nodes (its data stays in --dir)."""
    cluster = ApacheKafka(dir)
    if cluster.state() is None:
        print(f"streams: no Kafka cluster in {cluster.root}", file=sys.stderr)
        return 1
    cluster.stop()
    log(f"kafka: stopped the cluster in {cluster.root} (data kept; `streams kafka start --dir` starts it again)")
    return 0


@kafka.command(epilog=examples("streams kafka status", "streams kafka status --json"))
def status(dir: Dir = DEFAULT_DIR,
           json: Annotated[bool, flag("--json", "print one JSON object: nodes, bootstrap, running")] = False) -> int:
    """Say whether each node runs; exit 1 when not all do."""
    cluster = ApacheKafka(dir)
    if cluster.state() is None:
        if json:
            emit_json({"dir": str(cluster.root), "exists": False, "running": False, "nodes": []})
        else:
            print(f"no Kafka cluster in {cluster.root}")
        return 1
    running, pids = cluster.running(), cluster.pids()
    up = all(running.values())
    if json:
        emit_json({"dir": str(cluster.root), "exists": True, "running": up, "bootstrap": cluster.bootstrap,
                   "nodes": [{"id": n.id, "port": n.port, "running": bool(running.get(n.id)),
                              "pid": pids.get(n.id) if running.get(n.id) else None} for n in cluster.nodes()]})
        return 0 if up else 1
    for node in cluster.nodes():
        what = f"running (pid {pids[node.id]})" if running.get(node.id) else "stopped"
        print(f"node {node.id}: 127.0.0.1:{node.port} {what}")
    print(f"bootstrap: {cluster.bootstrap}" if up else f"{sum(running.values())}/{len(running)} nodes running")
    return 0 if up else 1
