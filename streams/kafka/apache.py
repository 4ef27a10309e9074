"""Real Apache Kafka on this machine: a pinned release resolved with Maven once, run as KRaft nodes.

The reference broker the suite and ``streams kafka start`` run on. Kafka's jars come from Maven Central (the
only place this machine's network reaches that ships them) into a user cache, once; later starts run no Maven
at all, so they work offline. A cluster lives in one directory (config, data, logs, pids), so ``stop`` and
``status`` find it from another process. Each node is a combined broker+controller on loopback ports.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from streams.errors import ConfigError, KafkaUnavailableError
from streams.kafka.apache_security import ADMIN, Security
from streams.kafka.embedded import free_port, orphan_guarded

KAFKA_VERSION = "4.4.0"
# kafka_2.13's own tree brings slf4j-api 1.7.36, which finds no provider in log4j-slf4j2-impl: Kafka would
# then log nothing at all. slf4j 2 plus log4j 2 make its log a file we can read.
_SLF4J = "2.0.17"
_LOG4J = "2.26.1"
_INSTALL_HINT = "install OpenJDK 17 (apt-get install openjdk-17-jre-headless)"
_MVN_HINT = "install Maven (apt-get install maven) once; later starts use the cached jars"
_STATE = "cluster.json"
# A node's JVM: a small heap is plenty for a test or development cluster and leaves room for three nodes.
HEAP = "512m"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>streams.local</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencyManagement><dependencies>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>{slf4j}</version></dependency>
  </dependencies></dependencyManagement>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>{slf4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = error
appender.f.type = File
appender.f.name = F
appender.f.fileName = {path}
appender.f.layout.type = PatternLayout
appender.f.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.f.ref = F
"""


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ConfigError(f"Apache Kafka needs java, which is not on PATH: {_INSTALL_HINT}")
    return java


