"""Our registry client: confluent-kafka's ``SchemaRegistryClient`` behind the small interface the serde and the CLI
use, with its errors mapped onto ours.

Confluent's client brings the connection pool, the caches (ids, subject/schema pairs and versions: nothing on the
per-record path calls the registry), the retries with jittered backoff on a refused connection, a timeout, 408, 429
and 5xx, and the auth settings its users know (``basic.auth.user.info``, static bearer tokens, TLS files). Where its
high-level calls fall short we use its REST client, on the same session and credentials: ``compatibility`` needs
``defaultToGlobal`` (its ``get_compatibility`` answers 40408 for a subject without its own level) and
``test_compatibility`` needs the verbose messages (its own returns a bool). Credentials never appear in messages:
the URL is kept without user info and errors name only the method, the URL and the path (the subject or the id).

The import is the one exception to "only streams.kafka imports confluent_kafka" (see pyproject.toml): this is an
HTTP client, not librdkafka, and the registry is this layer's boundary, as Kafka is streams.kafka's.
"""

from __future__ import annotations

import functools
import json
import os
import ssl
import types
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from streams.config import http_url
from streams.contracts.avsc import Json, Ref, resolve
from streams.errors import (
    ConfigError,
    IncompatibleSchemaError,
    SchemaRegistryError,
    SchemaRegistryUnavailableError,
    StreamsError,
)

DEFAULT_URL = "http://127.0.0.1:8081"
T = TypeVar("T")


@functools.cache
def _confluent() -> types.SimpleNamespace:
    """confluent-kafka's registry modules, imported on first use: they take ~0.2 s (httpx, authlib), which every
    CLI command would otherwise pay at start."""
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.common._httpx_compat import httpx  # whichever httpx its client uses
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    return types.SimpleNamespace(Schema=Schema, Client=SchemaRegistryClient, httpx=httpx, Error=SchemaRegistryError)


@dataclass(frozen=True)
class RegistrySettings:
    """Where the registry is and how to authenticate; parsed once at the edge."""

    url: str = DEFAULT_URL
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)  # a bearer token, sent when there is no user
    logical_cluster: str = ""  # sent with a bearer token (Confluent Cloud's lsrc-... id); ours ignores it
    ca_location: str | None = None  # CA bundle that signed the registry's certificate
    certificate_location: str | None = None  # client certificate for mutual TLS
    key_location: str | None = None
    timeout_s: float = 10.0
    max_retries: int = 3  # on a refused connection, a timeout, 408, 429 and 5xx (confluent's backoff)
    retry_wait_ms: int = 200  # the first retry's longest wait; doubles per retry up to retry_max_wait_ms
    retry_max_wait_ms: int = 2000

    @classmethod
    def from_env(cls, url: str | None = None, env: Mapping[str, str] | None = None) -> RegistrySettings:
        """``url`` (a flag) wins over ``SCHEMA_REGISTRY_URL``; user info in the URL becomes basic auth.

        Other variables: ``SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO`` (``user:password``),
        ``SCHEMA_REGISTRY_BEARER_AUTH_TOKEN``, ``SCHEMA_REGISTRY_BEARER_AUTH_LOGICAL_CLUSTER``,
        ``SCHEMA_REGISTRY_SSL_CA_LOCATION``, ``SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION``,
        ``SCHEMA_REGISTRY_SSL_KEY_LOCATION``.
        """
        env = os.environ if env is None else env
        raw = url or env.get("SCHEMA_REGISTRY_URL") or DEFAULT_URL
        parts = http_url(raw, "schema registry URL")
        user, password = parts.username, parts.password
        info = env.get("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO")
        if info and user is None:
            user, _, password = info.partition(":")
        netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")  # a host: http_url checked
        clean = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        return cls(
            url=clean,
            username=urllib.parse.unquote(user) if user else None,
            password=urllib.parse.unquote(password) if password else None,
            token=env.get("SCHEMA_REGISTRY_BEARER_AUTH_TOKEN") or None,
            logical_cluster=env.get("SCHEMA_REGISTRY_BEARER_AUTH_LOGICAL_CLUSTER", ""),
            ca_location=env.get("SCHEMA_REGISTRY_SSL_CA_LOCATION"),
            certificate_location=env.get("SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION"),
            key_location=env.get("SCHEMA_REGISTRY_SSL_KEY_LOCATION"),
        )

    def confluent_conf(self) -> dict[str, Any]:
        """These settings in the configuration keys of confluent-kafka's ``SchemaRegistryClient``."""
        conf: dict[str, Any] = {"url": self.url, "timeout": self.timeout_s, "max.retries": self.max_retries,
                                "retries.wait.ms": self.retry_wait_ms, "retries.max.wait.ms": self.retry_max_wait_ms}
        if self.username is not None:
            conf["basic.auth.user.info"] = f"{self.username}:{self.password or ''}"
        elif self.token:
            conf.update({"bearer.auth.credentials.source": "STATIC_TOKEN", "bearer.auth.token": self.token,
                         "bearer.auth.logical.cluster": self.logical_cluster})
        if self.url.startswith("https"):  # TLS files matter only there; a plain URL ignores them, as it always did
            for key, value in (("ssl.ca.location", self.ca_location), ("ssl.key.location", self.key_location),
                               ("ssl.certificate.location", self.certificate_location)):
                if value:
                    conf[key] = value
        return conf


