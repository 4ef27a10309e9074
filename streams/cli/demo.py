"""``streams demo``: the order saga end to end on the embedded default (``--example loan``: the loan
application, :mod:`streams.cli.demo_loan`).

Broker, schema registry, topics, the orchestrator and the three reference services (each its own process),
orders generated at a chosen rate with a mix of failures, live progress, and a summary: orders completed and
cancelled by reason, retries, dead letters and completion latency percentiles.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from streams.cli import demo_counter, demo_loan
from streams.cli.common import RUN, app, bootstrap_given, examples, kafka_or_embedded, log, registry_or_embedded
from streams.cli.options import SHARE, Bootstrap, choice, flag, number, one_of
from streams.cli.progress import progress
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
from streams.runtime.rebuild import rebuild
from streams.state import entity
from streams.state.store import PartitionStore, store_path
from streams.topology import load

ORDERS = "orders"  # the built-in example topology (streams.topology.EXAMPLES)
ORDERS_PANEL, COUNTER_PANEL = "The order saga (default)", "--counter: the runtime-only counter"


@app.command(rich_help_panel=RUN, epilog=examples(
    "streams demo --orders 500 --rate 100", "streams demo --example loan --loans 20",
    "streams demo --counter --records 10000 --workers 3"))
def demo(
    example: Annotated[str, typer.Option(parser=choice("orders", "loan"), metavar=one_of("orders", "loan"),
                                         help="which example: the order saga, or the loan application with "
                                              "simulated reviewers")] = "orders",
    loans: Annotated[int, typer.Option(parser=number(int, 1, 100_000), help="--example loan: applications")] = 60,
    orders: Annotated[int, typer.Option(help="orders to place", rich_help_panel=ORDERS_PANEL)] = 2000,
    rate: Annotated[float, typer.Option(help="orders per second", rich_help_panel=ORDERS_PANEL)] = 200.0,
    orchestrators: Annotated[int, typer.Option(help="orchestrator worker processes",
                                               rich_help_panel=ORDERS_PANEL)] = 1,
    transient_rate: Annotated[float, typer.Option(parser=SHARE, help="payment attempts failing TRANSIENT",
                                                  rich_help_panel=ORDERS_PANEL)] = 0.10,
    permanent_rate: Annotated[float, typer.Option(parser=SHARE, help="payments failing PERMANENT",
                                                  rich_help_panel=ORDERS_PANEL)] = 0.03,
    shortage_rate: Annotated[float, typer.Option(parser=SHARE, help="orders out of stock",
                                                 rich_help_panel=ORDERS_PANEL)] = 0.05,
    shipping_failure_rate: Annotated[float, typer.Option(parser=SHARE, help="labels failing PERMANENT",
                                                         rich_help_panel=ORDERS_PANEL)] = 0.02,
    no_answer_rate: Annotated[float, typer.Option(parser=SHARE, help="payments never answered",
                                                  rich_help_panel=ORDERS_PANEL)] = 0.01,
    payment_timeout_ms: Annotated[int, typer.Option(rich_help_panel=ORDERS_PANEL)] = 5000,
    counter: Annotated[bool, flag("--counter", "run the runtime-only counter demo instead", COUNTER_PANEL)] = False,
    records: Annotated[int, typer.Option(help="records to generate", rich_help_panel=COUNTER_PANEL)] = 50_000,
    keys: Annotated[int, typer.Option(help="distinct keys", rich_help_panel=COUNTER_PANEL)] = 1_000,
    poison: Annotated[int, typer.Option(help="undecodable records mixed in", rich_help_panel=COUNTER_PANEL)] = 5,
    workers: Annotated[int, typer.Option(help="worker processes", rich_help_panel=COUNTER_PANEL)] = 2,
    bootstrap: Bootstrap = None,
) -> int:
    """Run the order-saga demo (or --example loan) on the embedded default."""
    if counter:
        return demo_counter.run(records, keys, poison, workers, bootstrap)
    if example == "loan":
        with kafka_or_embedded(bootstrap) as kafka, registry_or_embedded(kafka, "demo") as url:
            return demo_loan.run(loans, kafka, url)
    if bootstrap_given(bootstrap) and not os.environ.get("STREAMS_DEMO_SHARED"):
        log("demo: using the Kafka in KAFKA_BOOTSTRAP_SERVERS; the saga's topic names are fixed (orders.*)")
    seed = ["--seed", "1"]
    specs = [(f"orchestrator{i}", ["worker", "--topology", ORDERS, "--processor", "orchestrator"])
             for i in range(orchestrators)]
    specs += [
        ("payment", ["service", "payment", *seed, "--transient-rate", str(transient_rate), "--permanent-rate",
                     str(permanent_rate), "--no-answer-rate", str(no_answer_rate)]),
        ("inventory", ["service", "inventory", *seed, "--shortage-rate", str(shortage_rate)]),
        ("shipping", ["service", "shipping", *seed, "--permanent-rate", str(shipping_failure_rate)]),
    ]
    with kafka_or_embedded(bootstrap) as kafka, registry_or_embedded(kafka, "demo") as url, \
            tempfile.TemporaryDirectory(prefix="streams-demo-") as tmp:
        env = {**os.environ, **kafka.child_env(), "SCHEMA_REGISTRY_URL": url,
               "PAYMENT_TIMEOUT_MS": str(payment_timeout_ms)}
        os.environ["SCHEMA_REGISTRY_URL"] = url
        topo = load(ORDERS, env)
        with progress() as bar:
            Admin(kafka).ensure(topo.all_topics(), bar)
        # Orders placed before every group has joined would measure start-up, not the saga: this waits for them.
        with demo_loan.workers(specs, env, Path(tmp)) as procs:
            log(f"demo: started {orchestrators} orchestrator(s) and the payment, inventory and shipping services")
            log("demo: all workers are processing")
            with beside(kafka, groups_of(topo), log, "demo", linger=True):
                return _drive(kafka, make_serde({}), Path(tmp), procs, orders, rate, payment_timeout_ms)


def _drive(kafka: KafkaSettings, serde: Serde, tmp: Path, procs: Supervisor, orders: int, rate: float,
           payment_timeout_ms: int) -> int:
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
    with progress() as bar:
        bar.phase(f"demo: {orders} orders placed at {rate:g}/s, finished", orders)
        while time.monotonic() < deadline:
            finished = sum(1 for oid in ids if oid in done)
            bar.advance(finished)
            if finished == len(ids):
                break
            if procs.exited():
                log("demo: a worker exited early; its log is in the demo directory")
                return 1
            time.sleep(0.5)
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
             done: dict[str, tuple[str, str | None, int]], elapsed: float) -> int:
    ends = Counter(done[oid][0] for oid in ids if oid in done)
    reasons = Counter(done[oid][1] or "unknown" for oid in ids if oid in done and done[oid][0] == "cancelled")
    latencies = [done[oid][2] - sent[oid] for oid in ids if oid in done and oid in sent and done[oid][0] == "completed"]
    retries = _retries(kafka, tmp, set(ids))
    dead = sum(1 for _ in read_dlq(kafka, "orders.dlq"))
    unfinished = len(ids) - sum(ends.values())
    print("streams demo: order saga")
    print(f"  orders          {len(ids)} placed in {elapsed:.1f}s")
    print(f"  completed       {ends['completed']}")
    print(f"  cancelled       {ends['cancelled']}")
    for reason, n in reasons.most_common():
        print(f"    {n:>6}  {reason}")
    print(f"  retries         {retries} command re-issues (transient failures and timeouts)")
    print(f"  dead letters    {dead}")
    p50, p99 = (percentile(sorted(latencies), q) if latencies else float("nan") for q in (0.5, 0.99))
    print(f"  latency         p50 {p50:.0f} ms, p99 {p99:.0f} ms "
          "(OrderPlaced produced -> OrderCompleted read, completed orders)")
    if unfinished:
        print(f"  UNFINISHED      {unfinished} orders did not end in time")
    return 0 if unfinished == 0 else 1


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
