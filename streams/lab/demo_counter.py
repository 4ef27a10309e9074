"""``streams demo --counter``'s driver: the runtime alone end to end, with the built-in counter processor.

Broker, topics, two worker processes, generated records (a few of them poison), then a summary that checks
the result against an independent count: every record applied exactly once, poison in the dead-letter topic.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from streams.config import KafkaSettings
from streams.kafka.admin import Admin
from streams.kafka.client import plain_producer
from streams.kafka.lag import LagReader
from streams.lab.demo import Log, Report, finish, workers
from streams.ops.dashboard import beside
from streams.progress import Progress
from streams.records import H_EVENT_ID
from streams.runtime.rebuild import committed_offsets, rebuild
from streams.state import entity
from streams.state.store import PartitionStore, store_path
from streams.topology import Topology, load

TOPOLOGY = "counter"  # the built-in example topology (streams.topology.EXAMPLES)


def _generate(kafka: KafkaSettings, topic: str, n: int, keys: int, poison: int) -> dict[str, tuple[int, int]]:
    producer = plain_producer({"bootstrap.servers": kafka.bootstrap_servers, "linger.ms": 10,
                         "partitioner": "murmur2_random", **kafka.client})
    expected: dict[str, tuple[int, int]] = {}
    every = max(n // max(poison, 1), 1)
    for i in range(n):
        key = f"account-{i % keys}"
        amount = (i * 7919) % 100 + 1
        producer.produce(topic, orjson.dumps({"amount": amount}), key.encode(),
                         headers=[(H_EVENT_ID, f"demo-{i}".encode())])
        c, t = expected.get(key, (0, 0))
        expected[key] = (c + 1, t + amount)
        if poison and i % every == every // 2:
            producer.produce(topic, b"\xffnot json", key.encode(), headers=[(H_EVENT_ID, f"poison-{i}".encode())])
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(60)
    return expected


def _log_end(kafka: KafkaSettings, topic: str, partitions: int) -> dict[int, int]:
    marks = LagReader(kafka).watermarks((topic, p) for p in range(partitions))
    return {p: marks[(topic, p)].log_end for p in range(partitions)}


def run(kafka: KafkaSettings, bar: Progress, log: Log, records: int, keys: int, poison: int, processes: int,
        fresh_topics: bool) -> Report:
    """``fresh_topics``: on a Kafka of the user's, topics of this run's own (on the embedded broker, nothing
    else is there)."""
    ns = f"demo{uuid.uuid4().hex[:6]}-" if fresh_topics else ""
    topo = load(TOPOLOGY, {**os.environ, "STREAMS_NS": ns})
    proc = topo.processor(None)
    group = topo.default_group(proc)
    with tempfile.TemporaryDirectory(prefix="streams-demo-") as tmp, beside(kafka, [group], log, "demo", linger=True):
        Admin(kafka).ensure(topo.all_topics())
        parts = topo.topics[proc.inputs[0]].partitions
        env = {**os.environ, **kafka.child_env(), "STREAMS_NS": ns}
        specs = [(f"worker{i}", ["worker", "--topology", TOPOLOGY]) for i in range(processes)]
        with workers(specs, env, Path(tmp), bar) as procs:
            log(f"demo: {processes} workers started; generating {records} records over {keys} keys")
            t0 = time.monotonic()
            expected = _generate(kafka, proc.inputs[0], records, keys, poison)
            total = sum(_log_end(kafka, proc.inputs[0], parts).values())
            def processed() -> int:
                done = committed_offsets(kafka, group, proc.inputs, range(parts))
                return min(sum(max(done.get((proc.inputs[0], p), 0), 0) for p in range(parts)), total)

            if not finish(f"demo: {total} records processed", total, processed, math.inf, bar, procs, log):
                return Report([], False)
            elapsed = time.monotonic() - t0
        return _summary(kafka, topo, tmp, expected, total, elapsed, poison)


def _summary(kafka: KafkaSettings, topo: Topology, tmp: str, expected: dict[str, tuple[int, int]],
             total: int, elapsed: float, poison: int) -> Report:
    proc = topo.processor(None)
    parts = topo.topics[proc.inputs[0]].partitions
    into = Path(tmp) / "rebuilt"
    rebuild(kafka, topo.default_group(proc), list(proc.inputs), proc.changelog, proc.store, range(parts), into)
    state: dict[str, tuple[int, int]] = {}
    for p in range(parts):
        store = PartitionStore(store_path(into, proc.store, p), p)
        for k, v in store.entities():
            count, tot = orjson.loads(entity.decode(v).state or b"null")
            state[k.decode()] = (count, tot)
        store.close()
    dlq_parts = next(t.partitions for t in topo.all_topics() if t.name == topo.dlq_topic)
    dead = sum(_log_end(kafka, topo.dlq_topic, dlq_parts).values())
    ok = state == expected and dead == poison
    out: list[str] = []
    say = out.append
    say("streams demo summary")
    say(f"  records        {total} in {elapsed:.1f}s ({total / elapsed:,.0f}/s end to end, two workers)")
    say(f"  entities       {len(state)} (expected {len(expected)})")
    say(f"  exactly once   {'yes' if state == expected else 'NO'}: final count and total of every key match")
    say(f"  dead letters   {dead} (expected {poison} poison records)")
    say("  result         " + ("OK" if ok else "MISMATCH"))
    return Report(out, ok)
