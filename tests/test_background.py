"""Background threads heal themselves, and /healthz says when one has not (issue 19, point 4).

The rule is tested on its own with a clock the test moves; the loop with real threads and a round that fails; the
dashboard end to end, across a 12 s pause (SIGSTOP) of a broker of the test's own.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.config import KafkaSettings, WorkerSettings
from streams.kafka.admin import Admin
from streams.ops.dashboard import Dashboard, DashboardSettings
from streams.ops.status import Endpoints, StatusServer
from streams.processors import resolve
from streams.registry import RegistryServer
from streams.runtime.heartbeat import MIN_OVERDUE_S, Heartbeats, health, run_rounds
from streams.runtime.worker import Worker, WorkerSpec
from streams.topology import TopicSpec, load
from support import counter_topology, signalled_broker, wait_until

Broker = tuple[KafkaSettings, Callable[[signal.Signals], None]]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_heartbeat_rule_overdue_then_healthy_again_dead_and_unregistered() -> None:
    clock = Clock()
    beats = Heartbeats(clock)
    beats.register("sampler", overdue_s=6.0)
    assert health(beats) == (200, {"ok": True, "threads": ["sampler"]})

    clock.now += 6.0  # exactly the allowance: still on time
    assert health(beats)[0] == 200
    assert beats.failed("sampler", "KafkaUnavailableError: no answer") == 1
    clock.now += 3.5
    status, body = health(beats)
    assert status == 503 and body["ok"] is False
    assert body["unhealthy"] == {"sampler": {"state": "overdue", "last_round_s_ago": 9.5, "overdue_by_s": 3.5,
                                             "failed_rounds": 1, "error": "KafkaUnavailableError: no answer"}}

    assert beats.ok("sampler") == 1  # the streak it ends
    assert health(beats)[0] == 200

    done = threading.Thread(target=lambda: None)
    done.start()
    done.join()
    beats.register("announcer", overdue_s=30.0, thread=done)  # a thread that ended without unregistering: died
    status, body = health(beats, partitions=[0, 1])
    assert status == 503 and body["partitions"] == [0, 1]
    assert body["unhealthy"]["announcer"]["state"] == "dead" and "sampler" not in body["unhealthy"]

    beats.unregister("announcer")  # asked to stop, and stopped
    assert health(beats)[0] == 200
    assert beats.ok("unknown") == 0 and beats.failed("unknown", "x") == 0  # a stopped thread's late report


def test_a_failing_round_is_retried_logged_once_per_streak_and_the_thread_survives() -> None:
    beats = Heartbeats()
    stop = threading.Event()
    lines: list[str] = []
    calls = [0]
    fail_until = 12

    def round_() -> None:
        calls[0] += 1
        if calls[0] <= fail_until:
            raise TimeoutError("no answer from Kafka")
        if calls[0] == fail_until + 3:
            raise KeyError("a bug")

    thread = run_rounds(beats, "test-rounds", round_, 0.01, stop, lines.append, overdue_s=0.05,
                        backoff_cap_s=0.02)
    try:
        wait_until(lambda: calls[0] > fail_until + 5, 20, "the rounds to succeed again", 0.01)
        assert thread.is_alive()
        wait_until(lambda: health(beats)[0] == 200, 5, "healthy again", 0.01)
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive() and beats.names() == []  # stopped: no longer watched
    failures = [x for x in lines if "round failed" in x]
    # One line per streak (both streaks are far shorter than the rate limit), then one when rounds succeed again.
    assert failures == ["test-rounds: round failed (TimeoutError: no answer from Kafka); 1 in a row, "
                        f"next in {failures[0].rsplit('next in ', 1)[1]}",
                        failures[1]], lines
    assert failures[1].startswith("test-rounds: round failed (KeyError: 'a bug'); 1 in a row")
    assert f"test-rounds: rounds succeed again after {fail_until} failed" in lines
    assert "test-rounds: rounds succeed again after 1 failed" in lines


def test_an_overdue_failing_loop_reports_unhealthy_while_it_fails() -> None:
    beats = Heartbeats()
    stop = threading.Event()
    failing = threading.Event()
    failing.set()

    def round_() -> None:
        if failing.is_set():
            raise OSError("broker away")

    thread = run_rounds(beats, "flaky", round_, 0.02, stop, lambda _m: None, overdue_s=0.2, backoff_cap_s=0.05)
    try:
        wait_until(lambda: health(beats)[0] == 503, 5, "overdue", 0.01)
        body = health(beats)[1]
        assert body["unhealthy"]["flaky"]["state"] == "overdue"
        assert body["unhealthy"]["flaky"]["error"] == "OSError: broker away"
        failing.clear()
        wait_until(lambda: health(beats)[0] == 200, 5, "healthy after a round succeeds", 0.01)
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(5)


def _healthz(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url + "healthz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A Kafka node of this module's own: its tests pause it."""
    with signalled_broker(tmp_path_factory.mktemp("paused")) as pair:
        yield pair


