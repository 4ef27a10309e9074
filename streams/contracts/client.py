"""A small client for the Confluent Schema Registry REST API (ours or Confluent's), on the standard library.

Why not confluent-kafka's client: we need a handful of calls with our own error types, and nothing on the
per-record path calls it (the serde caches every answer). Credentials never appear in messages: the URL is kept
without user info and errors name only the path.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.config import http_url
from streams.contracts.avsc import Json, Ref, resolve
from streams.errors import (
    ConfigError,
    IncompatibleSchemaError,
    SchemaRegistryError,
    SchemaRegistryUnavailableError,
)

DEFAULT_URL = "http://127.0.0.1:8081"
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


@dataclass(frozen=True)
class RegistrySettings:
    """Where the registry is and how to authenticate; parsed once at the edge."""

    url: str = DEFAULT_URL
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)  # a bearer token, sent when there is no user
    ca_location: str | None = None  # CA bundle that signed the registry's certificate
    certificate_location: str | None = None  # client certificate for mutual TLS
    key_location: str | None = None
    timeout_s: float = 10.0

    @classmethod
    def from_env(cls, url: str | None = None, env: Mapping[str, str] | None = None) -> RegistrySettings:
        """``url`` (a flag) wins over ``SCHEMA_REGISTRY_URL``; user info in the URL becomes basic auth.

        Other variables: ``SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO`` (``user:password``),
        ``SCHEMA_REGISTRY_BEARER_AUTH_TOKEN``, ``SCHEMA_REGISTRY_SSL_CA_LOCATION``,
        ``SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION``,
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
            ca_location=env.get("SCHEMA_REGISTRY_SSL_CA_LOCATION"),
            certificate_location=env.get("SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION"),
            key_location=env.get("SCHEMA_REGISTRY_SSL_KEY_LOCATION"),
        )


@dataclass(frozen=True)
class RegisteredSchema:
    subject: str
    version: int
    id: int
    schema: str


def quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


