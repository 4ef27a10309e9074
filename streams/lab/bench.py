"""``streams bench``: the order saga's throughput, latency, restore, failover and memory, measured in one run.

Phases (each on its own fresh embedded broker by default, so one phase's logs never weigh on the next):

1. **throughput** — a preloaded ``orders.events`` holding every event of N orders in saga order; ONE
   orchestrator worker subprocess, timed from its first assignment until its committed offsets reach the log
   end on every partition. The **floor** (:mod:`streams.lab.bench_floor`) consumes the same log in-process,
   once before and once after the orchestrator; their mean is the floor, so drift on a shared machine hits both.
2. **latency** — orchestrator and the three reference services as subprocesses; orders offered open-loop at a
   fixed rate; latency is OrderPlaced produce time → OrderCompleted *received* by the bench's consumer of
   ``orders.results`` (wall clock of one host, so it includes delivery to a real client, not just the
   orchestrator's produce call).
3. **restore** — a changelog of realistic order states (~300–600 bytes), timed through
   :func:`streams.runtime.rebuild.rebuild`. Then **memory**: an orchestrator subprocess restores the same
   changelog and applies the services' replies to a quarter of min(N, states) of those orders;
   ``peak_rss_mb`` is its VmHWM, so it covers restore and processing with every state in its stores.
4. **failover** — two orchestrators in one group with events flowing; one is SIGKILLed; the time until the
   survivor commits progress on every partition the dead one held.

Before them, the **codec** phase (no Kafka, :mod:`streams.lab.bench_codec`): our wire-format codec against
confluent-kafka's AvroSerializer/AvroDeserializer on the same records and registry (``streams bench --codec-only``
runs it alone).

``--kafka`` runs every phase on one fresh single-node Apache Kafka started for the run (phases isolated as on
an external cluster, below), so each figure is also measured on the reference broker.

Kafka: the saga's topic names (``orders.events``, ``payments.commands``, ...) are fixed by the workflow
definition, so they cannot be given unique names. On an external cluster the bench therefore refuses to start
if any of them exists (a live saga there would process the bench's orders), isolates its phases by topology
name (own groups, changelogs, dead-letter topics) and start offsets, and deletes the topics it created.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from streams.config import KafkaSettings
from streams.contracts import Serde
from streams.examples.orders.workflow import INVENTORY, PAYMENTS, RESULTS, SHIPPING
from streams.kafka.admin import Admin
from streams.kafka.apache import ApacheKafka
from streams.kafka.partition import partition_of as key_partition
from streams.lab import bench_data as data
from streams.lab.bench_codec import codec_bench
from streams.lab.bench_floor import run_floor
from streams.lab.bench_infra import (
    BenchError,
    Child,
    Children,
    Offsets,
    commit_at,
    cpu_seconds,
    log_ends,
    start_broker,
    wait_for,
    with_package_path,
)
from streams.lab.bench_latency import Completions, diagnose, percentile, read_hops
from streams.lab.bench_model import BenchConfig, BenchResult
from streams.lab.loadgen import ORDERS_TOPIC, place_orders
from streams.processors.avro import make_serde
from streams.processors.workflow import WorkflowProcessor
from streams.registry import RegistryServer
from streams.runtime import gcpolicy
from streams.runtime.rebuild import rebuild
from streams.state import entity
from streams.topology import TopicSpec, Topology, load

SAGA_TOPICS = (ORDERS_TOPIC, RESULTS, PAYMENTS, INVENTORY, SHIPPING)
SERVICES = {"payment": PAYMENTS, "inventory": INVENTORY, "shipping": SHIPPING}

_ASSIGNED = re.compile(r"worker: assigned partitions \[([0-9, ]*)\]")
_PROCESSING = re.compile(r"worker: partition (\d+) restored; processing")


@dataclass
class _Phase:
    name: str
    kafka: KafkaSettings
    topology: Topology
    path: Path
    env: dict[str, str]
    broker: Child | None
    broker_pid: int | None = None  # the broker's process when it is ours: embedded, or --kafka's JVM

    def broker_cpu(self) -> float:
        """CPU seconds the phase's broker has used (0 on an external cluster)."""
        pid = self.broker.pid if self.broker is not None else self.broker_pid
        return 0.0 if pid is None else cpu_seconds(pid)

    def usage(self, who: str, cpu: float, broker_cpu0: float, secs: float) -> str:
        """Cores used over ``secs``: was it CPU-bound, and was the broker the bottleneck?"""
        text = f"{who} {cpu / secs:.2f} cores"
        if self.broker is None and self.broker_pid is None:
            return text
        return f"{text}, broker {(self.broker_cpu() - broker_cpu0) / secs:.2f} cores"

    def group(self, processor: str) -> str:
        return self.topology.default_group(self.topology.processor(processor))

    @property
    def changelog(self) -> str:
        return self.topology.processor("orchestrator").changelog


