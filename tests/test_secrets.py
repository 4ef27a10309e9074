"""Secrets hygiene (issue 19, point 6): tokens from the environment or a file, a warning for one on the command
line, log lines that input cannot forge, and servers on the IPv6 loopback."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import Response

from streams.cli.common import configure_logging, escape_controls, log
from streams.config import KafkaSettings, secret
from streams.errors import ConfigError
from streams.kafka.embedded import free_port
from streams.ops.dashboard import Dashboard, DashboardSettings
from streams.registry import RegistryServer
from streams.web import Access, App, Op, Server
from support import WorkerProc, counter_topology, wait_until

TOKEN = "tok-" + os.urandom(8).hex()


def _get(url: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _streams(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams", *argv], capture_output=True, text=True, env=env,
                          timeout=60, check=False)


# ------------------------------------------------------------------------------------------------ where from


def test_a_token_comes_from_the_flag_a_file_or_the_environment_and_each_is_judged(tmp_path: Path) -> None:
    warnings: list[str] = []
    env = {"STREAMS_HTTP_TOKEN": "from-env"}
    assert secret("--http-token", None, None, "STREAMS_HTTP_TOKEN", warnings.append, env) == "from-env"
    assert secret("--http-token", None, None, "STREAMS_HTTP_TOKEN", warnings.append, {}) is None
    assert secret("--http-token", None, None, "STREAMS_HTTP_TOKEN", warnings.append,
                  {"STREAMS_HTTP_TOKEN": ""}) is None
    assert warnings == []

    private = tmp_path / "token"
    private.write_text(TOKEN + "\n")
    private.chmod(0o600)
    assert secret("--http-token", None, str(private), "STREAMS_HTTP_TOKEN", warnings.append, env) == TOKEN
    assert warnings == []  # a file wins over the environment, and a private one is no news

    private.chmod(0o640)
    assert secret("--http-token", None, str(private), "STREAMS_HTTP_TOKEN", warnings.append, env) == TOKEN
    assert warnings == [f"--http-token-file {private} is readable by other users (mode 640); chmod 600 it"]

    warnings.clear()
    assert secret("--http-token", "on-the-line", None, "STREAMS_HTTP_TOKEN", warnings.append, env) == "on-the-line"
    assert len(warnings) == 1 and "visible to every user of this machine (ps" in warnings[0]
    assert "on-the-line" not in warnings[0] and "$STREAMS_HTTP_TOKEN" in warnings[0]

    with pytest.raises(ConfigError, match="pass --http-token or --http-token-file, not both"):
        secret("--http-token", "x", str(private), "STREAMS_HTTP_TOKEN", warnings.append, env)
    with pytest.raises(ConfigError, match=r"--http-token-file .*nope: No such file or directory"):
        secret("--http-token", None, str(tmp_path / "nope"), "STREAMS_HTTP_TOKEN", warnings.append, env)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        secret("--http-token", None, str(tmp_path / "empty"), "STREAMS_HTTP_TOKEN", warnings.append, env)


def test_a_token_on_the_command_line_works_but_is_warned_about(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    port = free_port()  # nothing listens there: the command fails after reading its token
    res = _streams("status", "k", "--url", f"http://127.0.0.1:{port}", "--token", TOKEN, env=env)
    assert res.returncode == 1 and "unreachable" in res.stderr, res.stderr
    assert "--token on the command line is visible to every user of this machine" in res.stderr
    assert TOKEN not in res.stderr + res.stdout
    down = f"127.0.0.1:{free_port()}"
    res = _streams("registry", "--user", f"ops:{TOKEN}", "--token", TOKEN, "--bootstrap", down, env=env)
    assert res.returncode == 1, res.stderr  # no Kafka there: after the warnings
    assert "--token on the command line is visible to every user" in res.stderr
    assert "--user passwords on the command line are visible to every user" in res.stderr
    assert TOKEN not in res.stderr + res.stdout


def test_a_missing_token_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for argv in (["registry", "--token-file", str(tmp_path / "absent")],
                 ["dashboard", "--bootstrap", "127.0.0.1:1", "--token-file", str(tmp_path / "absent")],
                 ["worker", "--topology", "counter", "--http-token-file", str(tmp_path / "absent")]):
        res = _streams(*argv, env=env)
        assert res.returncode == 2, (argv, res.stderr)
        assert res.stderr.strip().splitlines() == [
            f"streams: ConfigError: {argv[-2]} {tmp_path / 'absent'}: No such file or directory"], res.stderr


# ------------------------------------------------------------------------------------------------ log lines


def test_text_logs_escape_control_characters_so_a_key_cannot_forge_a_line(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("text")
    key = "order-1\nstreams: worker: stopped after 0 records\x1b[31m\r\u202e"
    log(f"worker: dead letter for key {key}")
    logging.getLogger("streams.worker").info("event %s", "e", extra={"key": key})
    err = capfd.readouterr().err
    assert err.splitlines() == [
        "worker: dead letter for key order-1\\nstreams: worker: stopped after 0 records\\x1b[31m\\r\\u202e",
        "event e  [key=order-1\\nstreams: worker: stopped after 0 records\\x1b[31m\\r\\u202e]",
    ]
    assert "\x1b" not in err and "\r" not in err
    assert escape_controls("plain ütf-8 text, tabs\tand all") == "plain ütf-8 text, tabs\\tand all"


def test_json_logs_keep_a_crafted_key_in_one_line(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("json")
    try:
        logging.getLogger("streams.worker").info("dead letter", extra={"key": "k\n{\"level\":\"error\"}\x1b[31m"})
    finally:
        configure_logging("text")
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["key"] == "k\n{\"level\":\"error\"}\x1b[31m"


def test_a_request_path_with_a_newline_is_logged_on_one_line(capfd: pytest.CaptureFixture[str]) -> None:
    """The HTTP servers log failed requests with their (decoded) path: text a client chooses."""
    configure_logging("text")
    app = App("probe", [Op("GET", "/ok", lambda c: Response(b"{}"), "public")], Access(), log=log)
    server = Server(app, "127.0.0.1", 0, "probe-http")
    server.start()
    try:
        code, _ = _get(server.url() + "/x%0Aprobe:%20GET%20/ok%20->%20200%1B[31m")
    finally:
        server.stop()
    assert code == 404
    lines = [x for x in capfd.readouterr().err.splitlines() if x.startswith("probe:")]
    # The URL parser drops the newline itself (Python's urlsplit strips \t, \r and \n); the escape is left to us.
    assert lines == ["probe: 127.0.0.1 GET /xprobe: GET /ok -> 200\\x1b[31m -> 404"], lines


# ------------------------------------------------------------------------------------------------ IPv6 loopback


def test_ipv6_loopback_counts_as_loopback() -> None:
    Access().check_bind("::1", "--http-token")  # no token needed
    with pytest.raises(ConfigError, match="refusing to bind ::"):
        Access().check_bind("::", "--http-token")


@pytest.mark.kafka
def test_worker_serves_on_ipv6_loopback_with_a_token_from_a_file(
        kafka: KafkaSettings, tmp_path: Path, subprocess_env: dict[str, str], unique: str) -> None:
    topo = counter_topology(tmp_path, f"v6{unique}", 1, kafka=kafka)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o644)
    port = free_port()
    env = {k: v for k, v in subprocess_env.items() if k != "STREAMS_HTTP_TOKEN"}
    w = WorkerProc(topo, tmp_path / "w", env, tmp_path / "w.log",
                   ["--http-host", "::1", "--http-port", str(port), "--http-token-file", str(token_file)])
    try:
        wait_until(lambda: "serving /metrics" in w.log_text(), 60, "the HTTP endpoint")
        assert f"on http://[::1]:{port}" in w.log_text()
        url = f"http://[::1]:{port}/healthz"
        assert _get(url)[0] == 401  # a token, once given, is asked of every client
        status, body = _get(url, TOKEN)
        assert status == 200 and body["ok"] is True, body
        assert "streams-freeze-watch" in body["threads"] and "worker-loop" in body["threads"], body
    finally:
        assert w.stop() == 0
    text = w.log_text()
    assert f"--http-token-file {token_file} is readable by other users (mode 644)" in text
    assert TOKEN not in text


@pytest.mark.kafka
def test_an_address_the_worker_cannot_listen_on_is_one_line(
        kafka: KafkaSettings, tmp_path: Path, subprocess_env: dict[str, str], unique: str) -> None:
    topo = counter_topology(tmp_path, f"v6bad{unique}", 1, kafka=kafka)
    for host, why in (("[::1]", "Name or service not known"), ("::2", "Cannot assign requested address")):
        res = _streams("worker", "--topology", str(topo), "--state-dir", str(tmp_path / "s"), "--http-host", host,
                       "--http-port", "0", env={**subprocess_env, "STREAMS_HTTP_TOKEN": TOKEN})
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip().splitlines() == [f"streams: ConfigError: cannot listen on {host}:0: {why}"]
        assert "Traceback" not in res.stderr and TOKEN not in res.stderr


@pytest.mark.kafka
def test_registry_serves_on_ipv6_loopback(kafka: KafkaSettings, unique: str) -> None:
    with RegistryServer(kafka, host="::1", port=0, topic=f"_schemas_v6{unique}") as reg:
        assert reg.url.startswith("http://[::1]:")
        with urllib.request.urlopen(reg.url + "/subjects", timeout=10) as resp:
            assert resp.status == 200 and json.loads(resp.read()) == []


@pytest.mark.kafka
def test_dashboard_serves_on_ipv6_loopback(kafka: KafkaSettings) -> None:
    with Dashboard(DashboardSettings(host="::1", port=0), kafka) as dash:
        assert dash.url.startswith("http://[::1]:")
        assert _get(dash.url + "healthz") == (200, {"ok": True, "threads": ["dashboard-sampler"]})


def test_an_error_line_escapes_control_characters_from_the_input() -> None:
    """The one error line the CLI prints names the bad input; a crafted one cannot recolour or split it."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    res = subprocess.run([sys.executable, "-m", "streams", "workflow", "diagram", "pkg.mod\x1b[31m\nforged:factory"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "\x1b" not in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert "pkg.mod\\x1b[31m\\nforged" in res.stderr