@dataclass(frozen=True)
class RegisteredSchema:
    subject: str
    version: int
    id: int
    schema: str


def quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


class RegistryClient:
    """Blocking calls to one registry. Thread-safe (confluent's client locks its caches; httpx's pool is shared)."""

    def __init__(self, settings: RegistrySettings | str | None = None) -> None:
        if settings is None or isinstance(settings, str):
            settings = RegistrySettings.from_env(settings)
        self.settings = settings
        self.url = settings.url
        try:
            self._sr = _confluent().Client(settings.confluent_conf())
        except (OSError, ssl.SSLError, ValueError, TypeError) as exc:  # unreadable TLS files, a key without a cert
            raise ConfigError(f"schema registry settings for {self.url}: {exc}") from None

    def close(self) -> None:
        self._sr.close()

    # -- transport -------------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, call: Callable[[], T]) -> T:
        """``call``'s answer, or our error naming ``method`` and the URL of ``path`` (never the credentials)."""
        try:
            return call()
        except Exception as exc:
            mapped = _mapped(exc, f"{method} {self.url}/{path}")
            if mapped is None:
                raise
            raise mapped from None

    def _rest(self, method: str, path: str, body: Any = None, query: Mapping[str, bool] | None = None) -> Any:
        """One call through confluent's REST client (its session, credentials and retries), for what its
        high-level calls lack."""
        rest = self._sr._rest_client
        url = path + ("?" + urllib.parse.urlencode({k: str(v).lower() for k, v in query.items()}) if query else "")
        send: Callable[[], Any] = {
            "GET": lambda: rest.get(url), "POST": lambda: rest.post(url, body), "PUT": lambda: rest.put(url, body),
        }[method]
        return self._call(method, path, send)

    # -- the calls the serde and the CLI need ----------------------------------------------------------------

    def register(self, subject: str, schema: str) -> int:
        """The schema's id under ``subject``, registering it if needed (idempotent; cached per subject and text)."""
        path = f"subjects/{quote(subject)}/versions"
        avro = _confluent().Schema(schema, "AVRO")
        return int(self._call("POST", path, lambda: self._sr.register_schema(subject, avro)))

    def lookup(self, subject: str, schema: str) -> RegisteredSchema:
        """The registration of ``schema`` under ``subject`` (``schema`` is the text given); 40401/40403 if it is
        not registered there."""
        found = self._call("POST", f"subjects/{quote(subject)}",
                           lambda: self._sr.lookup_schema(subject, _confluent().Schema(schema, "AVRO")))
        return RegisteredSchema(str(found.subject or subject), int(found.version), int(found.schema_id), schema)

    def schema(self, schema_id: int) -> str:
        """The schema text of an id; a SchemaRegistryError with code 40403 if the registry does not know it."""
        return str(self._by_id(schema_id).schema_str)

    def resolved(self, schema_id: int) -> Json:
        """The schema of an id as a self-contained canonical schema: the named types of the schemas it references
        (a writer that used Confluent's schema references) inlined. SchemaRegistryError (40403) if unknown;
        ValueError if what the registry holds is not a usable schema."""
        found = self._by_id(schema_id)

        def fetch(subject: str, version: int) -> tuple[str, list[Ref]]:
            ref = self._call("GET", f"subjects/{quote(subject)}/versions/{int(version)}",
                             lambda: self._sr.get_version(subject, int(version)))
            return str(ref.schema.schema_str), _refs(ref.schema.references)

        try:
            return resolve(json.loads(found.schema_str), _refs(found.references), fetch)
        except (TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"malformed answer: {exc!r}") from exc

    def _by_id(self, schema_id: int) -> Any:
        sid = int(schema_id)
        return self._call("GET", f"schemas/ids/{sid}", lambda: self._sr.get_schema(sid))

    def subjects(self, deleted: bool = False) -> list[str]:
        return [str(s) for s in self._call("GET", "subjects", lambda: self._sr.get_subjects(deleted=deleted))]

    def versions(self, subject: str) -> list[int]:
        path = f"subjects/{quote(subject)}/versions"
        return [int(v) for v in self._call("GET", path, lambda: self._sr.get_versions(subject))]

    def version(self, subject: str, version: int | str = "latest") -> RegisteredSchema:
        """One version of ``subject``; "latest" always asks the registry (confluent caches only fixed versions)."""
        # a number is confluent's cache key; anything else ("latest", or a typo the registry answers with 42202) as is
        which: Any = int(version) if isinstance(version, int) or version.isdigit() else quote(version)
        found = self._call("GET", f"subjects/{quote(subject)}/versions/{which}",
                           lambda: self._sr.get_version(subject, which))
        return RegisteredSchema(str(found.subject), int(found.version), int(found.schema_id),
                                str(found.schema.schema_str))

    def test_compatibility(self, subject: str, schema: str, version: int | str | None = None) -> tuple[bool, list[str]]:
        """Whether ``schema`` may be registered under ``subject`` and why not: against the versions its level says
        (``version`` None: the latest, or all of them for a transitive level), or against one ``version``."""
        path = f"compatibility/subjects/{quote(subject)}/versions" + (f"/{version}" if version is not None else "")
        ans = self._rest("POST", path, {"schema": schema}, {"verbose": True})
        return bool(ans.get("is_compatible")), [str(m) for m in ans.get("messages") or []]

    def compatibility(self, subject: str | None = None) -> str:
        """The level that applies to ``subject`` (its own, else the global one), or the global level."""
        path = f"config/{quote(subject)}" if subject else "config"
        ans = self._rest("GET", path, query={"defaultToGlobal": True} if subject else None)
        return str(ans.get("compatibilityLevel") or ans.get("compatibility"))

    def set_compatibility(self, level: str, subject: str | None = None) -> str:
        path = f"config/{quote(subject)}" if subject else "config"
        ans = self._call("PUT", path, lambda: self._sr.set_compatibility(subject, level))
        return str(ans["compatibility"])  # confluent's call returns the answer's object, not the level alone

    def delete_subject(self, subject: str, permanent: bool = False) -> list[int]:
        """The versions deleted. Confluent's caches are dropped: a soft-deleted subject registered again must reach
        the registry, not be answered from the cache."""
        path = f"subjects/{quote(subject)}"
        try:
            return [int(v) for v in self._call("DELETE", path, lambda: self._sr.delete_subject(subject, permanent))]
        finally:
            self._sr.clear_caches()


