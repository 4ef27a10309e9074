"""The live dashboard, end to end: real broker, a worker-like /metrics endpoint, the server, headless Chromium.

The browser test compares what the rendered page shows with what ``streams lag --json`` reports for the same
group, so the page can never drift from the CLI. The browser is Debian's Chromium driven by playwright (the
``chromium`` fixture); when it cannot be installed the test fails saying so, it never skips.
"""

from __future__ import annotations

import contextlib
import json
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from streams.config import KafkaSettings
from streams.errors import ConfigError
from streams.kafka.admin import Admin
from streams.kafka.client import make_consumer, make_producer
from streams.ops.dashboard import Dashboard, DashboardSettings
from streams.ops.sampler import Sampler, histogram_quantile
from streams.topology import TopicSpec
from streams.web import is_loopback
from support import Dom, browser_page, hang_up

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-" + uuid.uuid4().hex
# Records per partition, in two flushes so every partition's last batch holds several records (the case the
# embedded broker's ListOffsets gets wrong), and what the group commits: part, all, nothing.
FIRST = {0: 30, 1: 25, 2: 3}
SECOND = {0: 10, 1: 0, 2: 0}
TOTAL = {p: FIRST[p] + SECOND[p] for p in FIRST}
COMMITS = {0: 13, 1: 25}
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
WINDOW = (1280, 1000)


# ------------------------------------------------------------------------------------------------ fixtures


@dataclass(frozen=True)
class Scenario:
    topic: str
    group: str


@pytest.fixture(scope="module")
def scenario(kafka: KafkaSettings) -> Scenario:
    u = uuid.uuid4().hex[:8]
    topic, group = f"dash-{u}", f"dash-group-{u}"
    Admin(kafka).ensure([TopicSpec(topic, 3)])
    _produce(kafka, topic, FIRST)
    _produce(kafka, topic, SECOND)
    consumer = make_consumer(kafka, group)  # FAST_GROUP_DEFAULTS: joins in seconds on the embedded broker
    consumer.subscribe([topic])
    seen, deadline = 0, time.monotonic() + 20
    while seen < sum(TOTAL.values()) and time.monotonic() < deadline:
        seen += sum(1 for m in consumer.consume(500, 0.2) if m.error() is None)
    assert seen == sum(TOTAL.values()), f"consumed {seen} records"
    consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in COMMITS.items()], asynchronous=False)
    consumer.close()
    return Scenario(topic, group)


@dataclass
class FakeWorker:
    """A /metrics endpoint exposed by prometheus_client itself, with the names and labels the workers use."""

    url: str
    step: Histogram


@contextlib.contextmanager
def _fake_worker(group: str) -> Iterator[FakeWorker]:
    reg = CollectorRegistry()
    step = Histogram("streams_step_latency_seconds", "input event to outputs", ["group"], buckets=BUCKETS,
                     registry=reg)
    # 98 fast steps and 2 slow ones: rank 99 of 100 falls in (0.1, 0.25], halfway: p99 = 0.175 s
    for _ in range(98):
        step.labels(group).observe(0.003)
    for _ in range(2):
        step.labels(group).observe(0.2)
    Histogram("streams_commit_seconds", "commit", ["group"], buckets=BUCKETS, registry=reg).labels(group)
    stuck = Gauge("streams_workflows_stuck", "stuck", ["group", "workflow", "state"], registry=reg)
    stuck.labels(group, "orders", "AWAITING_PAYMENT").set(3)
    stuck.labels(group, "orders", "SHIPPING").set(0)
    running = Gauge("streams_workflows", "workflows", ["group", "workflow", "state"], registry=reg)
    running.labels(group, "orders", "AWAITING_PAYMENT").set(7)
    dlq = Counter("streams_dead_letters_total", "dead letters", ["group", "reason"], registry=reg)
    dlq.labels(group, "decode_error").inc(4)
    dlq.labels(group, "handler_error").inc(1)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=reg)
    try:
        yield FakeWorker(f"http://127.0.0.1:{server.server_port}/metrics", step.labels(group))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def worker(scenario: Scenario) -> Iterator[FakeWorker]:
    with _fake_worker(scenario.group) as w:
        yield w


