"""The real stack's files, checked without Docker: docker-compose.yml, the Prometheus config, Grafana provisioning
and dashboard JSON must agree with each other, with the CLI and with the metrics the workers expose."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from streams.cli import parse
from streams.topology import load

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_JSON = ROOT / "deploy" / "grafana" / "dashboards" / "streams.json"
SCALABLE = ("orchestrator", "payment", "inventory", "shipping")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    svcs: dict[str, dict[str, Any]] = compose["services"]
    return svcs


def _env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _streams_services(services: dict[str, dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, svc in services.items():
        if "build" in svc:
            yield name, svc


def _brokers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services.items() if str(s.get("image", "")).startswith("apache/kafka:")}


def _container_port(spec: str) -> int:
    return int(str(spec).rsplit(":", 1)[-1].split("/")[0])


# ------------------------------------------------------------------------------------------------ images


def test_every_pulled_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        image = str(svc.get("image", ""))
        if "build" in svc:
            assert (ROOT / str(svc["build"]) / "Dockerfile").is_file(), f"{name}: builds from a missing Dockerfile"
            continue
        assert image, f"{name}: neither an image nor a build"
        repo, _, tag = image.rpartition(":") if "@" not in image else (image, "", "digest")
        assert repo and "/" not in tag and tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} is not pinned"
        assert re.search(r"\d", tag), f"{name}: image tag {tag!r} names no version"


def test_dockerfile_installs_the_package_on_python_311_slim() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"pip install (--no-deps )?\.", text) and " -e " not in text, "a regular install, as a wheel's"
    assert re.search(r"^COPY streams ", text, re.M), "the image needs streams/ (its examples' data included)"


# ------------------------------------------------------------------------------------------------ Kafka


def test_three_kraft_brokers_share_one_controller_quorum(services: dict[str, dict[str, Any]]) -> None:
    brokers = _brokers(services)
    assert len(brokers) == 3, f"want 3 Kafka brokers, got {sorted(brokers)}"
    assert not any("zookeeper" in str(s.get("image", "")) for s in services.values()), "KRaft: no ZooKeeper"
    envs = {n: _env(s) for n, s in brokers.items()}
    assert len({e["CLUSTER_ID"] for e in envs.values()}) == 1, "one cluster id for all brokers"
    assert len({e["KAFKA_CONTROLLER_QUORUM_VOTERS"] for e in envs.values()}) == 1, "one quorum for all brokers"
    voters = {}
    for v in next(iter(envs.values()))["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","):
        node, _, addr = v.partition("@")
        host, _, port = addr.rpartition(":")
        voters[host] = (int(node), int(port))
    ids = set()
    for name, env in envs.items():
        roles = set(env["KAFKA_PROCESS_ROLES"].split(","))
        assert roles == {"broker", "controller"}, f"{name}: KRaft roles {roles}"
        host = brokers[name].get("hostname", name)
        assert host in voters, f"{name} ({host}) is not a voter of {voters}"
        node, port = voters[host]
        assert int(env["KAFKA_NODE_ID"]) == node, f"{name}: node id differs from its voter entry"
        ids.add(node)
        listeners = dict(lst.split("://") for lst in env["KAFKA_LISTENERS"].split(","))
        ctl = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
        assert listeners[ctl] == f":{port}", f"{name}: controller listener {listeners[ctl]} vs voter port {port}"
        advertised = dict(lst.split("://") for lst in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
        inter = env["KAFKA_INTER_BROKER_LISTENER_NAME"]
        assert advertised[inter] == f"{host}{listeners[inter]}", f"{name}: advertises {advertised[inter]}"
        assert set(listeners) - {ctl} == set(advertised), f"{name}: every client listener is advertised"
        for ext in set(advertised) - {inter}:
            ext_port = int(advertised[ext].rsplit(":", 1)[1])
            assert any(_container_port(p) == ext_port for p in brokers[name].get("ports", [])), \
                f"{name}: advertised {ext} port {ext_port} is not published"
    assert ids == {1, 2, 3}


def test_kafka_is_the_tested_version_and_topics_are_replicated_to_every_broker(
        services: dict[str, dict[str, Any]]) -> None:
    from streams.kafka.apache import KAFKA_VERSION

    brokers = _brokers(services)
    assert {str(s["image"]) for s in brokers.values()} == {f"apache/kafka:{KAFKA_VERSION}"}
    for name, svc in _streams_services(services):
        env = _env(svc)
        assert env["STREAMS_BROKER"] == "kafka", name  # not Tansu's workarounds
        assert int(env["STREAMS_REPLICATION"]) == len(brokers), name
    topo = load("orders", _env(services["orchestrator"]))
    assert {t.replication for t in topo.all_topics()} == {len(brokers)}
    for svc in brokers.values():
        assert int(_env(svc)["KAFKA_MIN_INSYNC_REPLICAS"]) == len(brokers) - 1


def test_streams_services_point_at_the_compose_kafka_and_registry(services: dict[str, dict[str, Any]]) -> None:
    brokers = _brokers(services)
    internal = {f"{s.get('hostname', n)}:{_env(s)['KAFKA_LISTENERS'].split('INTERNAL://:')[1].split(',')[0]}"
                for n, s in brokers.items()}
    registry = [n for n, s in services.items() if "schema-registry" in str(s.get("image", ""))]
    assert len(registry) == 1
    reg_port = urllib.parse.urlsplit(_env(services[registry[0]])["SCHEMA_REGISTRY_LISTENERS"]).port
    for name, svc in _streams_services(services):
        env = _env(svc)
        assert set(env["KAFKA_BOOTSTRAP_SERVERS"].split(",")) == internal, name
        url = urllib.parse.urlsplit(env["SCHEMA_REGISTRY_URL"])
        assert (url.hostname, url.port) == (registry[0], reg_port), f"{name}: {env['SCHEMA_REGISTRY_URL']}"


# ------------------------------------------------------------------------------------------------ commands


def _parse(name: str, svc: dict[str, Any]) -> Any:
    command = svc["command"]
    assert isinstance(command, list) and command[0] == "streams", f"{name}: command must run `streams` (exec form)"
    try:
        path, params = parse(command[1:])
    except Exception as exc:  # click's UsageError: an unknown flag, a bad value, a missing argument
        raise AssertionError(f"{name}: `{' '.join(command)}` is not valid for the current CLI: {exc}") from exc
    return SimpleNamespace(command=path[0], action=path[1:], **params)


def test_every_streams_command_parses_with_the_real_cli(services: dict[str, dict[str, Any]]) -> None:
    parsed = {name: _parse(name, svc) for name, svc in _streams_services(services)}
    assert {"topics", "schemas", "dashboard", *SCALABLE} <= set(parsed)
    assert (parsed["topics"].command, parsed["topics"].action) == ("topics", ["create"])
    assert parsed["orchestrator"].command == "worker" and parsed["orchestrator"].processor == "orchestrator"
    for kind in ("payment", "inventory", "shipping"):
        assert (parsed[kind].command, parsed[kind].kind) == ("service", kind)
    load(parsed["topics"].topology)  # a built-in example's name, or a path relative to the image's WORKDIR
    for name in SCALABLE:
        args = parsed[name]
        proc = load(args.topology).processor(args.processor if args.command == "worker" else args.kind)
        assert proc.name == name


def test_scalable_services_have_no_fixed_name_or_host_port(services: dict[str, dict[str, Any]]) -> None:
    for name in SCALABLE:
        svc = services[name]
        assert "container_name" not in svc, f"{name}: a container_name prevents --scale"
        assert not svc.get("ports"), f"{name}: a host port prevents --scale"
        assert "deploy" not in svc or "replicas" not in svc["deploy"], f"{name}: replicas come from --scale"


def _http_ports(services: dict[str, dict[str, Any]]) -> dict[str, int]:
    ports = {}
    for name in SCALABLE:
        args = _parse(name, services[name])
        assert getattr(args, "http_port", None), f"{name}: needs --http-port so Prometheus can scrape it"
        assert getattr(args, "http_host", "0.0.0.0") not in ("127.0.0.1", "localhost"), \
            f"{name}: a loopback-only /metrics cannot be scraped from another container"
        ports[name] = int(args.http_port)
    return ports


def test_prometheus_scrapes_every_worker_on_its_http_port(services: dict[str, dict[str, Any]]) -> None:
    ports = _http_ports(services)
    prom = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    found: dict[str, int] = {}
    for job in jobs.values():
        for sd in job.get("dns_sd_configs", []):
            assert sd.get("type") == "A", "compose service DNS answers A records"
            for dns_name in sd["names"]:
                found[dns_name.removeprefix("tasks.")] = int(sd["port"])
    assert {n: found.get(n) for n in SCALABLE} == ports, "scrape ports must equal the services' --http-port"
    # The workers listen beyond loopback, so they need the token: Prometheus reads it from a mounted secret.
    prom_svc = next(s for s in services.values() if str(s.get("image", "")).startswith("prom/prometheus:"))
    creds = [j["authorization"]["credentials_file"] for j in jobs.values() if "dns_sd_configs" in j]
    secrets = {f"/run/secrets/{s if isinstance(s, str) else s['source']}" for s in prom_svc.get("secrets", [])}
    assert creds and set(creds) <= secrets
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prom_svc["volumes"] if v.startswith("./")}
    assert (ROOT / mounts["/etc/prometheus/prometheus.yml"]).resolve() == PROMETHEUS.resolve()


def test_dashboard_service_scrapes_the_same_ports(services: dict[str, dict[str, Any]]) -> None:
    ports = _http_ports(services)
    args = _parse("dashboard", services["dashboard"])
    targets = {urllib.parse.urlsplit(w).hostname: urllib.parse.urlsplit(w).port for w in args.worker}
    assert targets == ports
    assert args.host == "0.0.0.0" and "STREAMS_HTTP_TOKEN" in _env(services["dashboard"]), \
        "published beyond the container, so it runs with a token"


# ------------------------------------------------------------------------------------------------ Grafana


def test_grafana_provisioning_is_mounted_and_consistent(services: dict[str, dict[str, Any]]) -> None:
    grafana = next(s for s in services.values() if str(s.get("image", "")).startswith("grafana/grafana:"))
    mounts = {}
    for v in grafana["volumes"]:
        src, dst = v.split(":")[:2]
        if src.startswith("./"):
            assert (ROOT / src).exists(), f"grafana mounts missing {src}"
            mounts[dst] = ROOT / src
    prov = mounts["/etc/grafana/provisioning"]
    [datasource] = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"]
    prom_name = next(n for n, s in services.items() if str(s.get("image", "")).startswith("prom/prometheus:"))
    url = urllib.parse.urlsplit(datasource["url"])
    assert (url.hostname, url.port) == (prom_name, 9090)
    [provider] = yaml.safe_load((prov / "dashboards" / "streams.yml").read_text())["providers"]
    path = provider["options"]["path"]
    assert path in mounts and (mounts[path] / GRAFANA_JSON.name).resolve() == GRAFANA_JSON.resolve()
    home = _env(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    assert home == f"{path}/{GRAFANA_JSON.name}"
    dash = json.loads(GRAFANA_JSON.read_text())
    uids = {t["datasource"]["uid"] for p in dash["panels"] for t in p["targets"]} | {p["datasource"]["uid"]
                                                                                  for p in dash["panels"]}
    assert uids == {datasource["uid"]}


def _exprs(dash: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dash["templating"]["list"] if v.get("type") == "query"]
    return exprs


def test_grafana_dashboard_has_a_panel_on_what_operators_watch() -> None:
    """Which panels exist; that every name they query is one the workers export is checked against a real
    worker's /metrics in test_dashboard_live.py."""
    dash = json.loads(GRAFANA_JSON.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    used = {re.sub(r"_(bucket|count|sum)$", "", name) for expr in _exprs(dash)
            for name in re.findall(r"\bstreams_[a-z0-9_]+", expr)}
    text = "\n".join(_exprs(dash))
    assert "histogram_quantile(0.99" in text and "streams_step_latency_seconds_bucket" in text
    for needed in ("streams_consumer_lag", "streams_records_in_total", "streams_dead_letters_total",
                   "streams_workflows_stuck", "streams_timers_pending", "streams_restore_remaining"):
        assert needed in used, f"the dashboard has no panel on {needed}"
    assert re.search(r"by \(group, topic, partition\) \(streams_consumer_lag", text), "lag per partition"
    assert re.search(r"by \(group, reason\) \(\w*\(?streams_dead_letters_total", text), "DLQ by reason"