class Bench:
    """One run of every phase; ``run()`` returns the figures, and always stops what it started."""

    def __init__(self, config: BenchConfig, log: Callable[[str], None]) -> None:
        self.cfg = config
        started = time.monotonic()
        self.log: Callable[[str], None] = lambda msg: log(f"[{time.monotonic() - started:6.1f}s] {msg}")
        self.run_id = uuid.uuid4().hex[:6]
        self.workdir = Path(tempfile.mkdtemp(prefix="streams-bench-"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMS_FAULT")}
        self.children = Children(self.workdir, with_package_path(env))
        self._created: list[str] = []
        self._external = KafkaSettings.from_env(config.bootstrap) if config.bootstrap else None
        self._broker_pid: int | None = None
        self.registry_url = ""
        self.serde: Serde | None = None

    # -- the run -------------------------------------------------------------------------------------------

    def run(self) -> BenchResult:
        if not self.cfg.apache_kafka:
            return self._run()
        with ApacheKafka(log=self.log) as cluster:  # its own directory: the work directory goes first
            self._external = KafkaSettings.from_env(cluster.bootstrap, env={}, broker="kafka")
            self._broker_pid = next(iter(cluster.pids().values()), None)
            self.log(f"bench: a fresh Apache Kafka on {cluster.bootstrap}")
            return self._run()

    def _run(self) -> BenchResult:
        ok = False
        try:
            if self._external is not None:
                self._refuse_live_saga(self._external)
        except BaseException:
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        try:
            with RegistryServer(port=0) as registry:  # memory-only: the bench never writes to a shared registry
                self.registry_url = registry.url
                self.serde = make_serde({"registry": registry.url})
                codec = codec_bench(registry.url, self.cfg.codec_records, log=self.log)
                steps, floor = self.throughput()
                p50, p99 = self.latency()
                restore, rss = self.restore_and_memory()
                failover = self.failover()
            ok = True
            return BenchResult(steps, floor, steps / floor, p50, p99, restore, failover, rss,
                               codec.ours_per_s, codec.confluent_per_s, codec.ratio)
        finally:
            self.children.close()
            if self._external is not None and self._created:
                with contextlib.suppress(Exception):
                    Admin(self._external).delete(self._created)
            if ok and not self.cfg.keep_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            else:
                self.log(f"bench: logs and state kept in {self.workdir}")

    def _refuse_live_saga(self, kafka: KafkaSettings) -> None:
        live = Admin(kafka).partitions(SAGA_TOPICS)
        if live:
            raise BenchError(
                f"{', '.join(sorted(live))} already exist on {kafka.bootstrap_servers}: the order saga's topic names "
                "are fixed by its workflow definition, so the bench would feed its orders to whatever saga runs "
                "there. Run it on a cluster without them, or without --bootstrap (embedded broker).")

    @contextlib.contextmanager
    def _phase(self, name: str) -> Iterator[_Phase]:
        """A cluster for one phase, the orders topology namespaced for it, its topics created."""
        broker: Child | None = None
        if self._external is not None:
            kafka = self._external
        else:
            kafka, broker = start_broker(self.children, f"broker-{name}")
        ns = f"bench-{self.run_id}-{name}"
        example = load("orders", {})
        text = Path(example.source).read_text()
        text = re.sub(r"(?m)^schemas:.*$", f"schemas: {example.schemas}", text)  # the copy lives elsewhere
        text = re.sub(r"(?m)^name:.*$", f"name: {ns}", text)
        text = re.sub(r"(?m)^dlq_topic:.*$", f"dlq_topic: {ns}.dlq", text)
        text = re.sub(r"partitions:\s*\d+", f"partitions: {self.cfg.partitions}", text)
        path = self.workdir / f"{ns}.yaml"
        path.write_text(text)
        topo = load(path, {})
        created, _ = Admin(kafka).ensure(topo.all_topics())
        self._created += created if self._external is not None else []
        env = {**kafka.child_env(), "SCHEMA_REGISTRY_URL": self.registry_url}
        self.log(f"bench: phase {name} on {kafka.bootstrap_servers}")
        try:
            yield _Phase(name, kafka, topo, path, env, broker, self._broker_pid)
        finally:
            if broker is not None:
                broker.stop(5)

    def _worker(self, ph: _Phase, name: str, args: Sequence[str]) -> Child:
        return self.children.streams(name, [*args, "--topology", str(ph.path), "--state-dir",
                                            str(self.workdir / "state" / name), "--no-create-topics"], ph.env)

    def _serde(self) -> Serde:
        assert self.serde is not None
        return self.serde

    # -- 1. throughput and the floor ------------------------------------------------------------------------

    def throughput(self) -> tuple[float, float]:
        cfg, parts = self.cfg, self.cfg.partitions
        with self._phase("throughput") as ph:
            group = ph.group("orchestrator")
            starts = log_ends(ph.kafka, ORDERS_TOPIC, parts)
            commit_at(ph.kafka, group, {ORDERS_TOPIC: starts})
            before = self._counts(ph)
            self.log(f"bench: preloading {cfg.orders:,} orders ({4 * cfg.orders:,} events) into {ORDERS_TOPIC}")
            ids = data.order_ids(f"{self.run_id}t", cfg.orders)
            data.produce_all(ph.kafka, ORDERS_TOPIC, data.saga_records(self._serde(), ids),
                             lambda n: self.log(f"bench:   {n:,} events written"))
            ends = log_ends(ph.kafka, ORDERS_TOPIC, parts)
            steps = sum(ends[p] - starts[p] for p in range(parts))
            if steps != 4 * cfg.orders:
                raise BenchError(f"preloaded {steps} events, expected {4 * cfg.orders}")
            # The floor runs before and after the orchestrator and counts as their mean: on a shared machine
            # the speed drifts, and bracketing keeps the ratio honest.
            floor_before = self._floor(ph, starts, ends, 1)
            worker = self._worker(ph, "throughput-orchestrator", ["worker", "--processor", "orchestrator"])
            t0 = wait_for(lambda: "worker: assigned partitions" in worker.log_text(), 120,
                          "the orchestrator's first assignment", 0.01, [worker])
            self.log(f"bench: orchestrator assigned; timing {steps:,} steps")
            cpu0, bcpu0 = cpu_seconds(worker.pid), ph.broker_cpu()
            secs = self._until_committed(ph, group, ends, t0, [worker], steps)
            rss = worker.peak_rss_mb()
            cores = ph.usage("orchestrator", cpu_seconds(worker.pid) - cpu0, bcpu0, secs)
            worker.stop()
            self._check_outcome(ph, before, completed=cfg.orders)
            rate = steps / secs
            self.log(f"bench: orchestrator {steps:,} steps in {secs:.1f}s = {rate:,.0f} steps/s ({cores}; "
                     f"peak RSS {rss:.0f} MB with {cfg.orders:,} orders in state)")
            floor = (floor_before + self._floor(ph, starts, ends, 2)) / 2
            self.log(f"bench: floor {floor:,.0f} records/s (mean of both runs); ratio {rate / floor:.3f}")
            return rate, floor

    def _floor(self, ph: _Phase, starts: Mapping[int, int], ends: Mapping[int, int], run: int) -> float:
        name = f"{ph.topology.name}-floor"
        topics = [f"{name}.out", f"{name}-changelog"]
        self._ensure_plain(ph.kafka, topics)
        cpu0, bcpu0 = time.process_time(), ph.broker_cpu()
        n, secs = run_floor(ph.kafka, self._serde(), dict(starts), dict(ends), topics[0], topics[1],
                            self.workdir / "state" / f"floor-{run}", f"{name}-{run}")
        cores = ph.usage("bench process", time.process_time() - cpu0, bcpu0, secs)
        self.log(f"bench: floor run {run}: {n:,} records in {secs:.1f}s = {n / secs:,.0f} records/s ({cores})")
        return n / secs

    def _until_committed(self, ph: _Phase, group: str, ends: Mapping[int, int], t0: float,
                         watch: Sequence[Child], steps: int) -> float:
        offsets = Offsets(ph.kafka, group, ORDERS_TOPIC, self.cfg.partitions)
        last = [0.0]

        def done() -> bool:
            c = offsets.read()
            now = time.monotonic()
            if now - last[0] >= 5:
                last[0] = now
                left = sum(max(ends[p] - max(c.get(p, 0), 0), 0) for p in ends)
                self.log(f"bench:   {steps - left:,}/{steps:,} steps committed")
            return all(c.get(p, -1) >= ends[p] for p in ends)

        try:
            return wait_for(done, max(300.0, steps / 500), f"{group} to commit {dict(ends)}", 0.05, watch) - t0
        finally:
            offsets.close()

    def _counts(self, ph: _Phase) -> tuple[int, int]:
        """Records on orders.results and on the phase's dead-letter topic."""
        return (sum(log_ends(ph.kafka, RESULTS, self.cfg.partitions).values()),
                sum(log_ends(ph.kafka, ph.topology.dlq_topic, 1).values()))

    def _check_outcome(self, ph: _Phase, before: tuple[int, int], completed: int) -> None:
        """The measured run really ran the saga: every order ended, nothing was dead-lettered."""
        results, dead = self._counts(ph)
        if dead > before[1]:
            raise BenchError(f"the orchestrator dead-lettered {dead - before[1]} records in phase {ph.name}")
        if results - before[0] != completed:
            raise BenchError(f"phase {ph.name}: {results - before[0]} outcomes on {RESULTS}, expected {completed}")

    def _ensure_plain(self, kafka: KafkaSettings, names: Sequence[str]) -> None:
        created, _ = Admin(kafka).ensure([TopicSpec(n, self.cfg.partitions) for n in names])
        self._created += created if self._external is not None else []

    # -- 2. latency ----------------------------------------------------------------------------------------

    def latency(self) -> tuple[float, float]:
        cfg, parts = self.cfg, self.cfg.partitions
        with self._phase("latency") as ph:
            inputs = {"orchestrator": ORDERS_TOPIC, **SERVICES}
            starts = log_ends(ph.kafka, ORDERS_TOPIC, parts)
            for proc, topic in inputs.items():
                commit_at(ph.kafka, ph.group(proc), {topic: log_ends(ph.kafka, topic, parts)})
            workers = [self._worker(ph, "latency-orchestrator", ["worker", "--processor", "orchestrator"])]
            workers += [self._worker(ph, f"latency-{kind}", ["service", kind]) for kind in SERVICES]
            collector = Completions(ph.kafka, make_serde({"registry": self.registry_url}),
                                    log_ends(ph.kafka, RESULTS, parts))
            collector.start()
            try:
                wait_for(lambda: all(self._processing(w) >= set(range(parts)) for w in workers), 120,
                         "the orchestrator and services to be assigned", 0.1, workers)
                warm = data.order_ids(f"{self.run_id}w", max(int(cfg.latency_orders_per_s
                                                                 * cfg.latency_warmup_seconds), 50))
                self.log(f"bench: warming up with {len(warm):,} orders (not measured)")
                place_orders(ph.kafka, self._serde(), warm, rate_per_s=cfg.latency_orders_per_s)
                wait_for(lambda: len(collector.seen.keys() & set(warm)) >= len(warm) - 5, max(60.0, len(warm) / 100),
                         "warm-up orders to complete", 0.05, workers)
                n = max(int(cfg.latency_orders_per_s * cfg.latency_seconds), 1)
                ids = data.order_ids(f"{self.run_id}l", n)
                sent: dict[str, float] = {}
                self.log(f"bench: offering {n:,} orders at {cfg.latency_orders_per_s:,.0f}/s")
                t = time.monotonic()
                cpu0 = self._cpu(ph, workers)
                place_orders(ph.kafka, self._serde(), ids, rate_per_s=cfg.latency_orders_per_s,
                             on_sent=lambda oid, _ms: sent.__setitem__(oid, time.time()))
                secs = time.monotonic() - t
                offered = n / secs
                cpu = self._cpu(ph, workers)
                self.log("bench: cores used while offering: " + ", ".join(
                    f"{who} {(cpu[who] - cpu0[who]) / secs:.2f}" for who in cpu))
                settled = self._settled(ph, inputs, collector, ids)
                wait_for(settled, max(120.0, n / 100), "every order to complete or the saga to go idle", 0.1, workers)
                missing = [oid for oid in ids if oid not in collector.seen]
                if missing:
                    groups = {ph.group(proc): topic for proc, topic in inputs.items()}
                    self.log(f"bench: WARNING: {len(missing)} orders never completed although every group committed "
                             f"its log end, e.g. {missing[:5]}; where they stopped:\n"
                             + diagnose(ph.kafka, self._serde(), parts, groups, starts, missing))
                    if len(missing) > max(1, n // 100):
                        raise BenchError(f"{len(missing)} of {n} orders never completed")
            finally:
                collector.stop()
            if collector.cancelled:
                raise BenchError(f"{len(collector.cancelled)} orders were cancelled; the services inject no failures")
            done = [oid for oid in ids if oid in collector.seen]
            lat = sorted((collector.seen[oid] - sent[oid]) * 1000 for oid in done)
            p50, p99 = percentile(lat, 0.50), percentile(lat, 0.99)
            done_at = sorted(collector.seen[oid] for oid in done)
            completed = len(done) / max(done_at[-1] - done_at[0], 1e-3)  # throughput of completions
            self.log(f"bench: latency over {len(done):,} orders (offered {offered:,.0f}/s, completed "
                     f"{completed:,.0f}/s): p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {lat[-1]:.1f} ms")
            self.log("bench: per hop, p50/p99 ms of CreateTime to CreateTime: " + ", ".join(
                f"{hop} {p50_:.0f}/{p99_:.0f}" for hop, p50_, p99_ in read_hops(ph.kafka, set(done))))
            if completed < 0.95 * offered:
                self.log("bench: the saga did not keep up with the offered load, so these latencies are mostly "
                         "queueing; a lower --latency-orders-per-s shows the per-order path")
            for w in workers:
                w.stop()
            return p50, p99

    @staticmethod
    def _cpu(ph: _Phase, workers: Sequence[Child]) -> dict[str, float]:
        """CPU seconds so far of everything on the saga's path: where the cores go under the offered load."""
        out = {w.name.removeprefix("latency-"): cpu_seconds(w.pid) for w in workers}
        if ph.broker is not None or ph.broker_pid is not None:
            out["broker"] = ph.broker_cpu()
        out["bench (load and collector)"] = time.process_time()
        return out

    def _settled(self, ph: _Phase, inputs: Mapping[str, str], collector: Completions,
                 ids: Sequence[str]) -> Callable[[], bool]:
        """True once every order completed, or once nothing completed for 3 s while every group had committed
        its input's log end: an order still missing then will never complete. (Seen on the embedded broker: with
        several producers writing one partition at once, a tailing consumer can miss a whole batch that a fresh
        reader finds; the orders.events of this phase has four producers.)"""
        last = {"seen": -1, "at": time.monotonic()}

        def settled() -> bool:
            if collector.has(ids):
                return True
            now = time.monotonic()
            if len(collector.seen) != last["seen"]:
                last["seen"], last["at"] = len(collector.seen), now
                return False
            if now - last["at"] < 3:
                return False
            last["at"] = now  # the check below reads every group's offsets: at most every 3 s
            for proc, topic in inputs.items():
                off = Offsets(ph.kafka, ph.group(proc), topic, self.cfg.partitions)
                try:
                    committed = off.read()
                finally:
                    off.close()
                if committed != log_ends(ph.kafka, topic, self.cfg.partitions):
                    return False
            return True

        return settled

    @staticmethod
    def _processing(worker: Child) -> set[int]:
        """Partitions the worker processes since its latest assignment (from its log)."""
        text = worker.log_text()
        assigned = list(_ASSIGNED.finditer(text))
        if not assigned:
            return set()
        tail = text[assigned[-1].end():]
        return {int(m.group(1)) for m in _PROCESSING.finditer(tail)}

    # -- 3. restore and memory -----------------------------------------------------------------------------

    def restore_and_memory(self) -> tuple[float, float]:
        cfg, parts = self.cfg, self.cfg.partitions
        with self._phase("restore") as ph:
            group, changelog = ph.group("orchestrator"), ph.changelog
            # One committed seed record per partition: the states name it as their source, so restore (which
            # skips changes of never-committed input) applies them, and the worker resumes right after it.
            seed = data.order_ids(f"{self.run_id}s", parts)
            data.produce_all(ph.kafka, ORDERS_TOPIC, data.saga_records(self._serde(), seed, ("OrderPlaced",),
                                                                      partition_of=lambda i: i))
            ends = log_ends(ph.kafka, ORDERS_TOPIC, parts)
            commit_at(ph.kafka, group, {ORDERS_TOPIC: ends})
            processor = WorkflowProcessor({"workflow": "orders", "registry": self.registry_url}, [])
            ids = data.order_ids(f"{self.run_id}r", cfg.restore_entities)
            placeholder = "~" * len(ids[0])
            templates = [data.state_templates(processor, placeholder, ends[p] - 1) for p in range(parts)]
            self._check_templates(processor, templates, placeholder, ids[0])
            sizes = [len(t) for t in templates[0]]
            self.log(f"bench: writing {len(ids):,} order states ({min(sizes)}-{max(sizes)} bytes) to {changelog}")
            data.produce_all(ph.kafka, changelog, data.changelog_records(templates, placeholder, ids),
                             lambda n: self.log(f"bench:   {n:,} states written"))
            restore = self._time_rebuild(ph, group, len(ids))
            before = self._counts(ph)
            k = max(min(cfg.orders, cfg.restore_entities) // 4, 1)
            data.produce_all(ph.kafka, ORDERS_TOPIC, data.saga_records(
                self._serde(), ids[:k], data.REPLIES, partition_of=lambda i: key_partition(ids[i].encode(), parts)))
            ends = log_ends(ph.kafka, ORDERS_TOPIC, parts)
            worker = self._worker(ph, "memory-orchestrator", ["worker", "--processor", "orchestrator"])
            t0 = wait_for(lambda: "worker: assigned partitions" in worker.log_text(), 120,
                          "the orchestrator's first assignment", 0.01, [worker])
            secs = self._until_committed(ph, group, ends, t0, [worker], 3 * k)
            rss = worker.peak_rss_mb()
            restored = sum(int(m) for m in re.findall(r"done, (\d+) applied", worker.log_text()))
            worker.stop()
            self._check_outcome(ph, before, completed=k)
            self.log(f"bench: orchestrator restored {restored:,} states and applied {3 * k:,} replies in "
                     f"{secs:.1f}s; peak RSS {rss:.0f} MB")
            return restore, rss

    def _check_templates(self, processor: WorkflowProcessor, templates: list[list[bytes]], placeholder: str,
                         oid: str) -> None:
        """The bytewise fill-in yields the state the workflow would have stored for that order."""
        for part, key, value, _h in data.changelog_records(templates, placeholder, [oid] * len(templates[0])):
            state = processor.load_state(entity.decode(value).state or b"")
            if key != b"d" + oid.encode() or state.data.get("order_id") != oid or state.state != "paying":
                raise BenchError(f"state template for partition {part} does not decode to order {oid}")

    def _time_rebuild(self, ph: _Phase, group: str, entities: int) -> float:
        applied: list[int] = []

        def note(msg: str) -> None:
            m = re.search(r"done, (\d+) applied", msg)
            if m:
                applied.append(int(m.group(1)))

        into = self.workdir / "rebuild"
        self.log(f"bench: rebuilding {entities:,} states from {ph.changelog}")
        store = ph.topology.processor("orchestrator").store
        t, cpu0, bcpu0 = time.monotonic(), time.process_time(), ph.broker_cpu()
        # Timed: the restore itself, as a worker does it (with a worker's collector settings); not the state hash
        # the operator's rebuild adds at the end.
        with gcpolicy.tuned():
            rebuild(ph.kafka, group, [ORDERS_TOPIC], ph.changelog, store, range(self.cfg.partitions), into, note,
                    hashes=False)
        secs = time.monotonic() - t
        cores = ph.usage("bench process", time.process_time() - cpu0, bcpu0, secs)
        shutil.rmtree(into, ignore_errors=True)
        if sum(applied) != entities:
            raise BenchError(f"rebuild applied {sum(applied)} of {entities} states")
        self.log(f"bench: rebuilt {entities:,} states in {secs:.1f}s = {entities / secs:,.0f} records/s ({cores})")
        return entities / secs

    # -- 4. failover ---------------------------------------------------------------------------------------

    def failover(self) -> float:
        parts = self.cfg.partitions
        with self._phase("failover") as ph:
            group = ph.group("orchestrator")
            commit_at(ph.kafka, group, {ORDERS_TOPIC: log_ends(ph.kafka, ORDERS_TOPIC, parts)})
            a = self._worker(ph, "failover-a", ["worker", "--processor", "orchestrator"])
            b = self._worker(ph, "failover-b", ["worker", "--processor", "orchestrator"])
            traffic = data.Traffic(ph.kafka, self._serde(), f"{self.run_id}f", self.cfg.failover_events_per_s)
            traffic.start()
            offsets = Offsets(ph.kafka, group, ORDERS_TOPIC, parts)
            try:
                def balanced() -> bool:
                    pa, pb = self._processing(a), self._processing(b)
                    return bool(pa) and bool(pb) and not pa & pb and pa | pb == set(range(parts))

                wait_for(balanced, 120, "both orchestrators to process their share", 0.1, [a, b])
                c = offsets.read()
                wait_for(lambda: all(v > c[p] for p, v in offsets.read().items()), 60,
                         "progress on every partition", 0.1, [a, b])
                dead = self._processing(b)
                b.kill()
                killed = time.monotonic()
                self.log(f"bench: SIGKILLed one orchestrator (partitions {sorted(dead)}); waiting for the other")
                mark = len(a.log_text())
                time.sleep(0.3)  # a commit the victim had in flight lands before the baseline is taken
                c = offsets.read()
                seen: dict[str, float] = {}

                def taken_over() -> bool:
                    now, tail = time.monotonic(), a.log_text()[mark:]
                    for label, needle in (("revoked", "worker: revoked"), ("reassigned", "worker: assigned")):
                        if label not in seen and needle in tail:
                            seen[label] = now
                    if "processing" not in seen and dead <= {int(m) for m in _PROCESSING.findall(tail)}:
                        seen["processing"] = now
                    return all(offsets.read()[p] > c[p] for p in dead)

                done = wait_for(taken_over, 120, "the survivor to commit on the dead one's partitions", 0.05, [a])
            finally:
                offsets.close()
                traffic.stop()
            secs = done - killed
            steps = ", ".join(f"{k} +{v - killed:.1f}s" for k, v in seen.items())
            self.log(f"bench: failover {secs:.2f}s (survivor {steps}, committed +{secs:.1f}s; "
                     f"{traffic.sent:,} events offered during the phase)")
            a.stop()
            return secs
