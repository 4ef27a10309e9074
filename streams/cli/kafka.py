"""``streams kafka start|stop|status``: a real Apache Kafka cluster (1 or 3 KRaft nodes) on this machine.

Its nodes run detached from the command; everything of the cluster (config, data, logs, pids) lives in
``--dir``, which is how ``stop`` and ``status`` find it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streams.cli.common import log, number
from streams.kafka.apache import KAFKA_VERSION, ApacheKafka

DEFAULT_DIR = Path(".streams-kafka")


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("kafka", help=f"run a real Apache Kafka {KAFKA_VERSION} cluster on this machine")
    ksub = p.add_subparsers(dest="kafka_command", metavar="ACTION", parser_class=type(p))
    ksub.required = True

    def with_dir(q: argparse.ArgumentParser) -> argparse.ArgumentParser:
        q.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                       help=f"the cluster's directory: config, data, logs, pids (default {DEFAULT_DIR})")
        return q

    start = with_dir(ksub.add_parser("start", help="start the cluster (formatting it on first start)"))
    start.add_argument("--nodes", type=int, choices=(1, 3), default=1,
                       help="KRaft nodes, each broker and controller (default 1)")
    start.add_argument("--port", type=number(int, 1, 65533),
                       help="first client port on 127.0.0.1; node N gets PORT+N-1 (default: free ports)")
    start.add_argument("--timeout", type=number(float, above=0.0), default=120.0,
                       help="seconds to wait until every node serves (default 120)")
    start.set_defaults(func=run_start)
    with_dir(ksub.add_parser("stop", help="stop the cluster's nodes (its data stays in --dir)")).set_defaults(
        func=run_stop)
    with_dir(ksub.add_parser("status", help="say whether each node runs; exit 1 when not all do")).set_defaults(
        func=run_status)


def run_start(args: argparse.Namespace) -> int:
    cluster = ApacheKafka(args.dir, nodes=args.nodes, port=args.port, log=log)
    cluster.start(detach=True, timeout_s=args.timeout)
    log(f"kafka: {cluster.size} node(s) of Apache Kafka {KAFKA_VERSION} serving from {cluster.root}")
    print(cluster.bootstrap, flush=True)  # stdout is only the bootstrap servers: KAFKA_BOOTSTRAP_SERVERS=$(...)
    return 0


def run_stop(args: argparse.Namespace) -> int:
    cluster = ApacheKafka(args.dir)
    if cluster.state() is None:
        print(f"streams: no Kafka cluster in {cluster.root}", file=sys.stderr)
        return 1
    cluster.stop()
    log(f"kafka: stopped the cluster in {cluster.root} (data kept; `streams kafka start --dir` starts it again)")
    return 0


def run_status(args: argparse.Namespace) -> int:
    cluster = ApacheKafka(args.dir)
    if cluster.state() is None:
        print(f"no Kafka cluster in {cluster.root}")
        return 1
    running = cluster.running()
    pids = cluster.pids()
    for node in cluster.nodes():
        what = f"running (pid {pids[node.id]})" if running.get(node.id) else "stopped"
        print(f"node {node.id}: 127.0.0.1:{node.port} {what}")
    up = all(running.values())
    print(f"bootstrap: {cluster.bootstrap}" if up else f"{sum(running.values())}/{len(running)} nodes running")
    return 0 if up else 1