@pytest.fixture(scope="module")
def dashboard(kafka: KafkaSettings, scenario: Scenario, worker: FakeWorker) -> Iterator[Dashboard]:
    settings = DashboardSettings(port=0, groups=(scenario.group,), workers=(worker.url,), interval_s=0.3,
                                 token=TOKEN)
    with Dashboard(settings, kafka) as dash:
        yield dash


# ------------------------------------------------------------------------------------------------ helpers


def _produce(kafka: KafkaSettings, topic: str, counts: dict[int, int]) -> None:
    producer = make_producer(kafka, {"linger.ms": 100})
    for p, n in counts.items():
        for i in range(n):
            producer.produce(topic, value=f"{p}-{i}".encode(), partition=p)
    assert producer.flush(10) == 0


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", "not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _wait_snapshot(dash: Dashboard, pred: Callable[[dict[str, Any]], bool], timeout_s: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        snap = dash.sampler.snapshot()
        if pred(snap):
            return snap
        if time.monotonic() > deadline:
            raise AssertionError(f"snapshot never satisfied the condition: {json.dumps(snap)[:2000]}")
        time.sleep(0.1)


# ------------------------------------------------------------------------------------------------ browser


def test_page_in_chromium_shows_what_streams_lag_reports(
    chromium: str, dashboard: Dashboard, scenario: Scenario, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    _wait_snapshot(dashboard, lambda s: bool(s["lag"]) and bool(s["workers"]) and s["workers"][0]["up"])
    cli = subprocess.run([sys.executable, "-m", "streams", "lag", "--group", scenario.group, "--json"],
                         env=subprocess_env, capture_output=True, text=True, timeout=30, check=False)
    assert cli.returncode == 0, cli.stderr
    expected = {(r["group"], r["topic"], r["partition"]): (r["committed"], r["log_end"], r["lag"])
                for r in json.loads(cli.stdout)}
    assert len(expected) == 3 and {k[2]: v[2] for k, v in expected.items()} == {0: 27, 1: 0, 2: 3}

    # The token travels in the fragment, which the page turns into an Authorization header.
    with browser_page(chromium, *WINDOW) as page:
        page.goto(dashboard.url + "#token=" + TOKEN)
        page.wait_for_function("document.body.dataset.state !== 'loading'")
        dom = Dom(page)
        assert dom.body.get("data-state") == "ready", dom.html[:3000]
        assert TOKEN not in page.url, "the token must not stay in the address bar"
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot))

    shown = {(a["data-group"], a["data-topic"], int(a["data-partition"])):
             (None if c["committed"] == "-" else int(c["committed"]), int(c["log-end"]), int(c["lag"]))
             for a, c in dom.of("lag-row")}
    assert shown == expected
    [(_, total)] = [(a, c) for a, c in dom.of("lag-total") if a["data-group"] == scenario.group]
    assert int(total["lag"]) == 30

    for section in ("lag-table", "lag-chart", "throughput", "throughput-table", "latency", "latency-table",
                    "stuck", "stuck-table", "dlq", "dlq-table", "workers-table"):
        assert section in dom.ids, f"#{section} missing from the page"
    [(_, tp)] = [(a, c) for a, c in dom.of("group-row") if a["data-group"] == scenario.group]
    assert int(tp["total-lag"]) == 30

    latency = {(a["data-group"], a["data-metric"]): c for a, c in dom.of("latency-row")}
    step = latency[(scenario.group, "step")]
    assert float(step["p99-total@seconds"]) == pytest.approx(0.175)
    assert step["p99-total"] == "175.0 ms"
    assert step["count"] == "100"
    assert latency[(scenario.group, "commit")]["p99-total"] == "–"  # no commits observed: no number invented

    stuck = {(a["data-group"], a["data-workflow"], a["data-state"]): (c["count"], c["stuck"])
             for a, c in dom.of("workflow-row")}
    assert stuck == {(scenario.group, "orders", "AWAITING_PAYMENT"): ("7", "3"),
                     (scenario.group, "orders", "SHIPPING"): ("0", "0")}
    dlq = {(a["data-group"], a["data-reason"]): c["count"] for a, c in dom.of("dlq-row")}
    assert dlq == {(scenario.group, "decode_error"): "4", (scenario.group, "handler_error"): "1"}
    [(_, w)] = dom.of("worker-row")
    assert w["up"] == "up"
    assert TOKEN not in dom.html, "the token must not stay in the page"
    assert _png_size(shot) == WINDOW
    assert shot.stat().st_size > 20_000, "a screenshot this small is a blank page"


