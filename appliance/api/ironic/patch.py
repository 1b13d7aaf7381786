"""JSON Patch (RFC 6902) on a node's free-form fields: ``add``, ``replace`` and ``remove`` below
``/extra``, ``/properties``, ``/instance_info`` and ``/driver_info``, as Ironic's clients send
them (``baremetal node set --extra k=v`` is ``add /extra/k``). Pure: the caller decides what a
changed field means for Anvil."""

from __future__ import annotations

import copy
from typing import Any

from appliance.errors import Issue, ValidationError

PATCHABLE = ("extra", "properties", "instance_info", "driver_info")


def _pointer(path: Any, where: str) -> list[str]:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValidationError([Issue(where, f"{path!r} is not a JSON pointer (/field/key)")])
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def apply(doc: dict[str, Any], ops: Any) -> tuple[dict[str, Any], set[str]]:
    """``doc`` (top-level fields) with ``ops`` applied, and the top-level fields they touched.
    Raises ValidationError naming the operation; top-level fields other than ``doc``'s keys are
    left to the caller (it refuses them before calling)."""
    if not isinstance(ops, list) or not ops:
        raise ValidationError([Issue("body", "a JSON Patch is a non-empty list of operations")])
    out = copy.deepcopy(doc)
    touched: set[str] = set()
    for i, op in enumerate(ops):
        where = f"[{i}]"
        if not isinstance(op, dict) or op.get("op") not in ("add", "replace", "remove"):
            raise ValidationError([Issue(f"{where}.op", "must be add, replace or remove")])
        parts = _pointer(op.get("path"), f"{where}.path")
        top, keys = parts[0], parts[1:]
        if top not in out:
            raise ValidationError([Issue(f"{where}.path", f"/{top} cannot be patched here")])
        if op["op"] != "remove" and "value" not in op:
            raise ValidationError([Issue(f"{where}.value", "is required")])
        touched.add(top)
        if not keys:
            if op["op"] == "remove":
                out[top] = {}
            elif not isinstance(op["value"], dict):
                raise ValidationError([Issue(f"{where}.value", f"/{top} is an object")])
            else:
                out[top] = op["value"]
            continue
        parent = out[top]
        for k in keys[:-1]:
            if not isinstance(parent, dict):
                raise ValidationError([Issue(f"{where}.path", f"{op['path']} goes through a value that is not "
                                                              "an object")])
            parent = parent.setdefault(k, {}) if op["op"] == "add" else parent.get(k)
            if parent is None:
                raise ValidationError([Issue(f"{where}.path", f"{op['path']} does not exist")])
        if not isinstance(parent, dict):
            raise ValidationError([Issue(f"{where}.path", f"{op['path']}: the parent is not an object")])
        last = keys[-1]
        if op["op"] in ("remove", "replace") and last not in parent:
            raise ValidationError([Issue(f"{where}.path", f"{op['path']} does not exist")])
        if op["op"] == "remove":
            del parent[last]
        else:
            parent[last] = op["value"]
    return out, touched
