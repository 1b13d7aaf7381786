"""JSON Schemas of the API's bodies and replies (published in the OpenAPI document)."""

from __future__ import annotations

from typing import Any

from appliance.api.spec import NAME, STR, nullable

INT = {"type": "integer"}
OBJ: dict[str, Any] = {"type": "object"}
NSTR = nullable("string")
NINT = nullable("integer")


def obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def page_of(item: dict[str, Any], *, cursor: bool = False) -> dict[str, Any]:
    props: dict[str, Any] = {"items": {"type": "array", "items": item}, "total": INT}
    if cursor:
        props["next"] = NSTR
    return {"type": "object", "required": list(props), "properties": props}


NIC = obj(["name", "mac"], name=STR, mac=STR, switch=NSTR, port=NSTR)
BLADE = obj(["name", "state", "driver", "bmc"], name=STR, state=STR, driver=STR, bmc=STR, chassis=NSTR, slot=NINT,
            cpus=NINT, memoryGiB=NINT, nics={"type": "array", "items": NIC}, profile=NSTR, tenant=NSTR,
            stateReason=NSTR,
            power={**NSTR, "description": "power as the monitor last sampled it (null: no sample yet)"},
            health={**NSTR, "description": "the BMC's health rollup at that sample, or unreachable"},
            healthOk=nullable("boolean"), healthDetail=NSTR, healthAt=NSTR,
            healthAge={**NINT, "description": "seconds since that sample"},
            firmware={**NSTR, "description": "the last firmware compliance reading: BASELINE ✓, or what differs"})
BLADE_DETAIL = {**BLADE, "properties": {**BLADE["properties"], "facts": OBJ, "username": STR, "password": STR}}
ENROLL = {
    "type": "object", "additionalProperties": False, "required": ["name", "bmc", "username", "password"],
    "properties": {
        "name": NAME, "bmc": {"type": "string", "minLength": 1, "maxLength": 512},
        "username": {"type": "string", "minLength": 1, "maxLength": 63},
        "password": {"type": "string", "minLength": 1, "maxLength": 255}, "driver": nullable("string"),
        "verifyTls": {"type": "boolean"}, "cpus": nullable("integer", minimum=0, maximum=100000),
        "memoryGiB": nullable("integer", minimum=0, maximum=10000000), "chassis": nullable("string", maxLength=63),
        "slot": nullable("integer", minimum=0, maximum=100000),
        "nics": {"type": "array", "maxItems": 64, "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "mac"],
            "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 63}, "mac": STR,
                           "switch": NSTR, "port": NSTR}}},
        "facts": OBJ,
    },
}
POWER = {"type": "object", "additionalProperties": False, "required": ["action"],
         "properties": {"action": {"enum": ["on", "off", "soft-off", "reset"]}}}
POWER_STATE = obj(["blade", "power"], blade=STR, power=STR, action=NSTR)
BOOT = {"type": "object", "additionalProperties": False, "required": ["device"],
        "properties": {"device": {"enum": ["network", "disk"]}, "persistent": {"type": "boolean"},
                       "mode": {"enum": ["uefi", "legacy"]}}}
BOOT_STATE = obj(["blade", "device", "mode", "persistent"], blade=STR, device=STR, mode=STR,
                 persistent={"type": "boolean"})
MAINTENANCE = {"type": "object", "additionalProperties": False, "required": ["on"],
               "properties": {"on": {"type": "boolean"}, "reason": {"type": "string", "maxLength": 512}}}
HEALTH = obj(["blade", "state"], blade=STR, state=STR, reason=NSTR)
COUNTS = obj(["total", "spare", "committed", "inUse", "failed", "maintenance"], total=INT, spare=INT, committed=INT,
             inUse=INT, failed=INT, maintenance=INT)
TALLY = obj(["name", "blades", "cpus", "memoryGiB"], name=STR, blades=COUNTS, cpus=COUNTS, memoryGiB=COUNTS)
CAPACITY = obj(["spare", "stamped", "failed", "maintenance", "total", "byState", "blades", "cpus", "memoryGiB",
                "pools", "chassis", "tenants"], spare=INT, stamped=INT, failed=INT, maintenance=INT, total=INT,
               byState={"type": "object", "additionalProperties": INT}, blades=COUNTS, cpus=COUNTS, memoryGiB=COUNTS,
               pools={"type": "array", "items": TALLY}, chassis={"type": "array", "items": TALLY},
               tenants={"type": "array", "items": TALLY})
RACK = {"type": "array", "items": obj(["chassis", "blades"], chassis=STR, blades={"type": "array", "items": obj(
    ["name", "state"], name=STR, state=STR, slot=NINT, profile=NSTR, power=NSTR, health=NSTR, healthAge=NINT)})}

PROFILE = obj(["name", "tenant", "kind", "state"], name=STR, tenant=STR, kind=STR, state=STR, boot=NSTR,
              identities=INT, updated=STR, blade=NSTR)
PROFILE_DETAIL = {**PROFILE, "properties": {**PROFILE["properties"], "heldIdentities": {"type": "array", "items": obj(
    ["path", "kind", "value"], path=STR, kind=STR, value=STR)}, "document": OBJ,
    "warnings": {"type": "array", "items": STR, "description": "what the import accepted but you should know"}}}
VALID = obj(["valid", "kind", "name", "tenant", "checked"], valid={"type": "boolean"}, kind=STR, name=STR, tenant=STR,
            checked={"type": "array", "items": {"enum": ["document", "store"]}},
            warnings={"type": "array", "items": STR})
