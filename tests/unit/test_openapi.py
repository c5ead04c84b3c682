"""The OpenAPI document: valid OpenAPI 3.1, and a real schema for every body of every route."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import attrs
import jsonschema
import pytest
from openapi_spec_validator import validate as validate_openapi

from caxton.agents.logs import LogLine
from caxton.agents.problems import SpecProblem
from caxton.components import ComponentState, ComponentStatus
from caxton.events import Event
from caxton.http import schemas
from caxton.http.app import CORE_TABLES
from caxton.http.openapi import build_openapi
from caxton.http.routes import RouteTable
from caxton.http.schemagen import SchemaError, Shape, attrs_schema, type_schema
from caxton.memory.types import (
    Entity,
    Graph,
    GraphEdge,
    GraphNode,
    ImportReport,
    MergeStrategy,
    Relation,
    Scope,
    SearchHit,
)
from caxton.messages import Message
from caxton.messaging.conversations import Conversation, ConversationSummary
from caxton.messaging.routing import Provider
from caxton.ops.archive import FileEntry, Manifest
from caxton.ops.backup import BackupReport
from caxton.ops.safe_mode import SafeModeStatus
from caxton.ops.verify import Finding, VerifyReport
from caxton.security.roles import Role

SPECS = [spec for table in CORE_TABLES for spec in table.routes]
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_openapi(SPECS)


def validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Validator:
    """A validator for ``schema`` whose ``#/components/...`` references reach the document."""
    return jsonschema.Draft202012Validator(
        {"components": document["components"], "allOf": [schema]}
    )


def check(document: dict[str, Any], name: str, instance: object) -> None:
    validator(document, {"$ref": f"#/components/schemas/{name}"}).validate(instance)


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def trivial(document: dict[str, Any], schema: dict[str, Any]) -> bool:
    """Whether ``schema`` says nothing more than "some JSON object"."""
    schema = resolve(document, schema)
    keys = set(schema) - {"type", "description"}
    return not keys


# ------------------------------------------------------------------------------- the document


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate_openapi(document)
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    names = set(document["components"]["schemas"])
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            target = node.get("$ref")
            if isinstance(target, str) and target.startswith("#/components/schemas/"):
                found.append(target.rsplit("/", 1)[1])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert found
    assert set(found) <= names, sorted(set(found) - names)


def test_every_route_has_a_schema_for_its_bodies(document: dict[str, Any]) -> None:
    missing = [spec.endpoint for spec in SPECS if spec.endpoint not in schemas.OPERATIONS]
    assert not missing, f"add these routes to caxton.http.schemas.OPERATIONS: {missing}"
    for spec in SPECS:
        for method in spec.methods:
            operation = document["paths"][spec.openapi_path][method.lower()]
            where = f"{method} {spec.rule}"
            if spec.websocket:
                frames = operation["x-caxton-frames"]
                assert not trivial(document, frames["send"]), where
                continue
            if spec.request_body and method in ("POST", "PUT", "PATCH"):
                content = operation["requestBody"]["content"]
                assert not trivial(document, content["application/json"]["schema"]), where
            successes = {code: r for code, r in operation["responses"].items() if code[0] == "2"}
            assert successes, where
            for code, response in successes.items():
                schema = response["content"]["application/json"]["schema"]
                assert not trivial(document, schema), f"{where} {code}"
            for code in ("4XX", "5XX", "default"):
                error = operation["responses"][code]
                assert error == {"$ref": "#/components/responses/Error"}, where


def test_no_schema_for_a_route_that_does_not_exist() -> None:
    endpoints = {spec.endpoint for spec in SPECS}
    assert set(schemas.OPERATIONS) <= endpoints, sorted(set(schemas.OPERATIONS) - endpoints)


def test_narrowed_query_parameters_are_declared_ones() -> None:
    for spec in SPECS:
        declared = {q.name: q.type for q in spec.query}
        narrowed = schemas.OPERATIONS[spec.endpoint].query
        for name, schema in narrowed.items():
            assert name in declared, f"{spec.endpoint}: no query parameter {name}"
            assert schema["type"] == declared[name], f"{spec.endpoint}: {name}"


