"""The order saga end to end on a real broker and registry: orchestrator + three reference services.

An independent oracle predicts every order's end from the services' (deterministic, seeded) failure choices;
the services' own ledgers show each effect applied exactly once.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from streams.config import KafkaSettings
from streams.contracts import Serde
from streams.kafka.embedded import free_port
from streams.lab.loadgen import place_orders
from streams.processors.avro import default_schemas, make_serde
from streams.processors.services import fate
from streams.runtime.rebuild import rebuild
from streams.state import entity
from streams.state.store import PartitionStore, store_path
from support import orders_topology, read_all, saga_cluster, wait_until

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[1]
SEED = 7
PAYMENT_TRANSIENT, PAYMENT_PERMANENT, SHORTAGE = 0.10, 0.03, 0.05
PAYMENT_ATTEMPTS = 3
TOPOLOGY = orders_topology(4, {"payment_timeout_ms": 8000, "payment_retry": {
    "max_attempts": PAYMENT_ATTEMPTS, "base_ms": 100, "cap_ms": 400}})


def oracle(order_id: str) -> tuple[str, str | None]:
    """The terminal state an order must reach, computed from the generated inputs alone."""
    if order_id.startswith("blackhole"):
        return "cancelled", "timed out"
    if fate(SEED, order_id, "payment-permanent") < PAYMENT_PERMANENT:
        return "cancelled", "permanent"
    if all(fate(SEED, order_id, "payment-transient", a) < PAYMENT_TRANSIENT
           for a in range(1, PAYMENT_ATTEMPTS + 1)):
        return "cancelled", "transient"
    if fate(SEED, order_id, "inventory-shortage") < SHORTAGE:
        return "cancelled", "out of stock"
    return "completed", None


@dataclass
class Saga:
    kafka: KafkaSettings
    serde: Serde
    env: dict[str, str]
    topology: Path
    tmp: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, args: list[str]) -> None:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "streams", *args, "--topology", str(self.topology),
             "--state-dir", str(self.tmp / name), "--commit-interval-ms", "50"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def start_orchestrator(self, name: str = "orchestrator") -> int:
        port = free_port()
        self.start(name, ["worker", "--processor", "orchestrator", "--http-port", str(port)])
        return port

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def results(self) -> dict[str, tuple[str, str | None]]:
        out: dict[str, tuple[str, str | None]] = {}
        for key, value, _h in read_all(self.kafka, "orders.results", 4):
            name, body = self.serde.decode(value)
            out[(key or b"").decode()] = ("completed" if name.endswith("OrderCompleted") else "cancelled",
                                          body.get("reason"))
        return out

    def store(self, group: str, topic: str, store: str, changelog: str | None = None) -> dict[str, bytes]:
        into = self.tmp / f"rebuilt-{group}-{store}"
        shutil.rmtree(into, ignore_errors=True)
        rebuild(self.kafka, group, [topic], changelog or f"orders-{store}-changelog", store, range(4), into)
        out: dict[str, bytes] = {}
        for p in range(4):
            s = PartitionStore(store_path(into, store, p), p)
            out.update({k.decode(): entity.decode(v).state or b"" for k, v in s.entities()})
            s.close()
        return out


@pytest.fixture(scope="module")
def saga(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Saga]:
    """A broker and registry of its own: the saga's topic names are fixed by the workflow definition."""
    tmp = tmp_path_factory.mktemp("saga")
    with saga_cluster(tmp, TOPOLOGY) as (kafka, _registry, topo, env):
        saga = Saga(kafka, make_serde({}), env, topo, tmp)
        seed = ["--seed", str(SEED)]
        saga.start("payment", ["service", "payment", *seed, "--transient-rate", str(PAYMENT_TRANSIENT),
                               "--permanent-rate", str(PAYMENT_PERMANENT), "--no-answer-customer-prefix",
                               "blackhole"])
        saga.start("inventory", ["service", "inventory", *seed, "--shortage-rate", str(SHORTAGE)])
        saga.start("shipping", ["service", "shipping", *seed])
        saga.start_orchestrator()
        try:
            yield saga
        finally:
            for p in saga.procs.values():
                p.terminate()
            for p in saga.procs.values():
                p.wait(30)