def test_page_without_the_token_asks_for_it_and_shows_no_data(
    chromium: str, dashboard: Dashboard, scenario: Scenario
) -> None:
    with browser_page(chromium) as page:
        page.goto(dashboard.url)
        page.wait_for_function("document.body.dataset.state !== 'loading'")
        dom = Dom(page)
        assert dom.body.get("data-state") == "unauthorized", dom.html[:2000]
        assert page.is_visible("#token-form")
    assert scenario.group not in dom.html
    assert not dom.of("lag-row")


# ------------------------------------------------------------------------------------------------ live data


_LAG_ROWS = """JSON.stringify(Array.from(document.querySelectorAll('tr.lag-row'),
    tr => [Number(tr.dataset.partition), Number(tr.querySelector('td.lag').textContent)]))"""


def test_open_page_follows_new_commits_without_reload(chromium: str, kafka: KafkaSettings) -> None:
    u = uuid.uuid4().hex[:8]
    topic, group = f"dash-live-{u}", f"dash-live-group-{u}"
    Admin(kafka).ensure([TopicSpec(topic, 2)])
    _produce(kafka, topic, {0: 10, 1: 4})
    _commit(kafka, group, topic, {0: 2})
    with Dashboard(DashboardSettings(port=0, groups=(group,), interval_s=0.3), kafka) as dash, \
            browser_page(chromium) as page:
        page.goto(dash.url)

        def lag_shown() -> dict[int, int]:
            return dict(json.loads(page.evaluate(_LAG_ROWS) or "[]"))

        _wait_for(lambda: lag_shown() == {0: 8, 1: 4}, "the page to show the first lag")
        seq = int(page.evaluate("document.body.dataset.seq"))
        _commit(kafka, group, topic, {0: 10, 1: 1})
        _wait_for(lambda: lag_shown() == {0: 0, 1: 3}, "the open page to show the new lag")
        assert int(page.evaluate("document.body.dataset.seq")) > seq
        assert page.evaluate("document.querySelector('tr.lag-total td.lag').textContent") == "3"


