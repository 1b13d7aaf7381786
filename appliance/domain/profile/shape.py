"""The profile's structure as the XML codec and the XSD generator see it.

Both walk the model's own JSON Schema (``Profile.model_json_schema()``), so the XML
form follows the model: which fields are objects, lists, maps, unions, integers or
booleans is read from the model, never guessed from the document.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from appliance.domain.profile.model import Profile

NAMESPACE = "urn:anvil:profile:v1"
# Lists are repeated singular elements inside their plural parent (DESIGN §7).
ITEM_NAMES = {"nics": "nic", "hbas": "hba", "tagged": "vlan"}
ENTRY = "entry"
ENTRY_KEY = "key"

Schema = dict[str, Any]


class Kind(StrEnum):
    OBJECT = "object"
    UNION = "union"
    LIST = "list"
    MAP = "map"
    INT = "int"
    BOOL = "bool"
    STR = "str"


@dataclass(frozen=True, slots=True)
class Shape:
    kind: Kind
    schema: Schema  # the resolved schema (no $ref, no nullable wrapper)
    optional: bool


@functools.cache
def profile_schema() -> Schema:
    """The model's JSON Schema (validation mode), computed once."""
    return Profile.model_json_schema()


def resolve(schema: Schema) -> Shape:
    """Follow ``$ref`` and ``anyOf [X, null]`` and classify what is left."""
    defs: Schema = profile_schema().get("$defs", {})
    optional = False
    while True:
        if "$ref" in schema:
            schema = defs[schema["$ref"].rsplit("/", 1)[1]]
        elif "anyOf" in schema:
            rest = [s for s in schema["anyOf"] if s.get("type") != "null"]
            optional = optional or len(rest) < len(schema["anyOf"])
            if len(rest) != 1:
                break
            schema = rest[0]
        else:
            break
    if "oneOf" in schema and "discriminator" in schema:
        return Shape(Kind.UNION, schema, optional)
    kind = schema.get("type")
    if kind == "object":
        return Shape(Kind.OBJECT if "properties" in schema else Kind.MAP, schema, optional)
    if kind == "array":
        return Shape(Kind.LIST, schema, optional)
    if kind == "integer":
        return Shape(Kind.INT, schema, optional)
    if kind == "boolean":
        return Shape(Kind.BOOL, schema, optional)
    return Shape(Kind.STR, schema, optional)


def union_variants(shape: Shape) -> dict[str, Schema]:
    """Tag → resolved variant schema of a discriminated union."""
    mapping: dict[str, str] = shape.schema["discriminator"]["mapping"]
    return {tag: resolve({"$ref": ref}).schema for tag, ref in mapping.items()}


def union_tag_field(shape: Shape) -> str:
    name: str = shape.schema["discriminator"]["propertyName"]
    return name