@pytest.mark.kafka
def test_dashboard_keeps_sampling_across_a_12s_broker_pause_and_is_unhealthy_meanwhile(broker: Broker) -> None:
    kafka, send = broker
    lines: list[str] = []
    settings = DashboardSettings(port=0, interval_s=0.5, timeout_s=2.0)
    with Dashboard(settings, kafka, log=lines.append) as dash:
        assert _healthz(dash.url) == (200, {"ok": True, "threads": ["dashboard-sampler"]})
        before = dash.sampler.snapshot()["seq"]
        send(signal.SIGSTOP)
        paused = time.monotonic()
        try:
            wait_until(lambda: _healthz(dash.url)[0] == 503, 11, "/healthz to report the stalled sampler", 0.25)
            status, body = _healthz(dash.url)
            assert status == 503 and body["ok"] is False, body
            stalled = body["unhealthy"]["dashboard-sampler"]
            assert stalled["state"] == "overdue" and stalled["overdue_by_s"] >= 0
            assert stalled["last_round_s_ago"] >= MIN_OVERDUE_S and stalled["failed_rounds"] >= 1  # rounded to 0.1 s
            time.sleep(max(0.0, 12.0 - (time.monotonic() - paused)))
        finally:
            send(signal.SIGCONT)
        threads = {t.name: t for t in threading.enumerate()}
        assert threads["dashboard-sampler"].is_alive()
        wait_until(lambda: _healthz(dash.url)[0] == 200, 90, "/healthz to be ok once sampling works again", 0.5)
        assert dash.sampler.lag_error is None
        assert threads["dashboard-sampler"].is_alive()
        assert dash.sampler.snapshot()["seq"] > before
    failed = [x for x in lines if "dashboard-sampler: round failed" in x]
    assert failed and len(failed) <= 2, lines  # one line for the streak (two if it outlasted the rate limit)
    assert any("dashboard-sampler: rounds succeed again" in x for x in lines), lines
    assert not any("Traceback" in x for x in lines)


class _ShortLease(Endpoints):
    LEASE_S = 3.0  # renewed every second, overdue after 3 s: the pause below outlasts it


@pytest.mark.kafka
def test_worker_healthz_names_the_endpoint_renewer_while_the_broker_is_paused(broker: Broker, tmp_path: Path) -> None:
    kafka, send = broker
    lines: list[str] = []
    topo = load(counter_topology(tmp_path, "beats", 1, kafka=kafka))
    proc = topo.processor(None)
    Admin(kafka).ensure([TopicSpec("beats.endpoints", 1, 1, "compact")])
    endpoints = _ShortLease(kafka, "beats.endpoints", log=lines.append)
    url: list[str] = []
    worker = Worker(WorkerSpec(proc.name, proc.inputs, proc.changelog, proc.store, topo.dlq_topic),
                    resolve(proc.processor, proc.options, proc.outputs), kafka,
                    WorkerSettings(group="beats", state_dir=tmp_path / "state"), lines.append,
                    on_assignment=lambda parts: endpoints.announce("beats-1", url[0], parts))
    server = StatusServer(worker, None, 1, endpoints=endpoints).start()
    url.append(server.url)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: _healthz(server.url + "/")[1]["threads"] == [
            "endpoints-renewer", "streams-freeze-watch", "worker-loop"], 60, "the worker to announce itself")
        assert _healthz(server.url + "/")[0] == 200
        send(signal.SIGSTOP)
        paused = time.monotonic()
        try:
            wait_until(lambda: _healthz(server.url + "/")[0] == 503, 20, "/healthz to report the renewer", 0.25)
            body = _healthz(server.url + "/")[1]
            assert list(body["unhealthy"]) == ["endpoints-renewer"], body  # the loop and the watcher carry on
            assert body["unhealthy"]["endpoints-renewer"]["state"] == "overdue"
            # Past the renewer's 10 s wait for an acknowledgement: the round fails, is logged and retried.
            time.sleep(max(0.0, 12.0 - (time.monotonic() - paused)))
        finally:
            send(signal.SIGCONT)
        wait_until(lambda: _healthz(server.url + "/")[0] == 200, 90, "/healthz ok once announcements work again")
    finally:
        server.stop()
        endpoints.close()
        worker.stop()
        thread.join(30)
    assert not thread.is_alive()
    assert any("endpoints-renewer: round failed (KafkaUnavailableError" in x for x in lines), lines
    assert any("endpoints-renewer: rounds succeed again" in x for x in lines), lines


@pytest.mark.kafka
def test_registry_healthz_watches_its_log_reader(kafka: KafkaSettings) -> None:
    topic = f"_schemas_beats{time.time_ns()}"
    with RegistryServer(kafka, port=0, topic=topic) as reg:
        assert _healthz(reg.url + "/") == (200, {"ok": True, "threads": [f"schema-log-{topic}"]})
    with RegistryServer(port=0) as memory:  # no Kafka, no reader thread
        assert _healthz(memory.url + "/") == (200, {"ok": True, "threads": []})
