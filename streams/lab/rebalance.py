"""What a consumer group's rebalance protocol costs a running consumer, on a real Kafka, with bare clients.

``python -m streams.lab.rebalance --bootstrap HOST:PORT [--rounds N]`` runs, for each protocol the engine
could use (classic eager ``range``, its default; classic ``cooperative-sticky``; KIP-848
``group.protocol=consumer`` with the broker's ``range`` assignor), the same two events while records flow
into an 8-partition topic at a steady rate:

- **join**: member B (a child process) joins the group of member A. Reported: A's longest pause on the
  partitions it keeps (``join_pause_ms``: eager revokes everything, the incremental protocols nothing A keeps),
  and how long until B receives its first record (``handoff_ms``).
- **crash**: B is SIGKILLed. Reported: how long until A receives a record of a partition B held
  (``failover_ms``), which the session timeout bounds: the client's under the classic protocol, the broker's
  ``group.consumer.session.timeout.ms`` (45 s on a stock broker) under KIP-848.

The figures and the decision they led to are in docs/kafka.md; the bench's failover phase measures the
engine's own worker.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from streams.config import KafkaSettings
from streams.kafka.admin import Admin
from streams.kafka.client import plain_consumer, plain_producer
from streams.topology import TopicSpec

PARTITIONS = 8
CLASSIC = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 600}
PROTOCOLS: Mapping[str, Mapping[str, object]] = {
    "classic-range": {**CLASSIC, "partition.assignment.strategy": "range"},
    "classic-cooperative": {**CLASSIC, "partition.assignment.strategy": "cooperative-sticky"},
    "consumer-range": {"group.protocol": "consumer", "group.remote.assignor": "range"},
}

# Member B: consume, print the time of its first record and its assignment, until killed.
_MEMBER_B = """
import json, sys, time
from confluent_kafka import Consumer
conf = json.loads(sys.argv[1]); topic = sys.argv[2]
c = Consumer(conf); c.subscribe([topic]); first = None
while True:
    m = c.poll(0.05)
    if m is not None and m.error() is None and first is None:
        first = time.time()
        print(json.dumps({"first": first}), flush=True)
    if first is not None:
        print(json.dumps({"owned": sorted(tp.partition for tp in c.assignment())}), flush=True)
        time.sleep(0.2)
"""


@dataclass
class Round:
    protocol: str
    join_pause_ms: float
    handoff_ms: float
    failover_ms: float | None


def _conf(kafka: KafkaSettings, group: str, protocol: str) -> dict[str, object]:
    return {"bootstrap.servers": kafka.bootstrap_servers, "group.id": group, "auto.offset.reset": "latest",
            "enable.auto.commit": False, "fetch.wait.max.ms": 100, **PROTOCOLS[protocol]}


def one_round(kafka: KafkaSettings, protocol: str, rate_per_s: float = 400.0) -> Round:
    topic, group = f"rebalance-{uuid.uuid4().hex[:8]}", f"rebalance-{uuid.uuid4().hex[:8]}"
    Admin(kafka).ensure([TopicSpec(topic, PARTITIONS)])
    stop = threading.Event()

    def produce() -> None:
        p = plain_producer({"bootstrap.servers": kafka.bootstrap_servers, "linger.ms": 5})
        n = 0
        start = time.monotonic()
        while not stop.is_set():
            p.produce(topic, b"x", partition=n % PARTITIONS)
            n += 1
            p.poll(0)
            time.sleep(max(0.0, start + n / rate_per_s - time.monotonic()))
        p.flush(10)

    feeder = threading.Thread(target=produce, daemon=True)
    feeder.start()
    a = plain_consumer(_conf(kafka, group, protocol))
    a.subscribe([topic])
    seen: list[tuple[float, int]] = []

    def poll_until(t_end: float) -> None:
        while time.time() < t_end:
            m = a.poll(0.02)
            if m is not None and m.error() is None:
                seen.append((time.time(), int(m.partition() or 0)))

    poll_until(time.time() + 8)  # A alone, settled and receiving
    joined = time.time()
    b = subprocess.Popen([sys.executable, "-c", _MEMBER_B, json.dumps(_conf(kafka, group, protocol)), topic],
                         stdout=subprocess.PIPE, text=True)
    first_b: list[float] = []
    owned_b: list[list[int]] = []

    def read_b() -> None:
        assert b.stdout is not None
        for line in b.stdout:
            msg = json.loads(line)
            (first_b.append(msg["first"]) if "first" in msg else owned_b.append(msg["owned"]))

    threading.Thread(target=read_b, daemon=True).start()
    poll_until(joined + 15)
    kept = {int(tp.partition) for tp in a.assignment()}
    on_kept = [t for t, p in seen if p in kept and t >= joined - 1]
    pause = max((y - x for x, y in itertools.pairwise(on_kept)), default=0.0)
    b_parts = set(owned_b[-1]) if owned_b else set()
    killed = time.time()
    os.kill(b.pid, signal.SIGKILL)
    b.wait()
    failover: float | None = None
    deadline = killed + 90
    while failover is None and time.time() < deadline:
        m = a.poll(0.02)
        if m is not None and m.error() is None and int(m.partition() or 0) in b_parts:
            failover = time.time() - killed
    stop.set()
    feeder.join(15)
    a.close()
    return Round(protocol, round(pause * 1000, 1), round(((first_b or [joined])[0] - joined) * 1000, 1),
                 None if failover is None else round(failover * 1000, 1))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streams.lab.rebalance", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", required=True, help="a real Kafka's bootstrap servers")
    ap.add_argument("--rounds", type=int, default=1, help="rounds per protocol (default 1)")
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), action="append", help="only these (repeatable)")
    args = ap.parse_args(argv)
    kafka = KafkaSettings(bootstrap_servers=args.bootstrap)
    for _ in range(args.rounds):
        for protocol in args.protocol or PROTOCOLS:
            print(json.dumps(asdict(one_round(kafka, protocol))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
