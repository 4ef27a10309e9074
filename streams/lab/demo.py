"""The demos' drivers (``streams demo``): the order saga end to end, here; the loan application
(:mod:`streams.lab.demo_loan`) and the runtime-only counter (:mod:`streams.lab.demo_counter`) beside it.

The saga: the orchestrator and the three reference services (each its own process), orders generated at a
chosen rate with a mix of failures, and a summary: orders completed and cancelled by reason, retries, dead
letters and completion latency percentiles. Each driver returns its summary as a :class:`Report` for the
command to print.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from streams.config import KafkaSettings
from streams.contracts import Serde
from streams.kafka.admin import Admin
from streams.kafka.client import follow
from streams.lab.bench_latency import percentile
from streams.lab.loadgen import place_orders
from streams.ops.dashboard import beside, groups_of
from streams.ops.dev import Supervisor
from streams.ops.dlq import read as read_dlq
from streams.processors.avro import make_serde
from streams.progress import Progress
from streams.runtime.rebuild import rebuild
from streams.state import entity
from streams.state.store import PartitionStore, store_path
from streams.topology import load

ORDERS = "orders"  # the built-in example topology (streams.topology.EXAMPLES)
Log = Callable[[str], None]


@dataclass(frozen=True)
class Report:
    lines: list[str]  # the summary; none when the run ended early (a worker died: its log says why)
    ok: bool  # every entity ended as it should


@contextlib.contextmanager
def workers(specs: list[tuple[str, list[str]]], env: Mapping[str, str], tmp: Path,
            bar: Progress) -> Iterator[Supervisor]:
    """One ``streams`` process per spec, their logs in ``tmp/workers.log``; the block starts once each is
    processing (``bar`` shows how many are), and they are all stopped when it ends."""
    with open(tmp / "workers.log", "w") as out:
        procs = Supervisor(out, env)
        try:
            for name, cmd in specs:
                procs.start(name, [sys.executable, "-m", "streams", *cmd, "--state-dir", str(tmp / name),
                                   "--commit-interval-ms", "20", "--http-port", "0"])  # /metrics, for the dashboard
            deadline = time.monotonic() + 60
            bar.phase(f"demo: starting {len(specs)} workers (processing)", len(specs))
            while (ready := sum(c.ready.is_set() for c in procs.children)) < len(specs) and \
                    time.monotonic() < deadline and not procs.exited():
                bar.advance(ready)
                time.sleep(0.2)
            bar.advance(ready)
            bar.end()
            yield procs
        finally:
            procs.stop()


def finish(name: str, total: int, done: Callable[[], int], deadline: float, bar: Progress, procs: Supervisor,
           log: Log, every_s: float = 0.5) -> bool:
    """Phase ``name`` of ``bar`` until ``done()`` reaches ``total`` or ``deadline`` (monotonic) passes; False,
    and a line in the log, when a worker exited first (its log says why)."""
    bar.phase(name, total)
    while (n := done()) < total and time.monotonic() < deadline:
        if procs.exited():
            log("demo: a worker exited early; its log is in the demo directory")
            return False
        bar.advance(n)
        time.sleep(every_s)
    bar.advance(n)
    bar.end()
    return True


def saga(kafka: KafkaSettings, registry_url: str, bar: Progress, log: Log, specs: list[tuple[str, list[str]]],
         orders: int, rate: float, payment_timeout_ms: int) -> Report:
    """The order saga with the processes ``specs`` names (orchestrators first, then the three services)."""
    with tempfile.TemporaryDirectory(prefix="streams-demo-") as tmp:
        env = {**os.environ, **kafka.child_env(), "SCHEMA_REGISTRY_URL": registry_url,
               "PAYMENT_TIMEOUT_MS": str(payment_timeout_ms)}
        os.environ["SCHEMA_REGISTRY_URL"] = registry_url
        topo = load(ORDERS, env)
        Admin(kafka).ensure(topo.all_topics(), bar)
        # Orders placed before every group has joined would measure start-up, not the saga: this waits for them.
        with workers(specs, env, Path(tmp), bar) as procs:
            log(f"demo: started {len(specs) - 3} orchestrator(s) and the payment, inventory and shipping services")
            log("demo: all workers are processing")
            with beside(kafka, groups_of(topo), log, "demo", linger=True):
                return _drive(kafka, make_serde({}), Path(tmp), procs, bar, log, orders, rate, payment_timeout_ms)


def _drive(kafka: KafkaSettings, serde: Serde, tmp: Path, procs: Supervisor, bar: Progress, log: Log,
           orders: int, rate: float, payment_timeout_ms: int) -> Report:
    sent: dict[str, int] = {}
    done: dict[str, tuple[str, str | None, int]] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_results, args=(kafka, serde, done, stop), daemon=True)
    watcher.start()
    run_id = uuid.uuid4().hex[:6]
    ids = [f"order-{run_id}-{i:06d}" for i in range(orders)]
    t0 = time.monotonic()
    gen = threading.Thread(target=place_orders, args=(kafka, serde, ids, rate),
                           kwargs={"on_sent": sent.__setitem__}, daemon=True)
    gen.start()
    # Orders whose payment is never answered end only after the payment timeout.
    deadline = t0 + orders / rate + payment_timeout_ms / 1000 + 60
    if not finish(f"demo: {orders} orders placed at {rate:g}/s, finished", orders,
                  lambda: sum(1 for oid in ids if oid in done), deadline, bar, procs, log):
        return Report([], False)
    elapsed = time.monotonic() - t0
    stop.set()
    watcher.join(5)
    return _summary(kafka, tmp, ids, sent, done, elapsed)


def _watch_results(kafka: KafkaSettings, serde: Serde, done: dict[str, tuple[str, str | None, int]],
                   stop: threading.Event) -> None:
    for batch in follow(kafka, ["orders.results"], stop):
        for m in batch:
            name, body = serde.decode(m.value())
            done.setdefault((m.key() or b"").decode(), (
                "completed" if name.endswith("OrderCompleted") else "cancelled", body.get("reason"),
                int(time.time() * 1000)))


def _summary(kafka: KafkaSettings, tmp: Path, ids: list[str], sent: dict[str, int],
             done: dict[str, tuple[str, str | None, int]], elapsed: float) -> Report:
    ends = Counter(done[oid][0] for oid in ids if oid in done)
    reasons = Counter(done[oid][1] or "unknown" for oid in ids if oid in done and done[oid][0] == "cancelled")
    latencies = [done[oid][2] - sent[oid] for oid in ids if oid in done and oid in sent and done[oid][0] == "completed"]
    retries = _retries(kafka, tmp, set(ids))
    dead = sum(1 for _ in read_dlq(kafka, "orders.dlq"))
    unfinished = len(ids) - sum(ends.values())
    out: list[str] = []
    say = out.append
    say("streams demo: order saga")
    say(f"  orders          {len(ids)} placed in {elapsed:.1f}s")
    say(f"  completed       {ends['completed']}")
    say(f"  cancelled       {ends['cancelled']}")
    for reason, n in reasons.most_common():
        say(f"    {n:>6}  {reason}")
    say(f"  retries         {retries} command re-issues (transient failures and timeouts)")
    say(f"  dead letters    {dead}")
    p50, p99 = (percentile(sorted(latencies), q) if latencies else float("nan") for q in (0.5, 0.99))
    say(f"  latency         p50 {p50:.0f} ms, p99 {p99:.0f} ms "
          "(OrderPlaced produced -> OrderCompleted read, completed orders)")
    if unfinished:
        say(f"  UNFINISHED      {unfinished} orders did not end in time")
    return Report(out, unfinished == 0)


def _retries(kafka: KafkaSettings, tmp: Path, ids: set[str]) -> int:
    """Command re-issues, from the orchestrator's state rebuilt from its changelog."""
    from streams.processors.workflow import WorkflowProcessor

    into = tmp / "rebuilt"
    rebuild(kafka, "orders-orchestrator", ["orders.events"], "orders-orders-changelog", "orders", range(4), into)
    proc = WorkflowProcessor({"workflow": "orders"}, [])
    total = 0
    for p in range(4):
        store = PartitionStore(store_path(into, "orders", p), p)
        for k, v in store.entities():
            if k.decode() in ids:
                st = proc.load_state(entity.decode(v).state or b"")
                total += sum(max(0, a - 1) for a in st.attempts.values())
        store.close()
    return total