def _refs(raw: Any) -> list[Ref]:
    return [(str(r.name), str(r.subject), int(r.version)) for r in raw or ()]


def _mapped(exc: Exception, where: str) -> StreamsError | None:
    cf = _confluent()
    if isinstance(exc, cf.Error):
        return _error(exc.http_status_code, exc.error_code, exc.error_message, where)
    if isinstance(exc, cf.httpx.TransportError):  # refused, reset, timed out, TLS: what is left after the retries
        tls = _tls_cause(exc)
        if tls is not None:  # an untrusted certificate, or one the registry refused: retrying cannot help
            return ConfigError(f"schema registry TLS: {where}: {tls.reason or tls}; check SCHEMA_REGISTRY_SSL_*")
        return SchemaRegistryUnavailableError(f"schema registry unreachable: {where}: {exc!s}")
    if isinstance(exc, cf.httpx.HTTPError):
        return SchemaRegistryError(f"{where}: {type(exc).__name__}: {exc!s}", 50001, 502)
    if isinstance(exc, json.JSONDecodeError):
        return SchemaRegistryError(f"{where}: answer is not JSON: {exc}", 50001, 502)
    return None


def _tls_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _error(status: int, code: int | None, message: str | None, where: str) -> SchemaRegistryError:
    """Confluent's error as ours: 409 is an incompatible schema; a timeout, 429 and 5xx are worth retrying (confluent
    already did, with backoff); any other 4xx is not."""
    code = status if code is None or code < 0 else int(code)
    text = f"{where}: {message} (HTTP {status}, error code {code})"
    if status == 409:
        return IncompatibleSchemaError(text, code, status)
    if status >= 500 or status in (408, 429):
        return SchemaRegistryUnavailableError(text, code, status)
    return SchemaRegistryError(text, code, status)