ASSIGN = {"type": "object", "additionalProperties": False, "properties": {
    "blade": nullable("string", maxLength=63), "pool": nullable("string", maxLength=63),
    "tenant": nullable("string", maxLength=63)}}
RELEASE = {"type": "object", "additionalProperties": False, "properties": {"tenant": nullable("string", maxLength=63)}}
PLACEMENT = obj(["best", "chosen", "rejected"], best=NSTR, chosen={"type": "array", "items": STR},
                rejected={"type": "array", "items": obj(["blade", "reason"], blade=STR, reason=STR)})
INSTANTIATE = {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {"name": NAME}}

STEP = obj(["name", "state"], name=STR, state=STR, attempts=INT, error=NSTR, result=nullable("object"))
JOB = obj(["id", "kind", "subject", "state", "progress", "steps"], id=STR, kind=STR, subject=STR, tenant=NSTR,
          state=STR, blade=NSTR, error=NSTR, createdAt=STR, finishedAt=NSTR, createdBy=NSTR,
          durationSeconds={"type": "number", "description": "submission to end (to now, while it runs)"},
          progress=obj(["step", "of"], step=INT, of=INT, current=NSTR, waitingFor=NSTR),
          steps={"type": "array", "items": STEP})

IDENTITY_POOL = obj(["name", "kind", "start", "end", "size", "used", "free"], name=STR, kind=STR, start=STR, end=STR,
                    prefix=NSTR, size=INT, used=INT, free=INT)
IDENTITY_POOL_NEW = {"type": "object", "additionalProperties": False, "required": ["name", "kind", "start", "end"],
                     "properties": {"name": NAME, "kind": {"enum": ["mac", "wwpn", "wwnn", "uuid", "iqn"]},
                                    "start": {"type": "string", "maxLength": 255},
                                    "end": {"type": "string", "maxLength": 255}, "prefix": NSTR}}
BLADE_POOL = obj(["name", "blades", "available"], name=STR, tenant=NSTR, description=STR,
                 blades={"type": "array", "items": STR}, available=INT, firmwareBaseline=NSTR, firmwarePolicy=NSTR)
BLADE_POOL_NEW = {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {
    "name": NAME, "tenant": nullable("string", maxLength=63), "description": {"type": "string", "maxLength": 255},
    "blades": {"type": "array", "items": {"type": "string", "maxLength": 63}, "maxItems": 10000},
    "firmwareBaseline": {**nullable("string", maxLength=63), "description": "checked by a stamp onto the pool's "
                         "blades when the profile names none; firmware compliance/update of the pool default to it"},
    "firmwarePolicy": {**nullable("string"), "enum": ["report", "refuse", "update-first", None],
                       "description": "what that stamp does with a blade that does not comply (default: report)"}}}
_POOL_FIELDS: dict[str, Any] = BLADE_POOL_NEW["properties"]  # type: ignore[assignment]
BLADE_POOL_FIRMWARE = {"type": "object", "additionalProperties": False, "required": ["firmwareBaseline"],
                       "properties": {k: _POOL_FIELDS[k] for k in ("firmwareBaseline", "firmwarePolicy")}}
SWITCH = obj(["name", "driver", "address"], name=STR, driver=STR, address=STR, username=STR, password=NSTR,
             privacy=NSTR, cabled=INT, cables={"type": "array", "items": OBJ}, createdAt=STR)

AUDIT = obj(["id", "at", "who", "origin", "action", "resource", "name", "hash", "prevHash"], id=INT, at=STR, who=STR,
            origin=STR, action=STR, resource=STR, name=STR, tenant=NSTR, before=nullable("object"),
            after=nullable("object"), hash=STR, prevHash=STR,
            summary={**STR, "description": "what happened, as a sentence"})
VERIFY = obj(["ok", "checked"], ok={"type": "boolean"}, checked=INT, keyed=INT, firstBad=NINT, reason=NSTR,
             head={"type": ["object", "null"], "properties": {"count": INT, "lastId": INT, "lastHash": STR}})
USER = obj(["name", "role"], name=STR, role=STR, tenant=NSTR, lockedUntil=NSTR, createdAt=STR)
ROLE = {"enum": ["viewer", "operator", "admin"]}
TENANT = nullable("string", pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
USER_NEW = {"type": "object", "additionalProperties": False, "required": ["name", "password", "role"], "properties": {
    "name": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9._-]{0,62}$"},
    "password": {"type": "string", "minLength": 8, "maxLength": 1024}, "role": ROLE, "tenant": TENANT}}
PASSWORD = {"type": "object", "additionalProperties": False, "required": ["password"],
            "properties": {"password": {"type": "string", "minLength": 8, "maxLength": 1024}}}
TOKEN = obj(["id", "name", "owner", "role", "state"], id=INT, name=STR, owner=STR, role=STR, tenant=NSTR, state=STR,
            createdAt=STR, expiresAt=NSTR, revokedAt=NSTR)
TOKEN_NEW = {"type": "object", "additionalProperties": False, "required": ["name", "role"], "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 63}, "role": ROLE, "tenant": TENANT,
    "expires": {"type": "string", "pattern": r"^(never|[1-9][0-9]{0,5}[dhms])$"}}}
TOKEN_CREATED = obj(["id", "name", "token"], id=INT, name=STR, token=STR, role=STR, tenant=NSTR, expiresAt=NSTR)
ROOT = obj(["version", "principal", "role"], version=STR, principal=STR, role=STR, tenant=NSTR, kind=STR)