def _wait_for(pred: Callable[[], bool], what: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_p99_over_the_window_follows_new_observations(kafka: KafkaSettings) -> None:
    """The sampling thread keeps scraping: 100 new steps at 40 ms show in the window p99 (all in the
    (0.025, 0.05] bucket: 0.025 + 0.025 * 99/100), while the since-start p99 moves to that bucket's top."""
    group = f"dash-p99-{uuid.uuid4().hex[:8]}"

    def step_row(s: dict[str, Any]) -> dict[str, Any] | None:
        rows = [r for r in s["latency"] if r["group"] == group and r["metric"] == "step"]
        return rows[0] if rows else None

    with _fake_worker(group) as worker, \
            Dashboard(DashboardSettings(port=0, groups=(group,), workers=(worker.url,), interval_s=0.2), kafka) as dash:
        before = _wait_snapshot(dash, lambda s: (r := step_row(s)) is not None and r["count_total"] == 100)
        assert before["missing_groups"] == [group]  # no commits yet: listed as missing, not an error
        for _ in range(100):
            worker.step.observe(0.04)
        after = _wait_snapshot(dash, lambda s: (r := step_row(s)) is not None and r["count_window"] == 100)
    row = step_row(after)
    assert row is not None
    assert after["seq"] > before["seq"]
    assert row["p99_window_s"] == pytest.approx(0.04975)
    assert row["p99_total_s"] == pytest.approx(0.05)
    assert row["count_total"] == 200


def test_throughput_is_the_change_of_offsets_between_samples(kafka: KafkaSettings) -> None:
    """Driven tick by tick with a fake clock, against the real broker: 12 committed and 8 produced records
    over 2 s are 6 and 4 records/s, and the lag moves by what was produced minus what was committed."""
    u = uuid.uuid4().hex[:8]
    topic, group = f"dash-tp-{u}", f"dash-tp-group-{u}"
    Admin(kafka).ensure([TopicSpec(topic, 2)])
    _produce(kafka, topic, {0: 20, 1: 5})
    _commit(kafka, group, topic, {0: 5})
    now = [1000.0]
    sampler = Sampler(DashboardSettings(groups=(group,)), kafka, clock=lambda: now[0])
    sampler.tick()
    assert sampler.snapshot()["groups"] == [{"group": group, "total_lag": 15 + 5, "consumed_per_s": None,
                                             "produced_per_s": None}]

    _produce(kafka, topic, {1: 8})
    _commit(kafka, group, topic, {0: 17})
    now[0] += 2.0
    sampler.tick()
    snap = sampler.snapshot()
    [g] = snap["groups"]
    assert g["consumed_per_s"] == pytest.approx(6.0)
    assert g["produced_per_s"] == pytest.approx(4.0)
    assert g["total_lag"] == 3 + 13
    assert snap["history"]["t"] == [1000.0, 1002.0]
    [series] = snap["history"]["throughput"]
    assert series["consumed"] == [pytest.approx(6.0)] and series["produced"] == [pytest.approx(4.0)]
    assert {s["partition"]: s["values"] for s in snap["history"]["lag"]} == {0: [15, 3], 1: [5, 13]}


def _commit(kafka: KafkaSettings, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit as a non-member (no join, so no rebalance wait): how tools move a group's offsets."""
    committer = make_consumer(kafka, group)
    try:
        committer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    finally:
        committer.close()


def test_worker_restart_is_a_counter_reset_not_a_negative_window(kafka: KafkaSettings, scenario: Scenario) -> None:
    texts = iter([_hist_text(scenario.group, {0.01: 50, 0.1: 100}), _hist_text(scenario.group, {0.01: 1, 0.1: 10})])
    now = [0.0]
    sampler = Sampler(DashboardSettings(groups=(scenario.group,), workers=("127.0.0.1:9",)), kafka,
                      fetch=lambda url, timeout: next(texts), clock=lambda: now[0])
    sampler.tick()
    now[0] = 5.0
    sampler.tick()
    [row] = sampler.snapshot()["latency"]
    assert row["count_window"] == 10  # the restarted worker's own 10, not 10 - 100
    assert row["p99_window_s"] == pytest.approx(0.01 + 0.09 * (9.9 - 1) / 9)
    assert sampler.snapshot()["workers"][0]["url"] == "127.0.0.1:9"


def test_unreachable_worker_is_shown_down_and_lag_still_works(kafka: KafkaSettings, scenario: Scenario) -> None:
    sampler = Sampler(DashboardSettings(groups=(scenario.group,), workers=("http://127.0.0.1:1/metrics",),
                                        timeout_s=1.0), kafka)
    sampler.tick()
    snap = sampler.snapshot()
    [w] = snap["workers"]
    assert w["up"] is False and "127.0.0.1:1" in w["error"]
    assert snap["lag"], "lag comes from Kafka and must not depend on the workers"


def _hist_text(group: str, cumulative: dict[float, int]) -> str:
    lines = ["# TYPE streams_step_latency_seconds histogram"]
    for le, n in cumulative.items():
        lines.append(f'streams_step_latency_seconds_bucket{{group="{group}",le="{le}"}} {n}')
    total = max(cumulative.values())
    lines += [f'streams_step_latency_seconds_bucket{{group="{group}",le="+Inf"}} {total}',
              f'streams_step_latency_seconds_count{{group="{group}"}} {total}',
              f'streams_step_latency_seconds_sum{{group="{group}"}} 1.0']
    return "\n".join(lines) + "\n"


def test_histogram_quantile_matches_prometheus_semantics() -> None:
    inf = float("inf")
    assert histogram_quantile(0.5, {0.1: 10, 0.2: 20, inf: 20}) == pytest.approx(0.1)
    assert histogram_quantile(0.75, {0.1: 10, 0.2: 20, inf: 20}) == pytest.approx(0.15)
    assert histogram_quantile(0.99, {0.1: 0, 0.2: 0, inf: 5}) == 0.2  # rank in +Inf: the highest finite bound
    assert histogram_quantile(0.99, {0.1: 0, inf: 0}) is None
    assert histogram_quantile(0.99, {0.1: 3}) is None  # no +Inf bucket: not a histogram


# ------------------------------------------------------------------------------------------------ security


def test_snapshot_needs_the_bearer_token_and_the_page_holds_no_data(dashboard: Dashboard,
                                                                    scenario: Scenario) -> None:
    api = dashboard.url + "api/snapshot"
    assert _get(api)[0] == 401
    assert _get(api, "wrong-" + TOKEN)[0] == 401
    status, body = _get(api, TOKEN)
    assert status == 200 and json.loads(body)["lag"]
    status, html = _get(dashboard.url)
    assert status == 200 and b'id="lag-table"' in html and scenario.group.encode() not in html


def test_binding_beyond_loopback_needs_a_token() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert is_loopback(host)
        DashboardSettings(host=host)
    for host in ("0.0.0.0", "::", "10.1.2.3", "dashboard.internal"):
        assert not is_loopback(host)
        with pytest.raises(ConfigError, match="needs a bearer token"):
            DashboardSettings(host=host)
        DashboardSettings(host=host, token="t")


def test_cli_refuses_non_loopback_without_token_in_one_line(subprocess_env: dict[str, str]) -> None:
    env = {k: v for k, v in subprocess_env.items() if k != "STREAMS_HTTP_TOKEN"}
    res = subprocess.run([sys.executable, "-m", "streams", "dashboard", "--host", "0.0.0.0"],
                         env=env, capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to bind 0.0.0.0" in lines[0] and "STREAMS_HTTP_TOKEN" in lines[0], res.stderr


def test_cli_serves_with_the_env_token_and_never_logs_it(subprocess_env: dict[str, str], scenario: Scenario) -> None:
    env = {**subprocess_env, "STREAMS_HTTP_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "streams", "dashboard", "--port", "0", "--interval", "0.2",
                             "--group", scenario.group], env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "dashboard: serving on http://127.0.0.1:" in first, first
        url = first.split("serving on ", 1)[1].split(" ", 1)[0]
        assert _get(url + "api/snapshot?token=" + TOKEN)[0] == 401  # a query string is not a credential
        status, body = _get(url + "api/snapshot", TOKEN)
        assert status == 200
        assert {(r["partition"], r["lag"]) for r in json.loads(body)["lag"]} >= {(1, 0)}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    log = first + err
    assert "/api/snapshot -> 401" in log
    assert TOKEN not in log


def test_a_browser_that_hangs_up_mid_request_leaves_no_traceback(
        dashboard: Dashboard, capfd: pytest.CaptureFixture[str]) -> None:
    hang_up(dashboard.url, b"GET /api/snap")
    with urllib.request.urlopen(dashboard.url + "healthz", timeout=5) as resp:
        assert resp.status == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err
