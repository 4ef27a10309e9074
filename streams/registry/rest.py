"""The Confluent Schema Registry REST API as a table of operations over ``streams.web``: nothing else.

Every failure is a JSON body ``{"error_code": ..., "message": ...}`` with Confluent's codes; malformed requests
(bad JSON, wrong types, unknown paths, bad versions or ids) are 4xx. Reads (looking a schema up and testing
one included) need the ``read`` right, registering ``write``, deleting and changing the configuration ``admin``.
"""

from __future__ import annotations

from starlette.responses import Response

from streams.errors import SchemaRegistryError
from streams.registry.service import RegistryService
from streams.web import FLAG, TEXT, Call, HttpError, Op

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
SCHEMA_BODY = {"type": "object", "required": ["schema"], "properties": {
    "schema": {"type": "string"}, "schemaType": {"type": "string"},
    "references": {"type": "array", "items": {"type": "object", "properties": {
        "name": {"type": "string"}, "subject": {"type": "string"}, "version": {"type": "integer"}}}}}}
CONFIG_BODY = {"type": "object", "required": ["compatibility"], "properties": {"compatibility": {"type": "string"}}}
ID = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
DELETED = {"deleted": FLAG}
LISTED = {"deleted": FLAG, "deleted_only": FLAG}


def _schema_id(raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 2**31:
        raise HttpError(422, f"schema id must be a positive 32-bit integer, got {raw!r}", 42202)
    return int(raw)


def translate(exc: Exception) -> HttpError | None:
    """The service's typed errors as answers; anything else is a bug (500)."""
    if isinstance(exc, SchemaRegistryError):
        return HttpError(exc.http_status, str(exc), exc.code)
    return None


def operations(s: RegistryService) -> list[Op]:
    def raw_schema(c: Call) -> Response:
        text = s.version(c.params["subject"], c.params["version"], c.flag("deleted"))["schema"]
        return Response(text, media_type=CONTENT_TYPE)

    def id_subjects(c: Call) -> list[str]:
        return sorted({v["subject"] for v in s.id_versions(_schema_id(c.params["id"]), c.flag("deleted"))})

    ids = {"id": ID}
    return [
        Op("GET", "/", lambda c: {}, summary="liveness"),
        Op("GET", "/subjects", lambda c: s.subjects(c.flag("deleted"), c.flag("deleted_only"),
                                                    c.query.get("subjectPrefix", "")),
           query={**LISTED, "subjectPrefix": TEXT}),
        Op("POST", "/subjects/{subject}", lambda c: s.lookup(c.params["subject"], c.body, c.flag("deleted")),
           "read", "look a schema up", DELETED, SCHEMA_BODY),
        Op("DELETE", "/subjects/{subject}", lambda c: s.delete_subject(c.params["subject"], c.flag("permanent")),
           "admin", query={"permanent": FLAG}),
        Op("GET", "/subjects/{subject}/versions",
           lambda c: s.versions(c.params["subject"], c.flag("deleted"), c.flag("deleted_only")), query=LISTED),
        Op("POST", "/subjects/{subject}/versions", lambda c: s.register(c.params["subject"], c.body),
           "write", "register a schema", body=SCHEMA_BODY),
        Op("GET", "/subjects/{subject}/versions/{version}",
           lambda c: s.version(c.params["subject"], c.params["version"], c.flag("deleted")), query=DELETED),
        Op("DELETE", "/subjects/{subject}/versions/{version}",
           lambda c: s.delete_version(c.params["subject"], c.params["version"], c.flag("permanent")),
           "admin", query={"permanent": FLAG}),
        Op("GET", "/subjects/{subject}/versions/{version}/schema", raw_schema, query=DELETED),
        Op("GET", "/subjects/{subject}/versions/{version}/referencedby",
           lambda c: s.referenced_by(c.params["subject"], c.params["version"])),
        Op("GET", "/schemas/types", lambda c: ["AVRO"]),
        Op("GET", "/schemas/ids/{id}", lambda c: s.schema_by_id(_schema_id(c.params["id"])), params=ids),
        Op("GET", "/schemas/ids/{id}/versions",
           lambda c: s.id_versions(_schema_id(c.params["id"]), c.flag("deleted")), query=DELETED, params=ids),
        Op("GET", "/schemas/ids/{id}/subjects", id_subjects, query=DELETED, params=ids),
        Op("GET", "/config", lambda c: s.config(None, True)),
        Op("PUT", "/config", lambda c: s.set_config(None, c.body), "admin", body=CONFIG_BODY),
        Op("DELETE", "/config", lambda c: s.delete_config(None), "admin"),
        Op("GET", "/config/{subject}", lambda c: s.config(c.params["subject"], c.flag("defaultToGlobal")),
           query={"defaultToGlobal": FLAG}),
        Op("PUT", "/config/{subject}", lambda c: s.set_config(c.params["subject"], c.body), "admin",
           body=CONFIG_BODY),
        Op("DELETE", "/config/{subject}", lambda c: s.delete_config(c.params["subject"]), "admin"),
        Op("POST", "/compatibility/subjects/{subject}/versions",
           lambda c: s.test_compatibility(c.params["subject"], None, c.body, c.flag("verbose")),
           "read", query={"verbose": FLAG}, body=SCHEMA_BODY),
        Op("POST", "/compatibility/subjects/{subject}/versions/{version}",
           lambda c: s.test_compatibility(c.params["subject"], c.params["version"], c.body, c.flag("verbose")),
           "read", query={"verbose": FLAG}, body=SCHEMA_BODY),
        Op("GET", "/mode", lambda c: {"mode": "READWRITE"}),
    ]

