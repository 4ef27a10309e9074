"""A secured listener for the real test Kafka: SASL/SCRAM-SHA-512 over TLS, or mutual TLS, with ACLs enforced.

Certificates are made with openssl when the cluster is laid out (a CA, a broker certificate for
127.0.0.1/localhost, one client certificate per user for mTLS) and handed to Kafka as PEM stores. SCRAM
credentials are written into the metadata log when storage is formatted, so they exist before the first client
connects. ``admin`` is the super user; every other user gets only what ACLs grant
(``allow.everyone.if.no.acl.found=false``). The controller listener stays PLAINTEXT on loopback: SCRAM cannot
authenticate controllers (their credentials live in the metadata they serve), so its anonymous principal is a
super user too; it serves controller requests only and is never advertised to clients.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from streams.config import KafkaSettings
from streams.errors import ConfigError, KafkaUnavailableError

SASL_SSL, MTLS = "sasl_ssl", "mtls"
ADMIN = "admin"
_LISTENER = "SECURE"
_BROKER_CN = "broker"  # the broker's own principal when it connects to itself over mTLS


def _password() -> str:
    return secrets.token_hex(12)


@dataclass(frozen=True)
class Security:
    """``mode`` SASL_SSL or MTLS; ``users`` name -> SCRAM password (``admin`` is always there)."""

    mode: str
    users: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in (SASL_SSL, MTLS):
            raise ConfigError(f"security mode must be {SASL_SSL} or {MTLS}, got {self.mode!r}")
        bad = [u for u in self.users if not u.isidentifier()]
        if bad:
            raise ConfigError(f"user names must be letters, digits and _, got {bad}")
        # Passwords go into StorageTool's [name=...,password=...] and a JAAS string: no quoting in either.
        bad = [u for u, pw in self.users.items() if not pw or not all(c.isalnum() or c in "-_" for c in pw)]
        if bad:
            raise ConfigError(f"passwords must be letters, digits, - and _, not so for {bad}")
        if ADMIN not in self.users:
            object.__setattr__(self, "users", {ADMIN: _password(), **self.users})

    @classmethod
    def of(cls, mode: str, *users: str) -> Security:
        """A mode with ``users`` (besides admin), each with a fresh random password."""
        return cls(mode, {u: _password() for u in users})

    # ------------------------------------------------------------------------------------------ the broker

    def make_certs(self, root: Path) -> None:
        """The CA, the broker's PEM key store and (mTLS) each user's certificate and key, under ``root/tls``."""
        openssl = shutil.which("openssl")
        if openssl is None:
            raise ConfigError("a secured Kafka needs openssl on PATH to make its certificates")
        d = tls_dir(root)
        d.mkdir(parents=True, exist_ok=True)
        _run(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", d / "ca.key", "-out",
             d / "ca.pem", "-days", "7", "-subj", "/CN=streams-test-ca",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        _sign(openssl, d, _BROKER_CN, "subjectAltName=IP:127.0.0.1,DNS:localhost")
        (d / "broker.keystore.pem").write_text((d / f"{_BROKER_CN}.key").read_text()
                                               + (d / f"{_BROKER_CN}.pem").read_text())
        if self.mode == MTLS:
            for user in self.users:
                _sign(openssl, d, user, "extendedKeyUsage=clientAuth")

    def node_properties(self, port: int, controller_port: int, root: Path) -> dict[str, str]:
        """What replaces the PLAINTEXT client listener of a node's server.properties."""
        d = tls_dir(root)
        props = {
            "listeners": f"{_LISTENER}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"{_LISTENER}://127.0.0.1:{port}",
            "inter.broker.listener.name": _LISTENER,
            "listener.security.protocol.map":
                f"{_LISTENER}:{'SASL_SSL' if self.mode == SASL_SSL else 'SSL'},CONTROLLER:PLAINTEXT",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(d / "broker.keystore.pem"),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(d / "ca.pem"),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{ADMIN};User:ANONYMOUS" + (f";User:{_BROKER_CN}" if self.mode == MTLS else ""),
            "allow.everyone.if.no.acl.found": "false",
        }
        if self.mode == SASL_SSL:
            props.update({
                "sasl.enabled.mechanisms": "SCRAM-SHA-512",
                "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
                f"listener.name.{_LISTENER.lower()}.scram-sha-512.sasl.jaas.config":
                    "org.apache.kafka.common.security.scram.ScramLoginModule required "
                    f'username="{ADMIN}" password="{self.users[ADMIN]}";',
            })
        else:
            props.update({
                "ssl.client.auth": "required",
                # The certificate's CN is the principal (User:worker), as SCRAM's user name would be.
                "ssl.principal.mapping.rules": "RULE:^CN=([^,]*).*$/$1/,DEFAULT",
            })
        return props

    def format_args(self) -> list[str]:
        """StorageTool format arguments creating every user's SCRAM credential (SASL_SSL only)."""
        if self.mode != SASL_SSL:
            return []
        out: list[str] = []
        for user, password in self.users.items():
            out += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]"]
        return out

    # ---------------------------------------------------------------------------------------------- clients

    def client_env(self, root: Path, user: str) -> dict[str, str]:
        """The environment (``KafkaSettings.from_env``'s variables) that makes a client ``user``."""
        if user not in self.users:
            raise ConfigError(f"no user {user!r} in this cluster (users: {', '.join(self.users)})")
        d = tls_dir(root)
        env = {"KAFKA_SSL_CA_LOCATION": str(d / "ca.pem")}
        if self.mode == SASL_SSL:
            env.update({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                        "KAFKA_SASL_USERNAME": user, "KAFKA_SASL_PASSWORD": self.users[user]})
        else:
            env.update({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTIFICATE_LOCATION": str(d / f"{user}.pem"),
                        "KAFKA_SSL_KEY_LOCATION": str(d / f"{user}.key")})
        return env

    def client_config(self, root: Path, user: str) -> dict[str, str]:
        """The same as librdkafka properties."""
        return {k: str(v) for k, v in KafkaSettings.from_env("-", env=self.client_env(root, user)).client.items()}


def tls_dir(root: Path) -> Path:
    return root / "tls"


def _sign(openssl: str, d: Path, name: str, ext: str) -> None:
    """A key and a CA-signed certificate whose subject is CN=name."""
    _run(openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", d / f"{name}.key", "-out", d / f"{name}.csr",
         "-subj", f"/CN={name}")
    (d / f"{name}.ext").write_text(ext + "\n")
    _run(openssl, "x509", "-req", "-in", d / f"{name}.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key",
         "-CAcreateserial", "-out", d / f"{name}.pem", "-days", "7", "-extfile", d / f"{name}.ext")


def _run(*argv: str | Path) -> None:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise KafkaUnavailableError(f"{Path(str(argv[0])).name} {argv[1]} failed: {proc.stderr.strip()[-300:]}")
