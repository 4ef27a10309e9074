"""Our registry client (confluent-kafka's SchemaRegistryClient underneath) over TLS: a CA file, mutual TLS with a
client certificate, and what an untrusted or refused certificate gives. Our registry speaks plain HTTP, so a TLS
front terminates TLS before it, as a load balancer would."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.contracts import RegistryClient, RegistrySettings
from streams.errors import ConfigError, SchemaRegistryError
from streams.registry import RegistryServer

SCHEMA = json.dumps({"type": "record", "name": "Tls", "fields": [{"name": "x", "type": "int"}]})


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by the CA."""
    d = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
             "-subj", "/CN=streams test CA", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext", cwd=d)
    return d


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    for s in (src, dst):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def tls_front(backend_port: int, context: ssl.SSLContext) -> Iterator[str]:
    """https://127.0.0.1:PORT relaying each connection, once its handshake succeeds, to the plain backend."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        try:
            tls = context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            conn.close()
            return
        backend = socket.create_connection(("127.0.0.1", backend_port))
        threading.Thread(target=_pump, args=(backend, tls), daemon=True).start()
        _pump(tls, backend)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def _server_context(certs: Path, mutual: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs / "server.pem", certs / "server.key")
    if mutual:
        ctx.load_verify_locations(certs / "ca.pem")
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def test_a_ca_file_and_a_client_certificate_reach_a_registry_behind_mutual_tls(certs: Path) -> None:
    with RegistryServer() as registry, tls_front(int(registry.url.rsplit(":", 1)[1]),
                                                  _server_context(certs, mutual=True)) as url:
        env = {"SCHEMA_REGISTRY_SSL_CA_LOCATION": str(certs / "ca.pem"),
               "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION": str(certs / "client.pem"),
               "SCHEMA_REGISTRY_SSL_KEY_LOCATION": str(certs / "client.key")}
        client = RegistryClient(RegistrySettings.from_env(url, env))
        sid = client.register("tls-value", SCHEMA)
        assert client.version("tls-value").id == sid and RegistryClient(registry.url).schema(sid) == client.schema(sid)
        # without the client certificate the registry's front refuses the handshake: not retryable, says where
        no_cert = RegistryClient(RegistrySettings(url=url, ca_location=str(certs / "ca.pem"), retry_wait_ms=10))
        with pytest.raises(ConfigError, match=rf"schema registry TLS: GET {url}/subjects/tls-value/versions: "):
            no_cert.versions("tls-value")


def test_a_registry_certificate_the_client_does_not_trust_is_a_config_error(certs: Path) -> None:
    with RegistryServer() as registry, tls_front(int(registry.url.rsplit(":", 1)[1]),
                                                  _server_context(certs, mutual=False)) as url:
        assert RegistryClient(RegistrySettings(url=url, ca_location=str(certs / "ca.pem"))).subjects() == []
        untrusted = RegistryClient(RegistrySettings(url=url, max_retries=0))  # the system's CAs: not ours
        with pytest.raises(ConfigError, match=r"CERTIFICATE_VERIFY_FAILED") as info:
            untrusted.subjects()
        assert not info.value.retryable and f"GET {url}/subjects" in str(info.value)
    with pytest.raises(ConfigError, match=r"schema registry settings for https://127\.0\.0\.1:1: .*No such file"):
        RegistryClient(RegistrySettings(url="https://127.0.0.1:1", ca_location=str(certs / "missing.pem")))


def test_versions_by_number_or_name_and_a_deleted_subject_registered_again_reaches_the_registry() -> None:
    with RegistryServer() as registry:
        client = RegistryClient(registry.url)
        sid = client.register("v-value", SCHEMA)
        assert client.version("v-value", "1") == client.version("v-value", 1) == client.version("v-value")
        assert client.version("v-value").id == sid and client.lookup("v-value", SCHEMA).version == 1
        for bad in ("abc", "../../config"):  # sent as one path segment: the registry names it, never another path
            with pytest.raises(SchemaRegistryError) as info:
                client.version("v-value", bad)
            assert (info.value.code, info.value.retryable) == (42202, False) and "v-value/versions/" in str(info.value)
        # a soft delete through this client drops confluent's caches: registering again is a call, not a cache hit
        assert client.delete_subject("v-value") == [1]
        assert client.subjects() == [] and client.subjects(deleted=True) == ["v-value"]
        assert client.register("v-value", SCHEMA) == sid and client.subjects() == ["v-value"]
        assert client.versions("v-value") == [2]