def _matches(expected: tuple[str, str | None], actual: tuple[str, str | None]) -> bool:
    return expected[0] == actual[0] and (expected[1] is None or expected[1] in (actual[1] or ""))


def test_two_thousand_orders_end_as_the_oracle_predicts(saga: Saga) -> None:
    ids = [f"ord-{i:05d}" for i in range(2000)] + [f"blackhole-{i}" for i in range(20)]
    place_orders(saga.kafka, saga.serde, ids)
    wait_until(lambda: len(saga.results().keys() & set(ids)) == len(ids), 120, "every order to end", 1.0)
    results = saga.results()
    expected = {oid: oracle(oid) for oid in ids}
    wrong = {oid: (expected[oid], results[oid]) for oid in ids if not _matches(expected[oid], results[oid])}
    assert not wrong, f"{len(wrong)} orders ended differently than predicted, e.g. {list(wrong.items())[:5]}"
    kinds = Counter(e[1] for e in expected.values())
    assert kinds["permanent"] > 20 and kinds["out of stock"] > 40 and kinds["timed out"] == 20  # the mix is real

    # The payment service's ledger: one charge per order that got past payment, one refund per compensation.
    payments = {k: orjson.loads(v) for k, v in saga.store("orders-payment", "payments.commands", "payments").items()}
    for oid in ids:
        effects = Counter(e[0] for e in payments.get(oid, {}).get("effects", []))
        charged = expected[oid] == ("completed", None) or expected[oid][1] == "out of stock"
        assert effects["MakePayment"] == (1 if charged else 0), oid
        assert effects["RefundPayment"] == (1 if expected[oid][1] == "out of stock" else 0), oid
    # The orchestrator's own state agrees, with an audit trail.
    states = saga.store("orders-orchestrator", "orders.events", "orders")
    proc = None
    from streams.processors.workflow import WorkflowProcessor

    proc = WorkflowProcessor({"workflow": "orders"}, [])
    for oid in ids[:200]:
        st = proc.load_state(states[oid])
        assert st.state == expected[oid][0]
        assert st.history and st.history[0].event == "OrderPlaced"
    assert not read_all(saga.kafka, "orders.dlq", 1), "no record should have been dead-lettered"


def test_orchestrator_restart_loses_no_pending_timer(saga: Saga) -> None:
    ids = [f"blackhole-r{i}" for i in range(30)]
    place_orders(saga.kafka, saga.serde, ids)
    # Wait until the orders are waiting for payment (their timeout timers are set and committed).
    wait_until(lambda: sum(1 for oid in ids if oid in saga.store("orders-orchestrator", "orders.events",
                                                                  "orders")) == 30, 60, "orders to be placed")
    saga.procs["orchestrator"].kill()
    saga.procs["orchestrator"].wait(10)
    shutil.rmtree(saga.tmp / "orchestrator")  # its timers must come back from the changelog alone
    normal = [f"after-restart-{i}" for i in range(50)]
    place_orders(saga.kafka, saga.serde, normal)
    saga.start_orchestrator()
    wait_until(lambda: len(saga.results().keys() & set(ids + normal)) == 80, 90, "all to end", 1.0)
    results = saga.results()
    assert all(results[oid][0] == "cancelled" and "timed out" in (results[oid][1] or "") for oid in ids)
    assert all(_matches(oracle(oid), results[oid]) for oid in normal)