class RegistryClient:
    """Blocking calls to one registry. Thread-safe (no shared mutable state besides immutable settings)."""

    def __init__(self, settings: RegistrySettings | str | None = None) -> None:
        if settings is None or isinstance(settings, str):
            settings = RegistrySettings.from_env(settings)
        self.settings = settings
        self.url = settings.url
        self._headers = {"Accept": CONTENT_TYPE + ", application/json"}
        if settings.username is not None:
            token = base64.b64encode(f"{settings.username}:{settings.password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        elif settings.token:
            self._headers["Authorization"] = f"Bearer {settings.token}"
        self._ssl: ssl.SSLContext | None = None
        if settings.url.startswith("https"):
            try:
                self._ssl = ssl.create_default_context(cafile=settings.ca_location)
                if settings.certificate_location:
                    self._ssl.load_cert_chain(settings.certificate_location, settings.key_location)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"schema registry TLS settings: {exc}") from exc

    # -- transport -------------------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, query: Mapping[str, Any] | None = None) -> Any:
        """One call; the parsed JSON answer, or our error carrying Confluent's error code."""
        url = f"{self.url}/{path.lstrip('/')}"
        if query:
            url += "?" + urllib.parse.urlencode({k: _q(v) for k, v in query.items() if v is not None})
        data = None
        headers = dict(self._headers)
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = CONTENT_TYPE
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        where = f"{method} {self.url}/{path.lstrip('/').split('?')[0]}"
        try:
            with urllib.request.urlopen(req, timeout=self.settings.timeout_s, context=self._ssl) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise _error(exc.code, exc.read(), where) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SchemaRegistryUnavailableError(f"schema registry unreachable: {where}: {reason}") from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise SchemaRegistryError(f"{where}: answer is not JSON: {raw[:120]!r}") from None

    # -- the calls the serde and the CLI need ----------------------------------------------------------------

    def register(self, subject: str, schema: str) -> int:
        """The schema's id under ``subject``, registering it if needed (idempotent)."""
        return int(self.request("POST", f"subjects/{quote(subject)}/versions", {"schema": schema})["id"])

    def lookup(self, subject: str, schema: str) -> RegisteredSchema:
        """The registration of ``schema`` under ``subject``; 40401/40403 if it is not registered there."""
        return _registered(self.request("POST", f"subjects/{quote(subject)}", {"schema": schema}))

    def schema(self, schema_id: int) -> str:
        """The schema text of an id; a SchemaRegistryError with code 40403 if the registry does not know it."""
        return str(self.request("GET", f"schemas/ids/{int(schema_id)}")["schema"])

    def resolved(self, schema_id: int) -> Json:
        """The schema of an id as a self-contained canonical schema: the named types of the schemas it references
        (a writer that used Confluent's schema references) inlined. SchemaRegistryError (40403) if unknown;
        ValueError if what the registry holds is not a usable schema."""
        ans = self.request("GET", f"schemas/ids/{int(schema_id)}")

        def fetch(subject: str, version: int) -> tuple[str, list[Ref]]:
            found = self.request("GET", f"subjects/{quote(subject)}/versions/{int(version)}")
            return str(found["schema"]), _refs(found.get("references"))

        try:
            return resolve(json.loads(ans["schema"]), _refs(ans.get("references")), fetch)
        except (TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"malformed answer: {exc!r}") from exc

    def subjects(self, deleted: bool = False) -> list[str]:
        return [str(s) for s in self.request("GET", "subjects", query={"deleted": deleted})]

    def versions(self, subject: str) -> list[int]:
        return [int(v) for v in self.request("GET", f"subjects/{quote(subject)}/versions")]

    def version(self, subject: str, version: int | str = "latest") -> RegisteredSchema:
        return _registered(self.request("GET", f"subjects/{quote(subject)}/versions/{version}"))

    def test_compatibility(self, subject: str, schema: str, version: int | str | None = None) -> tuple[bool, list[str]]:
        """Whether ``schema`` may be registered under ``subject`` and why not: against the versions its level says
        (``version`` None: the latest, or all of them for a transitive level), or against one ``version``."""
        path = f"compatibility/subjects/{quote(subject)}/versions" + (f"/{version}" if version is not None else "")
        ans = self.request("POST", path, {"schema": schema}, {"verbose": True})
        return bool(ans.get("is_compatible")), [str(m) for m in ans.get("messages") or []]

    def compatibility(self, subject: str | None = None) -> str:
        """The level that applies to ``subject`` (its own, else the global one), or the global level."""
        path = f"config/{quote(subject)}" if subject else "config"
        ans = self.request("GET", path, query={"defaultToGlobal": True} if subject else None)
        return str(ans.get("compatibilityLevel") or ans.get("compatibility"))

    def set_compatibility(self, level: str, subject: str | None = None) -> str:
        path = f"config/{quote(subject)}" if subject else "config"
        return str(self.request("PUT", path, {"compatibility": level.upper()})["compatibility"])

    def delete_subject(self, subject: str, permanent: bool = False) -> list[int]:
        return [int(v) for v in self.request("DELETE", f"subjects/{quote(subject)}", query={"permanent": permanent})]


def _refs(raw: Any) -> list[Ref]:
    return [(str(r["name"]), str(r["subject"]), int(r["version"])) for r in raw or ()]


def _q(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _registered(ans: Mapping[str, Any]) -> RegisteredSchema:
    return RegisteredSchema(str(ans["subject"]), int(ans["version"]), int(ans["id"]), str(ans["schema"]))


def _error(status: int, raw: bytes, where: str) -> SchemaRegistryError:
    code, message = status, raw[:200].decode("utf-8", "replace")
    try:
        body = json.loads(raw)
        code, message = int(body.get("error_code", status)), str(body.get("message", message))
    except (ValueError, AttributeError, TypeError):
        pass
    text = f"{where}: {message} (HTTP {status}, error code {code})"
    if status == 409:
        return IncompatibleSchemaError(text, code, status)
    if status >= 500:
        return SchemaRegistryUnavailableError(text, code, status)
    return SchemaRegistryError(text, code, status)
