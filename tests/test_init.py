"""``streams init`` and ``streams dev``: a new user's first project, from nothing to workflows running.

Cost: the in-checkout tests take seconds (``init`` writes files; the project's own Driver tests run in a
subprocess); the two ``streams dev`` tests start an embedded broker, a registry and four workers (~15-40 s each).
The end-to-end test reuses the session's wheel build and venv (conftest.py; ~1.5 min when test_wheel.py has not
built it already), installs pytest and the project into that venv (~15 s with pip's cache), then drives ten orders.

``streams dev`` runs on the embedded broker here even when KAFKA_BOOTSTRAP_SERVERS is set: the example's topic
names are fixed (orders.events, payments.commands...) and its reference services would answer other engineers'
commands on a shared cluster. The workers it starts are the ones every Kafka test of the suite runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.ops.scaffold import examples
from streams.topology import load
from support import run_ok, wait_until, write_loan_project

ROOT = Path(__file__).resolve().parents[1]


def _env(*paths: Path) -> dict[str, str]:
    """This checkout's package (and the given project directories) importable; the embedded broker for `dev`."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (ROOT, *paths))
    return env


def _streams(*argv: str) -> list[str]:
    return [sys.executable, "-m", "streams", *argv]


def _init(tmp: Path, name: str = "proj", *extra: str) -> Path:
    run_ok(_streams("init", name, *extra), cwd=tmp, env=_env())
    return tmp / name