def test_poison_on_the_saga_input_is_dead_lettered_and_replayable(saga: Saga) -> None:
    from confluent_kafka import Producer

    from streams.records import H_EVENT_ID

    p = Producer({"bootstrap.servers": saga.kafka.bootstrap_servers, "partitioner": "murmur2_random"})
    unknown_id = b"\x00" + (987654).to_bytes(4, "big") + b"\x02\x04xx"
    stray = saga.serde.encoder("orders.events", "PaymentCompleted")(
        {"envelope": {"id": "stray-1", "entity_key": "ghost-1", "type": "PaymentCompleted", "schema_version": 1,
                      "occurred_at": 0, "correlation_id": "ghost-1", "causation_id": None},
         "order_id": "ghost-1", "payment_id": "p", "amount_cents": 1})
    for key, value, eid in ((b"poison-1", b"\xff\xfe garbage", b"g1"), (b"poison-2", unknown_id, b"u1"),
                            (b"ghost-1", stray, b"s1")):
        p.produce("orders.events", value, key, headers=[(H_EVENT_ID, eid)])
    assert p.flush(10) == 0
    behind = [f"behind-poison-{i}" for i in range(40)]
    place_orders(saga.kafka, saga.serde, behind)
    wait_until(lambda: len(saga.results().keys() & set(behind)) == 40, 60, "orders behind the poison", 1.0)

    def dlq() -> dict[str, dict[str, object]]:
        res = subprocess.run([sys.executable, "-m", "streams", "dlq", "list", "--topic", "orders.dlq", "--json"],
                             env=saga.env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return {str(r["key"]): r for r in orjson.loads(res.stdout)}

    letters = dlq()
    assert letters["poison-1"]["reason"] == "unknown_magic_byte"
    assert letters["poison-2"]["reason"] == "unknown_schema_id" and "987654" in str(letters["poison-2"]["message"])
    assert letters["ghost-1"]["reason"] == "unknown_entity"
    assert all(letters[k]["origin_topic"] == "orders.events" for k in ("poison-1", "poison-2", "ghost-1"))
    # Replay puts them back; still poison, they come back to the DLQ marked as replayed.
    res = subprocess.run([sys.executable, "-m", "streams", "dlq", "replay", "--topic", "orders.dlq", "--reason",
                          "unknown_schema_id", "--yes"], env=saga.env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "replayed 1 dead letter" in res.stdout, res.stderr
    wait_until(lambda: _replayed(saga) == 1, 30, "the replayed record to be dead-lettered again")


def _replayed(saga: Saga) -> int:
    from streams.ops.dlq import read

    return sum(1 for d in read(saga.kafka, "orders.dlq") if d.summary()["replayed_from"])


def _get(url: str, token: str | None = None) -> tuple[int, dict[str, object]]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"{}")


def test_status_query_is_answered_by_a_worker_that_does_not_own_the_key(saga: Saga) -> None:
    from streams.ops.status import partition_for

    port = saga.start_orchestrator("orchestrator-b")
    try:
        wait_until(lambda: "restored; processing" in saga.log("orchestrator-b"), 60, "the second orchestrator")
        ids = [f"status-{i}" for i in range(40)]
        place_orders(saga.kafka, saga.serde, ids)
        wait_until(lambda: len(saga.results().keys() & set(ids)) == 40, 60, "orders to end", 1.0)
        base = f"http://127.0.0.1:{port}"
        _code, health = _get(f"{base}/healthz")
        mine = set(health["partitions"])  # type: ignore[arg-type]
        assert mine and mine != {0, 1, 2, 3}, "the group should have split the partitions"
        foreign = next(oid for oid in ids if partition_for(oid.encode(), 4) not in mine)
        local = next(oid for oid in ids if partition_for(oid.encode(), 4) in mine)
        code, body = _get(f"{base}/workflows/{foreign}")
        assert code == 200, body
        assert body["served_by"] != base and body["key"] == foreign and body["state"] in ("completed", "cancelled")
        assert body["partition"] == partition_for(foreign.encode(), 4)  # our murmur2 agrees with librdkafka's
        assert body["history"] and body["history"][0]["event"] == "OrderPlaced"  # type: ignore[index]
        code, body = _get(f"{base}/workflows/{local}")
        assert code == 200 and body["served_by"] == base
        assert _get(f"{base}/workflows/no-such-order")[0] == 404
        # The CLI face, through the endpoints topic alone (no URL given).
        cli = subprocess.run([sys.executable, "-m", "streams", "status", foreign, "--topology", str(saga.topology),
                              "--processor", "orchestrator"], env=saga.env, capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        shown = orjson.loads(cli.stdout)
        assert shown["key"] == foreign and shown["state"] in ("completed", "cancelled") and "timers" in shown
        missing = subprocess.run([sys.executable, "-m", "streams", "status", "nope", "--url", base], env=saga.env,
                                 capture_output=True, text=True, timeout=60)
        assert missing.returncode == 1 and "no entity 'nope'" in missing.stderr
        code, listing = _get(f"{base}/workflows?state=completed&limit=5")
        assert code == 200 and 0 < len(listing["items"]) <= 5  # type: ignore[arg-type]
        assert all(i["state"] == "completed" for i in listing["items"])  # type: ignore[attr-defined]
        metrics = urllib_text(f"{base}/metrics")
        for name in ("streams_records_in_total", "streams_consumer_lag", "streams_commit_seconds_bucket",
                     "streams_workflows{", "streams_timers_pending", "streams_step_latency_seconds_bucket"):
            assert name in metrics, name
    finally:
        b = saga.procs.pop("orchestrator-b")
        b.terminate()
        assert b.wait(30) == 0


def urllib_text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def _semantic(saga: Saga) -> dict[str, tuple[object, ...]]:
    """Each order's state without wall-clock fields (updated_at, history times differ on a replay)."""
    from streams.processors.workflow import WorkflowProcessor

    proc = WorkflowProcessor({"workflow": "orders"}, [])
    out: dict[str, tuple[object, ...]] = {}
    for key, raw in saga.store("orders-orchestrator", "orders.events", "orders").items():
        st = proc.load_state(raw)
        out[key] = (st.state, dict(st.data), dict(st.attempts), st.completed_steps, st.reason,
                    tuple((h.from_state, h.event, h.to_state) for h in st.history))
    return out


def test_replay_from_the_beginning_rebuilds_identical_state_with_no_extra_effects(saga: Saga) -> None:
    from streams.ops.replay import live_members
    from support import wait_drained

    ids = [f"replay-{i}" for i in range(300)]
    place_orders(saga.kafka, saga.serde, ids)
    wait_until(lambda: len(saga.results().keys() & set(ids)) == 300, 60, "orders to end", 1.0)
    cmd = [sys.executable, "-m", "streams", "replay", "--topology", str(saga.topology), "--processor",
           "orchestrator", "--from-beginning", "--yes"]
    refused = subprocess.run(cmd, env=saga.env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "live members" in refused.stderr
    for name in [n for n in saga.procs if n.startswith("orchestrator")]:
        saga.procs[name].terminate()
        assert saga.procs.pop(name).wait(30) == 0
    wait_until(lambda: not live_members(saga.kafka, "orders-orchestrator"), 60, "the group to empty")
    before = _semantic(saga)
    ledger = saga.store("orders-payment", "payments.commands", "payments")
    assert len(before) >= 300

    res = subprocess.run(cmd, env=saga.env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "replay plan for group orders-orchestrator" in res.stdout and "-> 0" in res.stdout
    assert "reset markers written" in res.stdout
    saga.start_orchestrator()  # same state directory: its stale store must be wiped by the marker
    wait_until(lambda: "reset marker (replay)" in saga.log("orchestrator"), 60, "the restore to meet the marker")
    wait_drained(saga.kafka, "orders-orchestrator", "orders.events", 4, 120)
    after = _semantic(saga)
    assert after == before
    assert saga.store("orders-payment", "payments.commands", "payments") == ledger  # no extra effect


def test_trace_context_follows_an_order_through_commands_and_replies(saga: Saga) -> None:
    from streams.records import H_TRACEPARENT, header
    from streams.runtime import tracing

    oid = "trace-1"
    place_orders(saga.kafka, saga.serde, [oid])
    wait_until(lambda: oid in saga.results(), 60, "the order to end", 1.0)
    expected = tracing.trace_id_of(tracing.root(f"placed-{oid}"))
    seen: dict[str, set[str | None]] = {}
    for topic in ("payments.commands", "inventory.commands", "shipping.commands", "orders.events"):
        for key, value, headers in read_all(saga.kafka, topic, 4):
            if key == oid.encode():
                name, _ = saga.serde.decode(value)
                seen.setdefault(name.rsplit(".", 1)[-1], set()).add(
                    tracing.trace_id_of(header(headers, H_TRACEPARENT)))
    assert {"OrderPlaced", "MakePayment", "PaymentCompleted", "ReserveInventory"} <= set(seen)
    assert all(ids == {expected} for ids in seen.values()), seen


def test_v1_and_v2_reader_workers_both_process_v1_and_v2_orders(saga: Saga) -> None:
    """Issue 4's evolution case at the worker level: OrderPlaced v2 adds `channel` (default "web")."""
    from streams.contracts import Catalogue, Serde
    from streams.lab.loadgen import order_placed
    from streams.processors.workflow import WorkflowProcessor

    v2 = default_schemas() / "evolution" / "OrderPlaced.v2.avsc"
    # A second orchestrator group built against v2; the fixture's orchestrator is the v1 reader.
    topo = saga.tmp / "orders-v2.yaml"
    topo.write_text(TOPOLOGY.replace("name: orders", "name: ordersv2").replace(
        "      workflow: orders\n", f"      workflow: orders\n      schema_overrides: [{v2}]\n"))
    log = open(saga.tmp / "orchestrator-v2.log", "ab")  # noqa: SIM115
    v2_worker = subprocess.Popen([sys.executable, "-m", "streams", "worker", "--topology", str(topo), "--processor",
                                  "orchestrator", "--state-dir", str(saga.tmp / "orchestrator-v2")],
                                 env=saga.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        v1_ids = [f"evo-v1-{i}" for i in range(20)]
        v2_ids = [f"evo-v2-{i}" for i in range(20)]
        place_orders(saga.kafka, saga.serde, v1_ids)  # a v1 producer
        v2_serde = Serde(saga.serde.registry, Catalogue.load(default_schemas(), overrides=[v2]))
        from confluent_kafka import Producer

        from streams.records import H_EVENT_ID

        producer = Producer({"bootstrap.servers": saga.kafka.bootstrap_servers, "partitioner": "murmur2_random"})
        encode = v2_serde.encoder("orders.events", "OrderPlaced")  # a v2 producer (registers the new version)
        for oid in v2_ids:
            producer.produce("orders.events", encode({**order_placed(oid, f"cust-{oid}", 500, 0), "channel": "app"}),
                             oid.encode(), headers=[(H_EVENT_ID, f"placed-{oid}".encode())])
        assert producer.flush(10) == 0
        ids = set(v1_ids + v2_ids)
        # The v1 reader (the saga's own orchestrator) takes every order to its end.
        wait_until(lambda: ids <= saga.results().keys(), 60, "v1 reader to finish all orders", 1.0)
        # The v2 reader started every order too, from both producers, with the same data.
        wait_until(lambda: ids <= saga_store_keys(saga, "ordersv2"), 60, "v2 reader to hold every order")
        reader = WorkflowProcessor({"workflow": "orders"}, [])
        states = saga.store("ordersv2-orchestrator", "orders.events", "orders", changelog="ordersv2-orders-changelog")
        for oid in ids:
            st = reader.load_state(states[oid])
            assert st.data["order_id"] == oid and st.data["customer_id"] == f"cust-{oid}"
        # And a v2 reader sees the new field: set by the v2 producer, defaulted for v1 records.
        full = {oid: v2_serde.decode(v)[1] for k, v, _h in read_all(saga.kafka, "orders.events", 4)
                if (oid := (k or b"").decode()) in ids and v2_serde.decode(v)[0].endswith("OrderPlaced")}
        assert {full[o]["channel"] for o in v2_ids} == {"app"} and {full[o]["channel"] for o in v1_ids} == {"web"}
    finally:
        v2_worker.terminate()
        v2_worker.wait(30)
        log.close()


def saga_store_keys(saga: Saga, name: str) -> set[str]:
    return set(saga.store(f"{name}-orchestrator", "orders.events", "orders", changelog=f"{name}-orders-changelog"))