def test_a_route_without_a_schema_is_still_listed_untyped() -> None:
    """A route added without an entry keeps the document whole (the test above fails)."""
    table = RouteTable("extra")

    @table.route("/api/v1/extra", methods=("POST",), role=Role.USER, summary="x", request_body="{}")
    async def extra() -> None:  # never called
        return None

    document = build_openapi(table.routes)
    operation = document["paths"]["/api/v1/extra"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {"type": "object"}
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {}
    validate_openapi(document)


def test_the_error_envelope(document: dict[str, Any]) -> None:
    error = {"error": {"code": "NOT_FOUND", "message": "m", "details": {}, "request_id": None}}
    check(document, "Error", error)
    with pytest.raises(jsonschema.ValidationError):
        check(document, "Error", {"error": {"code": "NOT_FOUND", "message": "m"}})


# --------------------------------------------------------- generated schemas match the values


def entity(name: str = "Whiskers") -> Entity:
    return Entity(
        name=name,
        entity_type="pet",
        observations=("a small cat",),
        scope=Scope.GLOBAL,
        agent=None,
        metadata={"age": 3, "tags": ["x"]},
        created_at=NOW,
        updated_at=NOW,
    )


def test_values_answer_in_the_shape_their_schema_declares(document: dict[str, Any]) -> None:
    relation = Relation(
        source="Whiskers",
        target="Ada",
        relation_type="owned_by",
        strength=0.5,
        confidence=1.0,
        created_at=NOW,
    )
    message = Message(sender="client", receiver="echo", content={"text": "hi"})
    summary = ConversationSummary(
        conversation_id="c1",
        status="active",
        participants=("client", "echo"),
        created_at=1.0,
        last_activity=2.0,
        message_count=1,
    )
    graph = Graph(
        root="Whiskers",
        nodes=(GraphNode(name="Ada", entity_type="person", depth=1, observations=()),),
        edges=(GraphEdge(source="Whiskers", target="Ada", relation_type="x", strength=1.0),),
    )
    report = ImportReport(
        merge_strategy=MergeStrategy.SKIP_EXISTING,
        entities_created=1,
        entities_updated=0,
        entities_skipped=0,
        relations_created=0,
        relations_updated=0,
        relations_skipped=0,
    )
    manifest = Manifest(
        format=1,
        version="1",
        created_at="2026-01-01T00:00:00+00:00",
        files=(FileEntry(path="database/caxton.duckdb", sha256="ab", size=3),),
    )
    backup = BackupReport(
        path=Path("/tmp/x.tar.gz"),
        size_bytes=10,
        sha256="ab",
        manifest=manifest,
        seconds=0.5,
        source="server",
    )
    verify = VerifyReport(
        source="server",
        database="/d",
        comprehensive=False,
        tables={"entities": 1},
        findings=(Finding(check="tables", severity="info", message="ok"),),
    )
    problem = SpecProblem(file="<api>", line=3, column=1, key="name", message="m")
    samples: list[tuple[str, object]] = [
        ("Entity", entity().to_json()),
        ("Relation", relation.to_json()),
        ("SearchHit", SearchHit(entity=entity(), similarity=0.25).to_json()),
        ("Graph", graph.to_json()),
        ("ImportReport", report.to_json()),
        ("Message", message.as_json()),
        ("Message", message.reply("done", sender="echo").as_json()),
        ("ConversationSummary", summary.as_json()),
        ("Conversation", Conversation(summary=summary, messages=(message,)).as_json()),
        ("Provider", Provider(agent="a", status="running", version=None, in_flight=0).as_json()),
        ("Problem", problem.as_dict()),
        ("LogLine", LogLine(agent="echo", level="warn", message="m").as_json()),
        ("SafeModeStatus", SafeModeStatus(enabled=True, since="now", reason="r").to_json()),
        ("BackupReport", backup.to_json()),
        ("VerifyReport", verify.to_json()),
        ("Event", Event(type="agent_deployed", agent="echo", data={"v": 1}).as_json()),
        (
            "ComponentStatus",
            attrs.asdict(
                ComponentStatus(name="store", state=ComponentState.RUNNING),
                value_serializer=lambda _i, _f, v: v.value if isinstance(v, ComponentState) else v,
            ),
        ),
    ]
    for name, instance in samples:
        check(document, name, instance)


def test_requests_are_checked_like_the_parsers_check_them(document: dict[str, Any]) -> None:
    check(document, "Envelope", {"receiver": "echo", "content": "hi"})
    check(document, "Envelope", {"capability": "echo", "content": {"a": 1}})
    for bad in (
        {"content": "no destination"},
        {"receiver": "echo", "capability": "echo", "content": "both"},
        {"receiver": "echo"},
        {"receiver": "echo", "content": "x", "performative": "shout"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            check(document, "Envelope", bad)
    check(document, "NewEntity", {"name": "a", "entity_type": "t"})
    with pytest.raises(jsonschema.ValidationError):
        check(document, "NewEntity", {"name": "a", "entity_type": "t", "scope": "everyone"})
    check(document, "NewRelation", {"from": "a", "to": "b", "relation_type": "r"})
    with pytest.raises(jsonschema.ValidationError):
        check(document, "NewRelation", {"source": "a", "target": "b", "relation_type": "r"})
    check(document, "CanaryRequest", {"version": "1.0.0", "traffic_percentage": 20})
    with pytest.raises(jsonschema.ValidationError):
        check(document, "CanaryRequest", {"version": "1.0.0"})
    check(document, "SafeModeRequest", {"enabled": True})
    with pytest.raises(jsonschema.ValidationError):
        check(document, "SafeModeRequest", {"reason": "x"})
    check(document, "AgentFile", {"manifest": "name = 'x'", "wasm_module": "AA=="})
    with pytest.raises(jsonschema.ValidationError):
        check(document, "AgentFile", {"wasm_module": "AA=="})
    check(document, "AgentMessageRequest", {"content": "hi", "conversation_id": "c"})
    with pytest.raises(jsonschema.ValidationError):
        check(document, "AgentMessageRequest", {"conversation_id": "c"})


# ------------------------------------------------------------------------------- the generator


@attrs.frozen(kw_only=True)
class _Inner:
    source: str
    weight: float


class _Colour(str):
    pass


@attrs.frozen(kw_only=True)
class _Sample:
    """A sample value.

    More text that is not the summary.
    """

    name: str
    count: int
    ratio: float
    flag: bool
    note: str | None
    scope: Scope
    kind: Literal["a", "b"]
    tags: tuple[str, ...]
    pair: tuple[int, str]
    counts: dict[str, int]
    extra: dict[str, Any]
    when: dt.datetime
    path: Path
    inner: _Inner
    maybe_inner: _Inner | None
    number: int | float
    hidden: int = 0


def test_the_generator_reads_fields_and_annotations() -> None:
    schema = attrs_schema(
        Shape(
            cls=_Sample,
            rename={"name": "label"},
            exclude=frozenset({"hidden"}),
            extra={"computed": {"type": "boolean"}},
        ),
        nested={_Inner: "Inner"},
    )
    props = schema["properties"]
    assert schema["description"] == "A sample value."
    assert "name" not in props
    assert props["label"] == {"type": "string"}
    assert props["count"] == {"type": "integer"}
    assert props["ratio"] == {"type": "number"}
    assert props["flag"] == {"type": "boolean"}
    assert props["note"] == {"type": ["string", "null"]}
    assert props["scope"] == {"type": "string", "enum": ["agent", "workspace", "global"]}
    assert props["kind"] == {"type": "string", "enum": ["a", "b"]}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["pair"]["prefixItems"] == [{"type": "integer"}, {"type": "string"}]
    assert props["counts"] == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert props["extra"] == {"type": "object"}
    assert props["when"] == {"type": "string", "format": "date-time"}
    assert props["path"] == {"type": "string"}
    assert props["inner"] == {"$ref": "#/components/schemas/Inner"}
    assert props["maybe_inner"] == {
        "anyOf": [{"$ref": "#/components/schemas/Inner"}, {"type": "null"}]
    }
    assert props["number"] == {"type": "number"}
    assert props["computed"] == {"type": "boolean"}
    assert "hidden" not in props
    assert schema["required"] == [*(k for k in props)]


def test_a_request_shape_requires_only_fields_without_defaults() -> None:
    schema = attrs_schema(Shape(cls=_Sample, request=True, only=("name", "hidden")))
    assert list(schema["properties"]) == ["name", "hidden"]
    assert schema["required"] == ["name"]


def test_an_unnamed_nested_class_is_inlined() -> None:
    schema = type_schema(_Inner, {})
    assert schema["properties"] == {"source": {"type": "string"}, "weight": {"type": "number"}}


def test_the_generator_refuses_what_it_cannot_describe() -> None:
    with pytest.raises(SchemaError, match="no field nope"):
        attrs_schema(Shape(cls=_Inner, exclude=frozenset({"nope"})))
    with pytest.raises(SchemaError, match="not an attrs class"):
        attrs_schema(Shape(cls=_Colour))
    with pytest.raises(SchemaError, match="no JSON Schema"):
        type_schema(complex, {}, where="x.y")
