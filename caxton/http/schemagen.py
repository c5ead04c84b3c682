"""JSON Schema (draft 2020-12, as OpenAPI 3.1 uses it) from attrs classes: a pure generator.

The HTTP layer answers with ``to_json()``/``as_json()`` of frozen attrs values and parses
bodies into them, so their fields and annotations are the source of truth for the schemas in
the OpenAPI document. :func:`attrs_schema` reads them; a :class:`Shape` says how a class
appears on the wire where that differs from its fields (a renamed key such as ``source`` ->
``from``, a field the server keeps to itself, a value ``to_json`` computes from a property).

Objects stay open (no ``additionalProperties: false``): the server may add fields to an
answer, and clients should ignore those they do not know.
"""

from __future__ import annotations

import datetime as dt
import enum
import pathlib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from caxton.errors import JSONValue

Schema = dict[str, Any]
"""A JSON Schema object."""

ANY: Schema = {}
"""Any JSON value."""

_SCALARS: Mapping[object, Schema] = {
    str: {"type": "string"},
    bool: {"type": "boolean"},
    int: {"type": "integer"},
    float: {"type": "number"},
    type(None): {"type": "null"},
    pathlib.Path: {"type": "string"},
    dt.datetime: {"type": "string", "format": "date-time"},
    dt.date: {"type": "string", "format": "date"},
}


class SchemaError(TypeError):
    """A type the generator cannot describe (a programming error caught by the unit tests)."""


def ref(name: str) -> Schema:
    """A reference to ``#/components/schemas/<name>``."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """``schema`` or ``null``."""
    kind = schema.get("type")
    if isinstance(kind, str) and set(schema) <= {"type", "format", "description"}:
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def obj(
    properties: Mapping[str, Schema],
    *,
    required: Sequence[str] | None = None,
    description: str | None = None,
) -> Schema:
    """An open object; ``required=None`` means every property is required."""
    schema: Schema = {"type": "object", "properties": dict(properties)}
    needed = list(properties) if required is None else list(required)
    if needed:
        schema["required"] = needed
    if description:
        schema["description"] = description
    return schema


def extend(base: Schema, properties: Mapping[str, Schema], *, required: bool = True) -> Schema:
    """``base`` (an object schema or a reference to one) with more properties."""
    more = obj(properties, required=None if required else [])
    if base.get("type") == "object" and "$ref" not in base:
        merged = {**base, "properties": {**base.get("properties", {}), **more["properties"]}}
        if more.get("required"):
            merged["required"] = [*base.get("required", []), *more["required"]]
        return merged
    return {"allOf": [base, more]}


@attrs.frozen(kw_only=True)
class Shape:
    """How instances of ``cls`` appear on the wire.

    Attributes:
        cls: the attrs class.
        rename: field name -> JSON key (``{"source": "from"}``).
        only: the fields that appear, in this order (default: every field).
        exclude: fields that never appear.
        extra: keys ``to_json`` adds that are not fields (properties, computed values).
        request: a body a client sends: only fields without a default are required.
            Otherwise (an answer) every key is always present and so required.
        description: shown in the document; the class docstring's first line by default.
    """

    cls: type
    rename: Mapping[str, str] = attrs.field(factory=dict)
    only: tuple[str, ...] | None = None
    exclude: frozenset[str] = frozenset()
    extra: Mapping[str, Schema] = attrs.field(factory=dict)
    request: bool = False
    description: str | None = None


def attrs_schema(shape: Shape, nested: Mapping[type, str] | None = None) -> Schema:
    """The JSON Schema of ``shape``; attrs classes in ``nested`` become ``$ref``s by name.

    Raises:
        SchemaError: a field's annotation has no JSON form, or ``only``/``rename``/``exclude``
            name a field the class does not have.
    """
    cls = shape.cls
    if not attrs.has(cls):
        raise SchemaError(f"{cls.__qualname__} is not an attrs class")
    fields = {f.name: f for f in attrs.fields(cls)}
    named = set(shape.rename) | shape.exclude | set(shape.only or ())
    unknown = sorted(named - set(fields))
    if unknown:
        raise SchemaError(f"{cls.__qualname__} has no field {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    properties: dict[str, Schema] = {}
    required: list[str] = []
    for name in shape.only or tuple(fields):
        if name in shape.exclude:
            continue
        field = fields[name]
        key = shape.rename.get(name, name)
        properties[key] = type_schema(hints[name], nested or {}, where=f"{cls.__qualname__}.{name}")
        if not shape.request or field.default is attrs.NOTHING:
            required.append(key)
    for key, schema in shape.extra.items():
        properties[key] = schema
        if not shape.request:
            required.append(key)
    description = shape.description
    if description is None and cls.__doc__:
        description = cls.__doc__.strip().splitlines()[0]
    return obj(properties, required=required, description=description)


def type_schema(annotation: object, nested: Mapping[type, str], *, where: str = "") -> Schema:
    """The JSON Schema of a Python annotation (what ``to_json`` makes of such a value)."""
    if annotation is Any or annotation is object or annotation == JSONValue:
        return dict(ANY)
    if annotation in _SCALARS:
        return dict(_SCALARS[annotation])
    if isinstance(annotation, typing.ForwardRef):
        return dict(ANY)  # a recursive alias such as JSONValue's own members
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            values = [member.value for member in annotation]
            return _enum(values)
        if attrs.has(annotation):
            if annotation in nested:
                return ref(nested[annotation])
            return attrs_schema(Shape(cls=annotation), nested)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return _enum(list(args))
    if origin is typing.Union or origin is types.UnionType:
        return _union([type_schema(a, nested, where=where) for a in args])
    if origin in (tuple, list, Sequence, set, frozenset):
        if origin is tuple and args and (len(args) != 2 or args[1] is not Ellipsis):
            return {
                "type": "array",
                "prefixItems": [type_schema(a, nested, where=where) for a in args],
                "items": False,
            }
        return array(type_schema(args[0], nested, where=where) if args else ANY)
    if origin in (dict, Mapping):
        value = type_schema(args[1], nested, where=where) if args else ANY
        return {"type": "object", "additionalProperties": value} if value else {"type": "object"}
    raise SchemaError(f"{where}: no JSON Schema for the annotation {annotation!r}")


def _enum(values: list[Any]) -> Schema:
    if all(isinstance(v, str) for v in values):
        return {"type": "string", "enum": values}
    return {"enum": values}


def _union(members: list[Schema]) -> Schema:
    if any(m == ANY for m in members):
        return dict(ANY)
    simple = [m for m in members if set(m) == {"type"} and isinstance(m["type"], str)]
    if len(simple) == len(members):
        kinds = list(dict.fromkeys(m["type"] for m in simple))
        if set(kinds) == {"integer", "number"}:
            kinds = ["number"]
        return {"type": kinds[0] if len(kinds) == 1 else kinds}
    others = [m for m in members if m not in simple]
    if len(others) == 1 and simple == [{"type": "null"}]:
        return nullable(others[0])
    return {"anyOf": members}