def test_init_writes_a_project_whose_tests_pass_and_whose_workflow_validates(tmp_path: Path) -> None:
    proj = _init(tmp_path, "my-shop", "--example", "orders")
    for rel in ("my_shop/__init__.py", "my_shop/workflow.py", "schemas/subjects.yaml", "topology.yaml",
                "tests/test_workflow.py", "pyproject.toml", "README.md"):
        assert (proj / rel).is_file(), f"{rel} missing"
    for path in proj.rglob("*"):
        if path.is_file():
            assert "streams.examples" not in path.read_text(), f"{path} still refers to the example"
    topo = load(proj / "topology.yaml")
    assert topo.name == "my-shop" and topo.schemas == (proj / "schemas").resolve()
    assert topo.processors["orchestrator"].options["workflow"] == "my_shop.workflow:order_saga"
    assert {p.processor for p in topo.processors.values()} == {"workflow", "payment-service", "inventory-service",
                                                               "shipping-service"}
    assert "packages = [\"my_shop\"]" in (proj / "pyproject.toml").read_text()
    readme = (proj / "README.md").read_text()
    assert "streams dev" in readme and "streams signal" in readme and "pytest" in readme
    valid = run_ok(_streams("workflow", "validate", "my_shop.workflow:order_saga"), cwd=proj, env=_env(proj))
    assert valid.stdout.startswith("my_shop.workflow:order_saga: valid (8 states, 3 terminal, input orders.events)")
    tests = run_ok([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=proj, env=_env(proj))
    assert "4 passed" in tests.stdout


def test_init_defaults_to_a_shipped_example() -> None:
    assert "orders" in examples() and "counter" not in examples()  # counter has no workflow to start from


def test_init_refuses_a_non_empty_directory_and_leaves_it_alone(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "notes.txt").write_text("mine")
    out = subprocess.run(_streams("init", "proj"), cwd=tmp_path, env=_env(), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert out.stderr == ("streams: ConfigError: proj exists and is not empty; choose a new directory\n")
    assert [p.name for p in (tmp_path / "proj").iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(("argv", "message"), [
    (["init", "json"], "streams: ConfigError: the directory name 'json' would shadow the module 'json'; "
                       "give another with --package NAME"),
    (["init", "p", "--package", "1st"], "streams: ConfigError: --package is no Python package name; "
                                        "give one with --package NAME"),
    (["dev", "--topology", "nowhere.yaml"], "streams: ConfigError: no topology at nowhere.yaml (run `streams dev` "
                                            "in a project from `streams init`, or give --topology FILE)"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, argv: list[str], message: str) -> None:
    out = subprocess.run(_streams(*argv), cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stderr) == (2, message + "\n")
    assert list(tmp_path.iterdir()) == []


# --- streams dev --------------------------------------------------------------------------------------------------


def _children(pid: int) -> set[int]:
    """Direct children of ``pid``, from /proc."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _gone(pids: set[int]) -> bool:
    return not any(Path(f"/proc/{p}").exists() for p in pids)


class Dev:
    """A ``streams dev`` subprocess and its output."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.log = cwd / "dev.log"
        self._out = open(self.log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self._out, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def value(self, label: str) -> str:
        (line,) = [ln for ln in self.text().splitlines() if ln.startswith(f"  {label}")]
        return line.split()[-1]

    def stop(self, signum: int = signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._out.close()


@pytest.mark.kafka
def test_dev_stops_everything_with_exit_1_when_a_worker_dies(tmp_path: Path) -> None:
    proj = _init(tmp_path, "proj", "--example", "orders")
    topology = proj / "topology.yaml"
    topology.write_text(topology.read_text().replace("proj.workflow:order_saga", "proj.workflow:no_such_factory"))
    dev = Dev(_streams("dev"), proj, _env(proj))
    try:
        wait_until(lambda: dev.proc.poll() is not None or "worker    shipping" in dev.text(), 60, "workers started")
        children = _children(dev.proc.pid)  # those still running: the orchestrator may be gone already
        assert dev.proc.wait(90) == 1, dev.text()[-3000:]
    finally:
        dev.stop()
    text = dev.text()
    assert "dev: orchestrator exited with code 2; stopping everything" in text, text[-3000:]
    assert "orchestrator | streams: WorkflowDefinitionError: workflow 'proj.workflow:no_such_factory'" in text
    assert text.rstrip().endswith("dev: stopped")
    assert children
    wait_until(lambda: _gone(children), 10, "every child of streams dev to exit")


@pytest.mark.kafka
def test_dev_on_sigterm_stops_every_worker_then_exits_0(tmp_path: Path) -> None:
    proj = _init(tmp_path, "proj", "--example", "orders")
    dev = Dev(_streams("dev", "--summary-every", "0.5"), proj, _env(proj))
    try:
        wait_until(lambda: "dev: every worker is processing" in dev.text() or dev.proc.poll() is not None, 120,
                   "streams dev to start")
        children = _children(dev.proc.pid)
        wait_until(lambda: "dev: no entities yet   dead letters 0" in dev.text(), 30, "the first census line")
        # The dashboard it started scrapes all four workers, found by their announcements.
        [dash] = [ln.split(" at ", 1)[1].split()[0] for ln in dev.text().splitlines()
                  if ln.startswith("dev: dashboard at http://127.0.0.1:")]
        wait_until(lambda: _workers_up(dash) == 4, 30, "the dashboard to scrape every worker")
        assert dev.stop(signal.SIGTERM) == 0, dev.text()[-3000:]
    finally:
        dev.stop()
    assert len(children) == 5, children  # the broker and four workers
    wait_until(lambda: _gone(children), 10, "every child of streams dev to exit")
    text = dev.text()
    assert text.count("| worker: stopped after 0 records in") == 4, text[-3000:]
    assert text.rstrip().endswith("dev: stopped") and "Traceback" not in text


def _workers_up(dashboard: str) -> int:
    with urllib.request.urlopen(f"{dashboard}api/snapshot", timeout=5) as resp:
        return sum(1 for w in orjson.loads(resp.read())["workers"] if w["up"])


# --- the whole path, from the installed wheel ---------------------------------------------------------------------


def _place(key: str) -> dict[str, Any]:
    return {"order_id": key, "customer_id": f"cust-{key}", "amount_cents": 1000 + len(key), "currency": "EUR",
            "items": [{"sku": "sku-1", "quantity": 1}]}


def _entity(url: str, key: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/workflows/{key}", timeout=5) as resp:
            body: dict[str, Any] = orjson.loads(resp.read())
            return body
    except OSError:
        return None


@pytest.mark.kafka
def test_a_new_user_inits_tests_and_runs_a_project_with_the_installed_wheel(
        venv: Path, outside: tuple[Path, dict[str, str]]) -> None:
    cwd, env = outside
    env = {k: v for k, v in env.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL")}
    python, streams = str(venv / "python"), str(venv / "streams")
    run_ok([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "pytest"], cwd, env)
    run_ok([streams, "init", "proj", "--example", "orders"], cwd, env)
    proj = cwd / "proj"
    run_ok([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", str(proj)], cwd, env)
    tests = run_ok([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], proj, env)
    assert "4 passed" in tests.stdout

    # As a user would: the payment service never answers some orders, so they time out and are cancelled.
    topology = proj / "topology.yaml"
    topology.write_text(topology.read_text().replace(
        "    store: payments\n", "    store: payments\n    options: {no_answer_customer_prefix: never-}\n"))
    dev = Dev([streams, "dev"], proj, {**env, "PAYMENT_TIMEOUT_MS": "3000"})
    try:
        wait_until(lambda: "dev: every worker is processing" in dev.text() or dev.proc.poll() is not None, 120,
                   "streams dev to start")
        assert dev.proc.poll() is None, dev.text()[-3000:]
        bootstrap = next(ln.split()[1] for ln in dev.text().splitlines() if ln.startswith("  kafka"))
        registry = dev.value("registry")
        assert f"  export KAFKA_BOOTSTRAP_SERVERS={bootstrap} SCHEMA_REGISTRY_URL={registry}   #" in dev.text()
        worker = dev.value("worker    orchestrator")
        children = _children(dev.proc.pid)
        assert len(children) == 5, children  # the broker and four workers

        completed = [f"ok-{i}" for i in range(8)]
        cancelled = ["never-0", "never-1"]
        signal_env = {**env, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "SCHEMA_REGISTRY_URL": registry}
        for i, key in enumerate(completed + cancelled):
            if i % 2 == 0:  # half through the CLI, half through the workflow worker's HTTP endpoint
                sent = run_ok([streams, "signal", key, "OrderPlaced", "--data", orjson.dumps(_place(key)).decode()],
                              proj, signal_env)
                assert orjson.loads(sent.stdout)["topic"] == "orders.events"
            else:
                body = orjson.dumps({"type": "OrderPlaced", "data": _place(key)})
                req = urllib.request.Request(f"{worker}/workflows/{key}/events", body, method="POST",
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=10) as resp:
                    assert resp.status == 202
        ends = {**dict.fromkeys(completed, "completed"), **dict.fromkeys(cancelled, "cancelled")}

        def ended() -> bool:
            return all((_entity(worker, k) or {}).get("state") == end for k, end in ends.items())

        try:
            wait_until(ended, 90, "every order in its terminal state")
        except AssertionError as exc:
            states = {k: (_entity(worker, k) or {}).get("state") for k in ends}
            raise AssertionError(f"{exc}: {states}\n{dev.text()[-4000:]}") from None
        for key, end in ends.items():
            status = orjson.loads(run_ok([streams, "status", key, "--url", worker], proj, env).stdout)
            assert (status["state"], status["workflow"]) == (end, "orders"), status
        wait_until(lambda: "dev: orders: cancelled=2 completed=8" in dev.text(), 60, "the census line")
        assert dev.stop() == 0, dev.text()[-3000:]
    finally:
        dev.stop()
    wait_until(lambda: _gone(children), 10, "every child of streams dev to exit")
    text = dev.text()
    assert "Traceback" not in text, text[-3000:]
    for name in ("orchestrator", "payment", "inventory", "shipping"):
        assert f"\n{name:<12} | worker: stopped after" in text, name
    assert text.rstrip().endswith("dev: stopped")


def test_init_copies_any_example_generically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An example of another shape (its own modules, a topology naming its workflow by full reference, no tests
    of its own) still becomes a project whose references all point into the new package."""
    from streams.ops import scaffold

    write_loan_project(tmp_path / "src", "mini")
    example = tmp_path / "src" / "loanflow"
    (example / "flows.py").rename(example / "workflow.py")
    (example / "helpers.py").write_text("REVIEW_MS = 1234\n")
    (example / "workflow.py").write_text("from streams.examples.mini.helpers import REVIEW_MS  # noqa: F401\n"
                                         + (example / "workflow.py").read_text())
    topology = example / "topology.yaml"
    topology.write_text(topology.read_text().replace('"loanflow.flows:loan"', "streams.examples.mini.workflow:loan"))
    monkeypatch.setattr(scaffold, "examples", lambda: {"mini": example})
    project = scaffold.scaffold(tmp_path / "loans", "mini")
    assert (project.package, project.workflows, project.processors) == ("loans", ("loans.workflow:loan",),
                                                                          ("loans",))
    assert "from loans.helpers import REVIEW_MS" in (tmp_path / "loans" / "loans" / "workflow.py").read_text()
    assert load(tmp_path / "loans" / "topology.yaml").name == "loans"
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    assert "2 passed" in run_ok(pytest, tmp_path / "loans", _env(tmp_path / "loans")).stdout
    # The generated tests read the topology: a parameter the workflow does not take fails them.
    topology = tmp_path / "loans" / "topology.yaml"
    topology.write_text(topology.read_text().replace("review_ms: 60000", "review_ms: 60000, reviewers: 2"))
    broken = subprocess.run(pytest, cwd=tmp_path / "loans", env=_env(tmp_path / "loans"), capture_output=True,
                            text=True, timeout=120)
    assert broken.returncode == 1 and "unexpected keyword argument 'reviewers'" in broken.stdout, broken.stdout


def test_a_workflow_alias_becomes_a_reference_only_where_it_is_a_value() -> None:
    from streams.ops.scaffold import _resolve_aliases

    text = "processors:\n  workflow:\n    processor: workflow\n    options:\n      workflow: orders  # the saga\n"
    assert _resolve_aliases(text, lambda t: t.replace("streams.examples.orders", "shop")) == (
        "processors:\n  workflow:\n    processor: workflow\n    options:\n"
        '      workflow: "shop.workflow:order_saga"  # the saga\n')
