"""``streams chaos``: a seeded fault-injection run of the order saga that proves nothing is lost or doubled.

One run, on a private embedded broker, or (``--kafka3``) on a private three-node Apache Kafka cluster
(replication 3, min.insync.replicas=2) in either processing guarantee:

1. **workload** (:mod:`streams.lab.chaos_plan`): N orders through three orchestrator workers and the payment,
   inventory and shipping services (20% of attempts fail TRANSIENT, 3% of orders PERMANENT, per service);
   ``nopay-`` orders are never answered and must time out; 5% duplicated events (half right after the
   original, half re-sent after the order ended); swapped adjacent pairs; events for entities that never
   existed;
2. **poison** with a manifest: garbage/truncated records, unknown schema ids, an incompatible writer schema,
   invalid transitions (OrderCompleted written to the saga's input), plus the never-existing entities (their
   events are dead-lettered ``unknown_entity`` by the saga's policy, so they are a DLQ class of the manifest);
3. **faults** on the seeded schedule of :func:`~streams.lab.chaos_plan.schedule`: SIGKILLs restarted after a
   few seconds (one with its state directory deleted), every commit-protocol and timer fault point armed once,
   one orchestrator SIGSTOPped past ``max.poll.interval.ms``, broker pauses (the embedded broker is
   memory-only, so a pause is the only fault it survives; on three nodes one node is paused past its session,
   and single nodes, the active controller first, are SIGKILLed and restarted, one broker fault at a time);
4. **invariants** (:mod:`streams.lab.chaos_check`): every order ends as :mod:`streams.lab.chaos_oracle`
   predicts; each effect applied exactly once (refunds = compensated charges); the DLQ is exactly the
   manifest; restore equals live; committed = log end; lag drained soon after the last fault; no crash loop.

Timeouts are chosen so that only never-answered payments time out: a legitimate reply delayed by kills,
restarts, rebalances and pauses stays well inside them. The oracle is not weakened to hide a late reply.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.config import KafkaSettings
from streams.kafka.admin import Admin
from streams.kafka.apache import ApacheKafka
from streams.kafka.embedded import EmbeddedBroker
from streams.lab import chaos_check as check
from streams.lab.chaos_io import Results, Writer
from streams.lab.chaos_oracle import LEDGERS, Rates, effect_counts, oracle, outcome_class
from streams.lab.chaos_plan import (
    CONTROLLER,
    GHOST,
    ORCHESTRATORS,
    PROCESSES,
    SERVICES,
    Fault,
    Profile,
    Schedule,
    Workload,
    schedule,
    score,
    workload,
)
from streams.lab.chaos_procs import ORDERS, Brokers, Fleet, Proc
from streams.processors.avro import make_serde
from streams.registry import RegistryServer
from streams.topology import Topology, load

Log = Callable[[str], None]


@dataclass
class _Clock:
    """The fault executor's state: pending actions, what was done, and when the last fault ended."""

    t0: float
    actions: list[tuple[float, int, str, str, float]] = field(default_factory=list)
    done: list[dict[str, object]] = field(default_factory=list)
    kills: int = 0
    last_fault_end: float = 0.0
    seq: int = 0
    pause_marks: dict[str, int] = field(default_factory=dict)
    pause_tries: int = 0
    broker_faults: dict[str, int] = field(default_factory=dict)  # kind -> how many were done

    def push(self, at: float, action: str, target: str, arg: float = 0.0) -> None:
        self.seq += 1
        heapq.heappush(self.actions, (at, self.seq, action, target, arg))