def cache_dir() -> Path:
    """Where the resolved jars live: per user, shared by every cluster and checkout."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streams" / f"kafka-{KAFKA_VERSION}"


def ensure_libs(log: Callable[[str], None] = lambda _: None) -> Path:
    """The directory of Kafka's runtime jars, resolved with Maven on first use only (under a file lock, so
    two starts at once resolve once)."""
    root = cache_dir()
    libs, done = root / "libs", root / "libs.complete"
    if done.exists():
        return libs
    _java()  # say what is missing before spending a minute in Maven
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ConfigError(f"Apache Kafka {KAFKA_VERSION} is not cached in {root} and mvn is not on PATH: {_MVN_HINT}")
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return libs
        log(f"kafka: resolving Apache Kafka {KAFKA_VERSION} with Maven into {libs} (once)")
        (root / "pom.xml").write_text(_POM.format(kafka=KAFKA_VERSION, slf4j=_SLF4J, log4j=_LOG4J))
        staging = root / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(libs, ignore_errors=True)
        mvn_log = root / "mvn.log"
        with open(mvn_log, "wb") as out:
            rc = subprocess.call(
                [mvn, "-q", "-B", "-f", str(root / "pom.xml"), "dependency:copy-dependencies",
                 "-DincludeScope=runtime", f"-DoutputDirectory={staging}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        if rc != 0 or not any(staging.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
            raise KafkaUnavailableError(
                f"resolving Apache Kafka {KAFKA_VERSION} with Maven failed (exit {rc}): {_tail(mvn_log)} "
                f"(full log: {mvn_log})")
        staging.rename(libs)
        done.touch()
    return libs


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:]) if text else "(no output)"


@dataclass(frozen=True)
class Node:
    id: int
    port: int
    controller_port: int

    def dir(self, root: Path) -> Path:
        return root / f"node-{self.id}"


def node_properties(node: Node, nodes: list[Node], root: Path, cluster_size: int) -> dict[str, str]:
    """One node's server.properties. Internal topics are replicated to every node up to three, with
    min.insync.replicas one less than that, so a 3-node cluster survives one node down."""
    replicas = min(3, cluster_size)
    isr = str(max(1, replicas - 1))
    return {
        "process.roles": "broker,controller",
        "node.id": str(node.id),
        "controller.quorum.voters": ",".join(f"{n.id}@127.0.0.1:{n.controller_port}" for n in nodes),
        "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(node.dir(root) / "data"),
        "num.partitions": "1",
        "default.replication.factor": str(replicas),
        "min.insync.replicas": isr if replicas > 1 else "1",
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": isr,
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": isr,
        # A first consumer joins at once instead of after the stock 3 s wait for more members.
        "group.initial.rebalance.delay.ms": "0",
        # Stock Kafka refuses sessions under 6 s; a development cluster lets a client choose a faster
        # failover (KAFKA_CONSUMER_SESSION_TIMEOUT_MS) while the engine's default still fits stock brokers.
        "group.min.session.timeout.ms": "1000",
        "auto.create.topics.enable": "true",
        # A test or development cluster: small segments and no fsync tuning beyond Kafka's defaults.
        "log.segment.bytes": str(64 * 1024 * 1024),
    }


class ApacheKafka:
    """A cluster of 1 or 3 KRaft nodes whose config, data, logs and pids live in ``root``.

    As a context manager (tests) the nodes are children that die with this process (the orphan guard) and
    a temporary ``root`` is removed on exit; ``start(detach=True)`` (the CLI) leaves them running on their own.
    """

    def __init__(self, root: Path | None = None, nodes: int = 1, port: int | None = None,
                 overrides: Mapping[str, str] | None = None, log: Callable[[str], None] = lambda _: None,
                 security: Security | None = None) -> None:
        if nodes not in (1, 3):
            raise ConfigError(f"--nodes must be 1 or 3, got {nodes}")
        if port is not None and not 1 <= port <= 65535 - 2:
            raise ConfigError(f"--port must be within 1..65533, got {port}")
        self._tmp = root is None
        # Absolute: a node is recognised by the path of its server.properties on its command line.
        self.root = Path(tempfile.mkdtemp(prefix="streams-kafka-")) if root is None else Path(root).resolve()
        self.size = nodes
        self.port = port
        self.overrides = dict(overrides or {})
        self.security = security  # None: PLAINTEXT and no authorizer (see apache_security for the rest)
        self.log = log
        self._procs: list[subprocess.Popen[bytes]] = []  # children started by this object, reaped on stop

    @property
    def state_file(self) -> Path:
        return self.root / _STATE

    def state(self) -> dict[str, object] | None:
        try:
            data: dict[str, object] = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.state_file} is not a streams Kafka cluster file: {exc}") from exc
        return data

    def nodes(self) -> list[Node]:
        st = self.state()
        if st is None:
            return []
        raw = st.get("nodes")
        if not isinstance(raw, list):
            raise ConfigError(f"{self.state_file} has no node list")
        return [Node(int(n["id"]), int(n["port"]), int(n["controller_port"])) for n in raw]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes())

    # ---------------------------------------------------------------------------------------------- start

    def _layout(self) -> list[Node]:
        """The nodes of a new cluster: its ports, the cluster id, each node's properties and formatted storage."""
        java, libs = _java(), ensure_libs(self.log)
        if self.port is not None:
            for p in range(self.port, self.port + self.size):
                _check_free(p)
        ports = [self.port + i if self.port is not None else free_port() for i in range(self.size)]
        nodes = [Node(i + 1, ports[i], free_port()) for i in range(self.size)]
        if self.security is not None:
            self.security.make_certs(self.root)
        cluster_id = subprocess.run(
            [java, "-cp", f"{libs}/*", "kafka.tools.StorageTool", "random-uuid"],
            capture_output=True, text=True, check=False,
        ).stdout.strip().splitlines()
        if not cluster_id:
            raise KafkaUnavailableError("kafka.tools.StorageTool random-uuid printed no cluster id")
        for node in nodes:
            ndir = node.dir(self.root)
            ndir.mkdir(parents=True, exist_ok=True)
            secured = (self.security.node_properties(node.port, node.controller_port, self.root)
                       if self.security is not None else {})
            props = {**node_properties(node, nodes, self.root, self.size), **secured, **self.overrides}
            (ndir / "server.properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
            (ndir / "log4j2.properties").write_text(_LOG4J2.format(path=ndir / "server.log"))
            fmt = subprocess.run(
                [java, "-cp", f"{libs}/*", f"-Dlog4j2.configurationFile={ndir / 'log4j2.properties'}",
                 "kafka.tools.StorageTool", "format", "-t", cluster_id[-1], "-c", str(ndir / "server.properties"),
                 *(self.security.format_args() if self.security is not None else [])],
                capture_output=True, text=True, check=False,
            )
            if fmt.returncode != 0:
                raise KafkaUnavailableError(f"formatting node {node.id}'s storage failed: "
                                            f"{(fmt.stderr or fmt.stdout).strip()[-300:]}")
        self._write_state(nodes, cluster_id[-1], {})
        return nodes

    def _write_state(self, nodes: list[Node], cluster_id: str, pids: Mapping[int, int]) -> None:
        data = {"version": KAFKA_VERSION, "cluster_id": cluster_id,
                "nodes": [{"id": n.id, "port": n.port, "controller_port": n.controller_port,
                           "pid": pids.get(n.id)} for n in nodes]}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.state_file)

    def start(self, detach: bool = False, timeout_s: float = 120.0) -> ApacheKafka:
        """Start the cluster in ``root`` (formatting it first if new) and wait until every broker serves."""
        self.root.mkdir(parents=True, exist_ok=True)
        if any(self.running().values()):
            raise ConfigError(f"a Kafka cluster is already running from {self.root} ({self.bootstrap}); "
                              "stop it first (streams kafka stop)")
        st = self.state()
        nodes = self.nodes() if st is not None else self._layout()
        if st is not None and len(nodes) != self.size:
            raise ConfigError(f"{self.root} holds a {len(nodes)}-node cluster, not {self.size}: "
                              "use another --dir or the same --nodes")
        java, libs = _java(), ensure_libs(self.log)
        pids: dict[int, int] = {}
        for node in nodes:
            pids[node.id] = self._spawn(java, libs, node, detach)
        self._write_state(nodes, str((self.state() or {}).get("cluster_id", "")), pids)
        try:
            self._wait_serving(nodes, pids, timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, java: str, libs: Path, node: Node, detach: bool) -> int:
        ndir = node.dir(self.root)
        cmd = [java, f"-Xmx{HEAP}", f"-Xms{HEAP}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={ndir / 'log4j2.properties'}",
               f"-Dkafka.logs.dir={ndir}", "-cp", f"{libs}/*", "kafka.Kafka", str(ndir / "server.properties")]
        if not detach:
            cmd = orphan_guarded(cmd)
        with open(ndir / "stdout.log", "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=ndir)
        self._procs.append(proc)
        return proc.pid

    def _wait_serving(self, nodes: list[Node], pids: Mapping[int, int], timeout_s: float) -> None:
        """Until every node is a registered broker in the metadata a client sees (which needs the quorum)."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": ",".join(f"127.0.0.1:{n.port}" for n in nodes),
                             "log_level": 0, "logger": _quiet, **self.client_config(ADMIN)})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            dead = [i for i, pid in pids.items() if not _alive(pid)]
            if dead:
                log = nodes[dead[0] - 1].dir(self.root) / "server.log"
                raise KafkaUnavailableError(f"Kafka node {dead[0]} exited while starting: "
                                            f"{_tail(log, 3) or _tail(log.with_name('stdout.log'), 3)}")
            with contextlib.suppress(Exception):
                md = admin.list_topics(timeout=2)
                if len(md.brokers) == len(nodes) and md.controller_id >= 0:
                    return
            time.sleep(0.5)
        raise KafkaUnavailableError(f"Kafka in {self.root} did not serve within {timeout_s:.0f}s "
                                    f"(logs: {self.root}/node-*/server.log)")

    def client_config(self, user: str = ADMIN) -> dict[str, str]:
        """The librdkafka security properties of ``user`` on a secured cluster; nothing on a plain one."""
        return self.security.client_config(self.root, user) if self.security is not None else {}

    def client_env(self, user: str = ADMIN) -> dict[str, str]:
        """The same as the environment variables ``KafkaSettings.from_env`` reads."""
        return self.security.client_env(self.root, user) if self.security is not None else {}

    # ------------------------------------------------------------------------------- one node's faults

    def signal_node(self, node_id: int, sig: signal.Signals) -> None:
        """Send ``sig`` to one running node's process group (the JVM and, for a child cluster, its guard):
        SIGKILL, SIGSTOP and SIGCONT are how a fault-injection run breaks one broker."""
        pid = self.pids().get(node_id)
        if pid is None or not _alive(pid):
            raise KafkaUnavailableError(f"Kafka node {node_id} in {self.root} is not running")
        os.killpg(pid, sig)
        if sig == signal.SIGKILL:  # reap it, so its pid no longer counts as running
            for proc in self._procs:
                if proc.pid == pid:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(10)

    def restart_node(self, node_id: int) -> None:
        """Start one node again (after a kill) on its own data; does not wait for it to rejoin."""
        nodes = {n.id: n for n in self.nodes()}
        if node_id not in nodes:
            raise ConfigError(f"{self.root} has no Kafka node {node_id}")
        if self.running().get(node_id):
            return
        pids = self.pids()
        pids[node_id] = self._spawn(_java(), ensure_libs(self.log), nodes[node_id], detach=False)
        self._write_state(list(nodes.values()), str((self.state() or {}).get("cluster_id", "")), pids)

    def quorum_leader(self) -> int | None:
        """The active controller: the KRaft quorum leader with the newest epoch in the nodes' quorum-state files
        (a broker's metadata answer names a random live broker as "controller" in KRaft, not the leader)."""
        best: tuple[int, int] | None = None
        for node in self.nodes():
            path = node.dir(self.root) / "data" / "__cluster_metadata-0" / "quorum-state"
            try:
                data = json.loads(path.read_text())
                epoch, leader = int(data.get("leaderEpoch", -1)), int(data.get("leaderId", -1))
            except (OSError, ValueError, TypeError):
                continue
            if leader >= 0 and (best is None or epoch > best[0]):
                best = (epoch, leader)
        return None if best is None else best[1]

    # ----------------------------------------------------------------------------------------- status, stop

    def pids(self) -> dict[int, int]:
        """Each started node's id -> the pid recorded for it."""
        raw = (self.state() or {}).get("nodes")
        return {int(n["id"]): int(n["pid"]) for n in raw if n.get("pid")} if isinstance(raw, list) else {}

    def running(self) -> dict[int, bool]:
        """Each node's id -> whether its recorded process is alive and is that node's Kafka."""
        pids = self.pids()
        return {n.id: n.id in pids and _is_node(pids[n.id], n.dir(self.root)) for n in self.nodes()}

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every node (a clean shutdown), SIGKILL what is still alive after ``timeout_s``."""
        alive = {i: p for i, p in self.pids().items() if self.running().get(i)}
        for pid in alive.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while alive and time.monotonic() < deadline:
            alive = {i: p for i, p in alive.items() if _alive(p)}
            time.sleep(0.1)
        for pid in alive.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self._procs.clear()
        if self._tmp:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _quiet(*_: object) -> None:
    """librdkafka's log while brokers are still coming up is expected refusals: not the caller's concern."""


def _check_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ConfigError(f"port {port} on 127.0.0.1 is in use ({exc.strerror})") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie child of ours has exited
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


def _is_node(pid: int, node_dir: Path) -> bool:
    """The pid is alive and runs this node's server.properties (not a pid reused by another process)."""
    if not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(node_dir / "server.properties").encode() in cmdline