class ChaosRun:
    def __init__(self, seed: int, profile: Profile, tmp: Path, log: Log, quick: bool = False) -> None:
        self.seed, self.profile, self.tmp, self.log, self.quick = seed, profile, tmp, log, quick
        self.rates = Rates(seed)
        self.workload: Workload = workload(seed, profile)
        self.schedule: Schedule = schedule(seed, profile)
        self._restart_rng = random.Random(f"{seed}-restarts")
        self.kafka3 = profile.broker_kills > 0

    @contextlib.contextmanager
    def _brokers(self) -> Iterator[tuple[KafkaSettings, Brokers, dict[str, str]]]:
        """The run's private broker(s): their settings, their fault handle and the extra worker environment."""
        if self.kafka3:
            with ApacheKafka(self.tmp / "kafka", nodes=3, log=self.log) as cluster:
                self.log(f"chaos: three-node Apache Kafka on {cluster.bootstrap}, work dir {self.tmp}")
                yield (KafkaSettings.from_env(cluster.bootstrap, env={}, broker="kafka"), Brokers(cluster=cluster),
                       {"STREAMS_REPLICATION": "3"})
            return
        with EmbeddedBroker(log_path=self.tmp / "broker.log") as broker:
            self.log(f"chaos: embedded broker on {broker.bootstrap} (pid {broker.pid}), work dir {self.tmp}")
            yield broker.settings(env={}), Brokers(embedded=broker), {}

    # -- the run -------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        with self._brokers() as (kafka, broker, extra), \
                RegistryServer(kafka, port=0, topic="_streams_schemas") as registry:
            env = {**os.environ, **kafka.child_env(), **extra,
                   "SCHEMA_REGISTRY_URL": registry.url,
                   "PAYMENT_TIMEOUT_MS": str(self.profile.payment_timeout_ms),
                   "REPLY_TIMEOUT_MS": str(self.profile.reply_timeout_ms),
                   "KAFKA_MAX_POLL_INTERVAL_MS": str(self.profile.max_poll_ms), "PARK_REPLIES_MS": "0"}
            saved = os.environ.get("SCHEMA_REGISTRY_URL")
            os.environ["SCHEMA_REGISTRY_URL"] = registry.url
            try:
                topo = load(ORDERS, env)
                Admin(kafka).ensure(topo.all_topics())
                report = self._run(kafka, broker, topo, env)
            finally:
                if saved is None:
                    os.environ.pop("SCHEMA_REGISTRY_URL", None)
                else:
                    os.environ["SCHEMA_REGISTRY_URL"] = saved
        report["elapsed_s"] = round(time.monotonic() - started, 1)
        return report

    def _run(self, kafka: KafkaSettings, broker: Brokers, topo: Topology, env: dict[str, str]) -> dict[str, Any]:
        serde = make_serde({})
        writer = Writer(kafka, serde, self.seed, self.log)
        results = Results(kafka, serde, topo.topics["orders.results"].partitions, self.log)
        fleet = Fleet(self.tmp, env, self.rates, exactly_once=self.profile.exactly_once)
        for name in PROCESSES:
            fleet.procs.setdefault(name, Proc(name)).armed = self.schedule.armed.get(name)
            fleet.start(name)
        deadline = time.monotonic() + 90
        while not all(fleet.processing(n) for n in PROCESSES):
            if time.monotonic() > deadline:
                raise TimeoutError("chaos: the workers did not all start processing within 90 s")
            fleet.reap()
            time.sleep(0.2)
        self.log("chaos: all six processes are processing; starting the workload and the fault schedule")
        results.start()
        stop = threading.Event()
        late_done = threading.Event()
        producer = threading.Thread(target=self._produce, args=(kafka, writer, results, stop, late_done),
                                    daemon=True, name="chaos-producer")
        clock = _Clock(time.monotonic())
        for f in self.schedule.faults:
            clock.push(clock.t0 + f.at_s, f.kind, f.target, f.duration_s if not f.delete_state else -f.duration_s)
        producer.start()
        drain_s: float | None = None
        try:
            drain_s = self._loop(kafka, broker, topo, fleet, clock, results, late_done)
        finally:
            stop.set()
            broker.resume_all()
            for name in PROCESSES:
                fleet.resume(name)
            producer.join(30)
            codes = fleet.stop_all()
            results.stop.set()
            results.join(10)
        self.log(f"chaos: all processes stopped ({codes}); checking invariants")
        return self._report(kafka, topo, fleet, clock, results, writer, drain_s, codes)

    def _produce(self, kafka: KafkaSettings, writer: Writer, results: Results, stop: threading.Event,
                 late_done: threading.Event) -> None:
        try:
            self._write_all(kafka, writer, results, stop)
        except Exception as exc:  # reported as a failed run, never a hung one
            writer.failed.append(f"the harness's producer failed: {type(exc).__name__}: {exc}")
            self.log(f"chaos: {writer.failed[-1]}")
        finally:
            late_done.set()

    def _write_all(self, kafka: KafkaSettings, writer: Writer, results: Results, stop: threading.Event) -> None:
        wl, prof = self.workload, self.profile
        writer.write(wl.main, len(wl.main) / prof.place_s, stop)
        targets = {i.key for i in wl.late}
        deadline = time.monotonic() + prof.payment_timeout_ms / 1000 + 120
        while not stop.is_set() and not targets <= results.outcomes.keys() and time.monotonic() < deadline:
            time.sleep(0.5)
        writer.collect_replies(kafka, {i.key for i in wl.late if i.kind == "resend"})
        writer.write(wl.late, max(20.0, len(wl.late) / 10), stop)
        self.log(f"chaos: wrote {writer.written} records ({len(wl.late)} late)")

    def _loop(self, kafka: KafkaSettings, broker: Brokers, topo: Topology, fleet: Fleet, clock: _Clock,
              results: Results, late_done: threading.Event) -> float | None:
        """Run the fault schedule and restarts; then wait for the drain. Returns seconds from the last fault
        to a drained system (every order ended, every record written, zero lag), None if it never drained."""
        next_check = 0.0
        ids = set(self.workload.order_ids)
        give_up: float | None = None
        while True:
            now = time.monotonic()
            while clock.actions and clock.actions[0][0] <= now:
                _at, _s, action, target, arg = heapq.heappop(clock.actions)
                # one broker fault at a time (for a while: a cluster that never heals still gets the fault)
                if (action in ("kill_broker", "pause_broker") and now - clock.t0 < self.schedule.end_s + 120
                        and not broker.settled(kafka)):
                    clock.push(now + 2.0, action, target, arg)
                    continue
                self._act(fleet, broker, clock, action, target, arg, now)
            for name in fleet.reap():
                delay = self._restart_rng.uniform(*self.profile.restart_s)
                clock.push(now + delay, "restart", name)
                self.log(f"chaos: {name} exited by itself ({fleet.procs[name].last_exit}); "
                         f"restarting in {delay:.1f}s")
            if not clock.actions:
                if give_up is None:
                    give_up = max(now, clock.last_fault_end) + self.profile.drain_limit_s + 60
                    self.log(f"chaos: last fault ended {now - clock.last_fault_end:.1f}s ago; waiting for the drain")
                if now >= next_check:
                    next_check = now + 1.0
                    if late_done.is_set() and ids <= results.outcomes.keys() and check.total_lag(kafka, topo) == 0:
                        return round(time.monotonic() - clock.last_fault_end, 1)
                if now > give_up:
                    missing = len(ids - results.outcomes.keys())
                    self.log(f"chaos: not drained {now - clock.last_fault_end:.0f}s after the last fault "
                             f"({missing} orders without an outcome)")
                    return None
            time.sleep(0.1)

    def _act(self, fleet: Fleet, broker: Brokers, clock: _Clock, action: str, target: str, arg: float,
             now: float) -> None:
        at = round(now - clock.t0, 1)
        if action == "kill":
            up = fleet.procs[target]
            name = target if up.alive and not up.stopped else next(
                (p for p in PROCESSES if fleet.procs[p].alive and not fleet.procs[p].stopped), None)
            if name is None:
                return
            delete = arg < 0
            fleet.kill(name, delete_state=delete)
            clock.kills += 1
            clock.push(now + abs(arg), "restart", name)
            clock.done.append({"at_s": at, "kind": "kill", "target": name, "down_s": round(abs(arg), 1),
                               "delete_state": delete})
            self.log(f"chaos: t={at}s SIGKILL {name}{' and delete its state directory' if delete else ''}")
        elif action == "restart":
            if not fleet.procs[target].alive:
                fleet.start(target)
            clock.last_fault_end = now
        elif action == "pause_worker":
            # Only a member that holds partitions in a settled group can show eviction: wait for one.
            steady = [p for p in (target, *ORCHESTRATORS) if fleet.steady(p)]
            if not steady and clock.pause_tries < 30:
                clock.pause_tries += 1
                clock.push(now + 1.0, action, target, arg)  # look again in a second, for up to 30 s
                return
            name = steady[0] if steady else target
            if fleet.pause(name):
                clock.push(now + arg, "resume", name)
                clock.done.append({"at_s": at, "kind": "pause_worker", "target": name, "paused_s": round(arg, 1)})
                self.log(f"chaos: t={at}s SIGSTOP {name} for {arg:.1f}s (> max.poll.interval.ms)")
        elif action == "resume":
            fleet.resume(target)
            clock.pause_marks[target] = len(fleet.log(target, whole=True))
            clock.last_fault_end = now
        elif action == "pause_broker":
            name = broker.pause(target)
            clock.push(now + arg, "resume_broker", name)
            clock.broker_faults["pauses"] = clock.broker_faults.get("pauses", 0) + 1
            clock.done.append({"at_s": at, "kind": "pause_broker", "target": name, "paused_s": round(arg, 1)})
            self.log(f"chaos: t={at}s SIGSTOP {'the broker' if name == 'broker' else f'Kafka node {name}'} "
                     f"for {arg:.0f}s")
        elif action == "resume_broker":
            broker.resume(target)
            clock.last_fault_end = now
        elif action == "kill_broker":
            node = broker.kill(target)
            for kind in ("kills", *(("controller_kills",) if target == CONTROLLER else ())):
                clock.broker_faults[kind] = clock.broker_faults.get(kind, 0) + 1
            clock.push(now + arg, "restart_broker", str(node))
            clock.done.append({"at_s": at, "kind": "kill_broker", "target": f"node {node}",
                               "controller": target == CONTROLLER, "down_s": round(arg, 1)})
            what = " (the active controller)" if target == CONTROLLER else ""
            self.log(f"chaos: t={at}s SIGKILL Kafka node {node}{what}; restart in {arg:.1f}s")
        elif action == "restart_broker":
            broker.restart(int(target))
            clock.last_fault_end = now

    # -- the verdict ---------------------------------------------------------------------------------------

    def _report(self, kafka: KafkaSettings, topo: Topology, fleet: Fleet, clock: _Clock, results: Results,
                writer: Writer, drain_s: float | None, codes: dict[str, int | None]) -> dict[str, Any]:
        wl = self.workload
        expected = {oid: oracle(self.rates, oid) for oid in wl.order_ids}
        lost = sorted(oid for oid in wl.order_ids if oid not in results.outcomes)
        wrong = {oid: (expected[oid].state, expected[oid].reason, *results.outcomes[oid]) for oid in wl.order_ids
                 if oid in results.outcomes and not expected[oid].matches(*results.outcomes[oid])}
        double_results = sorted(oid for oid, ids in results.ids.items() if len(ids) > 1)
        rebuilt_dir = self.tmp / "rebuilt"
        rebuilt = check.rebuild_all(kafka, topo, rebuilt_dir)
        ledgers = check.ledgers(rebuilt_dir, topo, SERVICES)
        duplicate_effects, effect_mismatch = 0, []
        refunds = compensated = 0
        for oid in wl.order_ids:
            want = expected[oid].effects
            for service, commands in LEDGERS.items():
                got = effect_counts(ledgers[service].get(oid))
                for command in commands:
                    n = got.get(command, 0)
                    duplicate_effects += max(0, n - 1)
                    if min(n, 1) != want.get(command, 0):
                        effect_mismatch.append(f"{oid}: {command} applied {n}x, expected {want.get(command, 0)}")
            pay = effect_counts(ledgers["payment"].get(oid))
            refunds += pay.get("RefundPayment", 0)
            compensated += bool(want.get("RefundPayment") and pay.get("MakePayment"))
        manifest = {}
        for item in wl.manifest:
            pos = writer.positions.get(item.event_id, ("orders.events", -1, -1))
            manifest[item.event_id] = (GHOST if item.kind == "ghost" else item.kind, item.reason or "", pos)
        dlq = score(manifest, check.dlq_letters(kafka, topo.dlq_topic))
        dirs = {"orchestrator": [fleet.state_dir(n) for n in ORCHESTRATORS],
                **{s: [fleet.state_dir(s)] for s in SERVICES}}
        hashes = check.compare_hashes(kafka, topo, rebuilt, dirs)
        gaps = check.offset_gaps(kafka, topo)
        hit = sorted({p for proc in fleet.procs.values() for p in proc.points_hit})
        evicted = {n: _evicted(fleet.log(n, whole=True)[mark:]) for n, mark in clock.pause_marks.items()}
        failures = []
        if lost:
            failures.append(f"{len(lost)} orders never ended, e.g. {lost[:3]}")
        if wrong:
            failures.append(f"{len(wrong)} orders ended differently than the oracle says, e.g. "
                            f"{list(wrong.items())[:3]}")
        if results.conflicts or double_results:
            failures.append(f"orders with two outcomes: {sorted(results.conflicts)[:3]} {double_results[:3]}")
        if duplicate_effects or effect_mismatch:
            failures.append(f"{duplicate_effects} duplicate effects, {len(effect_mismatch)} effect mismatches, "
                            f"e.g. {effect_mismatch[:3]}")
        if refunds != compensated:
            failures.append(f"{refunds} refunds for {compensated} compensated charges")
        if dlq.precision != 1.0 or dlq.recall != 1.0:
            failures.append(f"DLQ: {len(dlq.unexpected)} unexpected (e.g. {list(dlq.unexpected)[:3]}), "
                            f"{len(dlq.missing)} missing (e.g. {list(dlq.missing)[:3]})")
        bad_hashes = [h for h in hashes if not h.ok]
        diffs = [line for h in bad_hashes[:3] if h.live
                 for line in check.explain(kafka, topo, rebuilt_dir, h, dirs)]
        if diffs:
            (self.tmp / "state-diff.txt").write_text("\n".join(diffs) + "\n")
        if bad_hashes:
            failures.append(f"{len(bad_hashes)} partitions whose restored state differs from the live one: "
                            f"{[(h.processor, h.partition, h.live) for h in bad_hashes[:3]]}")
        if gaps:
            failures.append(f"committed offsets short of the log end: {gaps[:3]}")
        if drain_s is None or drain_s > self.profile.drain_limit_s:
            failures.append(f"lag not drained within {self.profile.drain_limit_s:.0f}s of the last fault "
                            f"(drain_s={drain_s})")
        stuck = sorted(name for name, code in codes.items() if code is None)
        if stuck:
            failures.append(f"did not stop within 40s of SIGTERM (their threads' stacks are at the end of their "
                            f"logs): {stuck}")
        if fleet.unexpected:
            failures.append(f"{len(fleet.unexpected)} unexpected exits (crash loop?): {fleet.unexpected[:2]}")
        points = self.profile.points
        if set(hit) != set(points):
            failures.append(f"fault points not reached: {sorted(set(points) - set(hit))}")
        if clock.kills < self.profile.min_kills:
            failures.append(f"only {clock.kills} kills (at least {self.profile.min_kills} planned)")
        broker_kills = clock.broker_faults.get("kills", 0)
        no_controller = self.kafka3 and not clock.broker_faults.get("controller_kills")
        if broker_kills < self.profile.broker_kills or no_controller:
            failures.append(f"only {broker_kills} broker kills (at least {self.profile.broker_kills} planned, "
                            f"the active controller among them): {clock.broker_faults}")
        if self.profile.exactly_once:
            # Transactions add two claims to the dedupe's: no record is ever read twice, so each order has one
            # result record and each dead letter one copy.
            extra = sum(n - 1 for n in results.copies.values() if n > 1)
            if extra:
                failures.append(f"exactly_once: {extra} result records read twice, e.g. "
                                f"{[o for o, n in results.copies.items() if n > 1][:3]}")
            if dlq.copies != dlq.actual:
                failures.append(f"exactly_once: {dlq.copies - dlq.actual} dead letters read twice")
        if not all(evicted.values()) or not evicted:
            failures.append(f"the paused worker was not evicted from the group: {evicted}")
        if writer.failed:
            failures.append(f"{len(writer.failed)} harness writes failed: {writer.failed[:3]}")
        return {
            "orders": len(wl.order_ids), "seed": self.seed, "quick": self.quick, "passed": not failures,
            "broker": "kafka3" if self.kafka3 else "embedded",
            "guarantee": "exactly_once" if self.profile.exactly_once else "at_least_once",
            "kills": clock.kills, "fault_points_hit": hit,
            "broker_faults": {"kills": broker_kills, "controller_kills": clock.broker_faults.get("controller_kills", 0),
                              "pauses": clock.broker_faults.get("pauses", 0)},
            "fenced_exits": fleet.fenced,
            "result_copies": sum(results.copies.values()),
            "lost": len(lost), "wrong_outcomes": len(wrong), "duplicate_effects": duplicate_effects,
            "effect_mismatches": len(effect_mismatch), "refunds": refunds, "compensated_charges": compensated,
            "dlq_expected": dlq.expected, "dlq_actual": dlq.actual, "dlq_copies": dlq.copies,
            "dlq_precision": round(dlq.precision, 4), "dlq_recall": round(dlq.recall, 4),
            "dlq_by_class": {k: {"expected": e, "found": f} for k, (e, f) in sorted(dlq.by_class.items())},
            "state_mismatches": len(bad_hashes), "state_partitions_compared": len(hashes),
            "state_diff": diffs[:60], "offset_gaps": len(gaps), "drain_s": drain_s,
            "unexpected_exits": len(fleet.unexpected),
            "paused_worker_evicted": evicted,
            "outcomes": dict(Counter(outcome_class(expected[o]) for o in wl.order_ids).most_common()),
            "written": {"records": writer.written, "duplicates": wl.duplicates(), "swapped_pairs": wl.swaps,
                        "same_entity_swaps": wl.same_entity_swaps, "poison": len(wl.manifest)},
            "schedule": {**self.schedule.to_json(), "executed": clock.done},
            "exit_codes": codes, "failures": failures,
            "reproduce": f"streams chaos --seed {self.seed} --orders {len(wl.order_ids)}"
                         f"{' --quick' if self.quick else ''}{' --kafka3' if self.kafka3 else ''}"
                         f"{' --guarantee exactly_once' if self.profile.exactly_once else ''}",
        }


def _evicted(text: str) -> bool:
    """Whether a paused worker's log shows that, once resumed, it found its partitions lost (the group evicted
    it while it was stopped) or gave them up for exceeding the poll interval."""
    return any(s in text for s in ("lost partitions", "MAX_POLL_EXCEEDED", "maximum poll interval",
                                   "ProducerFencedError"))


def run(seed: int, profile: Profile, log: Log, workdir: Path | None = None, quick: bool = False) -> dict[str, Any]:
    """One chaos run; its work directory (logs, stores) is kept when given, else removed."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        return ChaosRun(seed, profile, workdir, log, quick).run()
    with tempfile.TemporaryDirectory(prefix="streams-chaos-") as tmp:
        return ChaosRun(seed, profile, Path(tmp), log, quick).run()


__all__ = ["ChaosRun", "Fault", "Profile", "run"]
