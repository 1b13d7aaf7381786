"""BIOS settings and firmware for the lab's Redfish emulator, shaped to DMTF's schema.

sushy-tools 2.2's fake driver has neither (its BIOS routes need a driver that keeps
attributes, and its SimpleUpdate only bumps a BIOS version), so the lab serves:

- ``Systems/<id>/BIOS`` (``Bios.v1_2_0``): the attributes in effect, ``AttributeRegistry``
  naming the lab's registry, and ``@Redfish.Settings`` → ``BIOS/Settings``, which takes a
  PATCH of ``Attributes``; those wait there (pending) until the system next powers on, as a
  BIOS takes them while booting. Unknown attributes, read-only ones and values outside the
  registry are refused with 400 and change nothing.
- ``Registries`` lists ``AnvilLabBiosRegistry.v1_0_0``, whose ``Location`` is an
  ``AttributeRegistry.v1_3_0`` document (``RegistryEntries.Attributes``).
- ``UpdateService/FirmwareInventory``: one ``SoftwareInventory`` per system and component
  (``<uuid>-BIOS``, ``-BMC``, ``-NIC``; ``RelatedItem`` names the system, since one emulator
  speaks for many systems), and ``UpdateService.SimpleUpdate`` (``ImageURI``, ``Targets``):
  the image is fetched over HTTP; a lab image is JSON ``{"AnvilLabFirmware": {"Component":
  "BIOS", "Version": "2.19.1"}}``. The answer is 202 with a ``Task`` (``Location``) that runs
  ``ANVIL_UPDATE_SECONDS`` (config; default 0.3 s), then reads Completed, or Exception when the
  image is not for that component or a lab fault said so.
- Lab faults: ``POST Systems/<id>/BIOS/Actions/Oem/AnvilLab.ChangeAttributes`` changes
  attributes in effect at once (someone in the BIOS setup screen; drift), and ``POST
  Systems/<id>/Actions/Oem/AnvilLab.FailNextUpdate`` makes that system's next update fail;
  ``AnvilLab.SlowNextUpdateAnswer`` (``{"Seconds": n}``) makes the BMC take that system's next
  SimpleUpdate (task started, flash under way) but answer the POST n seconds later: a client
  stopped meanwhile never learns the task's URI.
- ``TaskService/Tasks``: the tasks, each with its ``Payload`` (``TargetUri``, ``HttpOperation``,
  ``JsonBody``) as real BMCs keep it, so a client can find an update it started and lost.

State lives in the fake driver's store (``anvil_bios``, ``anvil_bios_pending``,
``anvil_firmware``, ``anvil_fail_update``), so it persists like power does. Every SimpleUpdate
taken is appended to ``update-history.jsonl`` in the state directory (tests count flashes by it).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

UPDATE_HISTORY = "update-history.jsonl"   # one line per SimpleUpdate taken, in the state dir
TASKS = "/redfish/v1/TaskService/Tasks"
REGISTRY_ID = "AnvilLabBiosRegistry.v1_0_0"
REGISTRY_FILE = f"/redfish/v1/Registries/{REGISTRY_ID}"
REGISTRY_DOC = f"{REGISTRY_FILE}/Registry"
COMPONENTS = ("BIOS", "BMC", "NIC")
_ON_OFF = ("Enabled", "Disabled")

# name: (Type, allowed values, default, read-only, bounds)
ATTRIBUTES: dict[str, tuple[str, tuple[str, ...], Any, bool, tuple[int, int] | None]] = {
    "BootMode": ("Enumeration", ("Uefi", "LegacyBios"), "Uefi", False, None),
    "ProcVirtualization": ("Enumeration", _ON_OFF, "Enabled", False, None),
    "ProcHyperThreading": ("Enumeration", _ON_OFF, "Enabled", False, None),
    "MemPatrolScrub": ("Enumeration", ("Standard", "Extended", "Disabled"), "Standard", False, None),
    "ProcTurboMode": ("Enumeration", _ON_OFF, "Enabled", False, None),
    "SriovGlobalEnable": ("Boolean", (), False, False, None),
    "PowerProfile": ("Enumeration", ("MaxPerf", "Balanced", "PowerSaving"), "Balanced", False, None),
    "NumaNodesPerSocket": ("Integer", (), 1, False, (1, 4)),
    "AdminPhone": ("String", (), "", False, None),
    "SerialNumberLabel": ("String", (), "LAB", True, None),
}


def defaults() -> dict[str, Any]:
    return {name: spec[2] for name, spec in ATTRIBUTES.items()}


def check(attrs: dict[str, Any]) -> str | None:
    """Why the registry refuses these attributes, or None."""
    for name, value in attrs.items():
        spec = ATTRIBUTES.get(name)
        if spec is None:
            return f"The property {name} is not in the list of valid properties for the resource."
        kind, values, _, read_only, bounds = spec
        if read_only:
            return f"The property {name} is a read only property and cannot be assigned a value."
        if kind == "Enumeration" and value not in values:
            return f"The value {value!r} for the property {name} is not in the list of acceptable values."
        if kind == "Integer" and (not isinstance(value, int) or isinstance(value, bool)
                                  or (bounds and not bounds[0] <= value <= bounds[1])):
            return f"The value {value!r} for the property {name} is of a different type or out of range."
        if kind == "Boolean" and not isinstance(value, bool):
            return f"The value {value!r} for the property {name} is of a different type than the property can accept."
        if kind == "String" and not isinstance(value, str):
            return f"The value {value!r} for the property {name} is of a different type than the property can accept."
    return None


def registry_document() -> dict[str, Any]:
    entries = []
    for order, (name, (kind, values, default, read_only, bounds)) in enumerate(ATTRIBUTES.items()):
        entry: dict[str, Any] = {"AttributeName": name, "DisplayName": name, "DisplayOrder": order, "Type": kind,
                                 "ReadOnly": read_only, "Hidden": False, "DefaultValue": default,
                                 "MenuPath": "./Lab"}
        if values:
            entry["Value"] = [{"ValueName": v, "ValueDisplayName": v} for v in values]
        if bounds:
            entry["LowerBound"], entry["UpperBound"], entry["ScalarIncrement"] = bounds[0], bounds[1], 1
        entries.append(entry)
    return {
        "@odata.type": "#AttributeRegistry.v1_3_0.AttributeRegistry",
        "Id": REGISTRY_ID, "Name": "Anvil lab BIOS attribute registry", "Language": "en",
        "OwningEntity": "Anvil Lab", "RegistryVersion": "1.0.0",
        "SupportedSystems": [{"ProductName": "Lab Blade R1", "SystemId": "LAB1", "FirmwareVersion": "1.0.0"}],
        "RegistryEntries": {"Attributes": entries},
    }


def install(app: Any, fake: Any, *, system_of: Callable[[str], dict[str, Any]],
            error: Callable[[int, str], Any]) -> None:  # pragma: no cover - runs in the child
    import flask

    def drv() -> Any:
        return app.systems   # the driver instance exists only once the app runs

    def route(rule: str, methods: list[str]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        deco: Callable[[Callable[..., Any]], Callable[..., Any]] = app.route(rule, methods=methods)
        return deco
    tasks: dict[str, dict[str, Any]] = {}
    task_ids = itertools.count(1)
    lock = threading.Lock()

    def bios_of(system: dict[str, Any]) -> dict[str, Any]:
        return {**defaults(), **(system.get("anvil_bios") or {})}

    def firmware_of(system: dict[str, Any]) -> dict[str, str]:
        versions = {"BIOS": str(system.get("bios_version") or "1.0.0"), "BMC": "1.0.0", "NIC": "1.0.0"}
        versions.update(system.get("anvil_firmware") or {})
        return versions

    # sushy-tools serves BIOS routes (and a Bios link on the System) only when the driver has
    # BIOS attributes; its fake driver has none, so they come from here.
    fake.get_bios = lambda self, identity: bios_of(self._get(identity))
    fake.get_versions = lambda self, identity: {"BiosVersion": firmware_of(self._get(identity))["BIOS"]}

    def power_came_on(system: dict[str, Any]) -> None:
        """The BIOS takes its pending attributes while the system boots."""
        pending = system.get("anvil_bios_pending") or {}
        if pending:
            drv()._update(system["uuid"], anvil_bios={**bios_of(system), **pending}, anvil_bios_pending={})

    app.config["ANVIL_POWER_CAME_ON"] = power_came_on

    def bios_path(uuid: str) -> str:
        return f"/redfish/v1/Systems/{uuid}/BIOS"

    def bios_view(identity: str) -> Any:
        system = system_of(identity)
        uuid = system["uuid"]
        return flask.jsonify({
            "@odata.type": "#Bios.v1_2_0.Bios", "@odata.id": bios_path(uuid), "Id": "BIOS",
            "Name": "BIOS Configuration Current Settings", "AttributeRegistry": REGISTRY_ID,
            "Attributes": bios_of(system),
            "@Redfish.Settings": {"@odata.type": "#Settings.v1_3_5.Settings",
                                  "SettingsObject": {"@odata.id": f"{bios_path(uuid)}/Settings"},
                                  "SupportedApplyTimes": ["OnReset"]},
            "Actions": {"#Bios.ResetBios": {"target": f"{bios_path(uuid)}/Actions/Bios.ResetBios"}},
        })

    def bios_settings_view(identity: str) -> Any:
        system = system_of(identity)
        uuid = system["uuid"]
        if flask.request.method == "GET":
            return flask.jsonify({
                "@odata.type": "#Bios.v1_2_0.Bios", "@odata.id": f"{bios_path(uuid)}/Settings", "Id": "Settings",
                "Name": "BIOS Configuration Pending Settings", "AttributeRegistry": REGISTRY_ID,
                "Attributes": dict(system.get("anvil_bios_pending") or {}),
            })
        patch = flask.request.get_json(silent=True)
        if not isinstance(patch, dict) or not isinstance(patch.get("Attributes"), dict) or set(patch) - {
                "Attributes", "@Redfish.SettingsApplyTime"}:
            return error(400, "PATCH body must be {\"Attributes\": {...}}")
        problem = check(patch["Attributes"])
        if problem:
            return error(400, problem)
        with lock:
            pending = {**(drv()._get(uuid).get("anvil_bios_pending") or {}), **patch["Attributes"]}
            drv()._update(uuid, anvil_bios_pending=pending)
        return flask.Response(status=204)

    def reset_bios_view(identity: str) -> Any:
        system = system_of(identity)
        drv()._update(system["uuid"], anvil_bios_pending=defaults())
        return flask.Response(status=204)

    def registries_view() -> Any:
        links = ["/redfish/v1/Registries/Messages", REGISTRY_FILE]
        return flask.jsonify({"@odata.type": "#MessageRegistryFileCollection.MessageRegistryFileCollection",
                              "@odata.id": "/redfish/v1/Registries", "Name": "Registry File Collection",
                              "Members@odata.count": len(links), "Members": [{"@odata.id": p} for p in links]})

    app.view_functions["bios"] = bios_view
    app.view_functions["bios_settings"] = bios_settings_view
    app.view_functions["system_reset_bios"] = reset_bios_view
    app.view_functions["registry_file_collection"] = registries_view

    @route(REGISTRY_FILE, methods=["GET"])
    def anvil_registry_file() -> Any:
        return flask.jsonify({"@odata.type": "#MessageRegistryFile.v1_1_3.MessageRegistryFile",
                              "@odata.id": REGISTRY_FILE, "Id": REGISTRY_ID, "Name": "Lab BIOS registry file",
                              "Registry": REGISTRY_ID, "Languages": ["en"],
                              "Location": [{"Language": "en", "Uri": REGISTRY_DOC}]})

    @route(REGISTRY_DOC, methods=["GET"])
    def anvil_registry_doc() -> Any:
        return flask.jsonify(registry_document())

    @route("/redfish/v1/Systems/<identity>/BIOS/Actions/Oem/AnvilLab.ChangeAttributes", methods=["POST"])
    def anvil_change_bios(identity: str) -> Any:
        system = system_of(identity)
        attrs = (flask.request.get_json(silent=True) or {}).get("Attributes")
        if not isinstance(attrs, dict):
            return error(400, "Attributes must be an object")
        problem = check(attrs)
        if problem:
            return error(400, problem)
        drv()._update(system["uuid"], anvil_bios={**bios_of(system), **attrs})
        return flask.Response(status=204)

    @route("/redfish/v1/Systems/<identity>/Actions/Oem/AnvilLab.FailNextUpdate", methods=["POST"])
    def anvil_fail_next_update(identity: str) -> Any:
        system = system_of(identity)
        drv()._update(system["uuid"], anvil_fail_update=True)
        return flask.Response(status=204)

    @route("/redfish/v1/Systems/<identity>/Actions/Oem/AnvilLab.SlowNextUpdateAnswer", methods=["POST"])
    def anvil_slow_next_update_answer(identity: str) -> Any:
        system = system_of(identity)
        body = flask.request.get_json(silent=True)
        seconds = body.get("Seconds") if isinstance(body, dict) else None
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 < seconds <= 60:
            return error(400, "Seconds: a number of seconds, 0 < Seconds <= 60")
        drv()._update(system["uuid"], anvil_slow_update_answer=float(seconds))
        return flask.Response(status=204)

    # ---- firmware -----------------------------------------------------------------------

    inventory_path = "/redfish/v1/UpdateService/FirmwareInventory"

    def item_body(system: dict[str, Any], component: str) -> dict[str, Any]:
        uuid = system["uuid"]
        return {"@odata.type": "#SoftwareInventory.v1_10_0.SoftwareInventory",
                "@odata.id": f"{inventory_path}/{uuid}-{component}", "Id": f"{uuid}-{component}",
                "Name": component, "Version": firmware_of(system)[component], "Updateable": True,
                "Manufacturer": "Anvil Lab", "Status": {"State": "Enabled", "Health": "OK"},
                "RelatedItem": [{"@odata.id": f"/redfish/v1/Systems/{uuid}"}]}

    def update_service_view() -> Any:
        return flask.jsonify({
            "@odata.type": "#UpdateService.v1_11_0.UpdateService", "@odata.id": "/redfish/v1/UpdateService",
            "Id": "UpdateService", "Name": "Update Service", "ServiceEnabled": True,
            "Status": {"State": "Enabled", "Health": "OK"},
            "FirmwareInventory": {"@odata.id": inventory_path},
            "Actions": {"#UpdateService.SimpleUpdate": {
                "target": "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate",
                "TransferProtocol@Redfish.AllowableValues": ["HTTP", "HTTPS"]}},
        })

    @route(inventory_path, methods=["GET"])
    def anvil_firmware_inventory() -> Any:
        links = [f"{inventory_path}/{u}-{c}" for u in drv().systems for c in COMPONENTS]
        return flask.jsonify({"@odata.type": "#SoftwareInventoryCollection.SoftwareInventoryCollection",
                              "@odata.id": inventory_path, "Name": "Firmware Collection",
                              "Members@odata.count": len(links), "Members": [{"@odata.id": p} for p in links]})

    def split_item(item: str) -> tuple[dict[str, Any], str]:
        uuid, _, component = item.rpartition("-")
        if component not in COMPONENTS:
            flask.abort(404)
        return system_of(uuid), component

    @route(f"{inventory_path}/<item>", methods=["GET"])
    def anvil_firmware_item(item: str) -> Any:
        system, component = split_item(item)
        return flask.jsonify(item_body(system, component))

    def run_update(tid: str, uuid: str, component: str, image_uri: str) -> None:
        seconds = float(app.config.get("ANVIL_UPDATE_SECONDS") or 0.3)
        state, message = "Exception", "update failed"
        try:
            with urllib.request.urlopen(image_uri, timeout=10) as resp:
                image = json.loads(resp.read(1 << 20))
            lab = image.get("AnvilLabFirmware") if isinstance(image, dict) else None
            time.sleep(seconds)
            system = drv()._get(uuid)
            if system.get("anvil_fail_update"):
                drv()._update(uuid, anvil_fail_update=False)
                message = f"flashing {component} failed (lab fault)"
            elif not isinstance(lab, dict) or lab.get("Component") != component or not lab.get("Version"):
                message = f"{image_uri} is not a {component} image"
            else:
                drv()._update(uuid, anvil_firmware={**(system.get("anvil_firmware") or {}),
                                                    component: str(lab["Version"])})
                state, message = "Completed", f"{component} updated to {lab['Version']}"
        except Exception as exc:  # any failure of the fetch is the task's failure, as on a BMC
            message = f"fetching {image_uri} failed: {exc}"
        with lock:
            tasks[tid].update(TaskState=state, TaskStatus="OK" if state == "Completed" else "Critical",
                              PercentComplete=100, EndTime=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              Messages=[{"MessageId": "Update.1.0.UpdateSuccessful" if state == "Completed"
                                         else "Update.1.0.ApplyFailed", "Message": message}])

    def simple_update_view() -> Any:
        body = flask.request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("ImageURI"), str):
            return error(400, "SimpleUpdate needs ImageURI")
        targets = body.get("Targets")
        if not isinstance(targets, list) or len(targets) != 1 or not isinstance(targets[0], str):
            return error(400, "SimpleUpdate here takes exactly one Targets entry (a FirmwareInventory member)")
        item = targets[0].rstrip("/")
        if not item.startswith(inventory_path + "/"):
            return error(400, f"Targets: {item} is not a FirmwareInventory member")
        system, component = split_item(item.rsplit("/", 1)[1])
        tid = f"anvil-{next(task_ids)}"
        path = f"{TASKS}/{tid}"
        line = json.dumps({"t": time.time(), "system": system["uuid"], "component": component,
                           "image": body["ImageURI"]}) + "\n"
        with lock:
            with open(Path(app.config["SUSHY_EMULATOR_STATE_DIR"]) / UPDATE_HISTORY, "a") as f:
                f.write(line)
            tasks[tid] = {"@odata.type": "#Task.v1_4_3.Task", "@odata.id": path, "Id": tid, "Name": "Update",
                          "TaskState": "Running", "TaskStatus": "OK", "PercentComplete": 0,
                          "StartTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "Messages": [],
                          "Payload": {"TargetUri": flask.request.path, "HttpOperation": "POST",
                                      "HttpHeaders": [], "JsonBody": json.dumps(body)}}
            answer = dict(tasks[tid])
        threading.Thread(target=run_update, args=(tid, system["uuid"], component, body["ImageURI"]),
                         daemon=True).start()
        slow = system.get("anvil_slow_update_answer")
        if slow:
            drv()._update(system["uuid"], anvil_slow_update_answer=None)
            time.sleep(float(slow))
        return flask.Response(json.dumps(answer), status=202, mimetype="application/json",
                              headers={"Location": path})

    @route(TASKS, methods=["GET"])
    def anvil_tasks() -> Any:
        with lock:
            links = [f"{TASKS}/{tid}" for tid in tasks]
        return flask.jsonify({"@odata.type": "#TaskCollection.TaskCollection", "@odata.id": TASKS,
                              "Name": "Task Collection", "Members@odata.count": len(links),
                              "Members": [{"@odata.id": p} for p in links]})

    @route(f"{TASKS}/<tid>", methods=["GET"])
    def anvil_task(tid: str) -> Any:
        with lock:
            task = tasks.get(tid)
            if task is None:
                flask.abort(404)
            return flask.jsonify(dict(task))

    app.view_functions["UpdateService.update_service_resource"] = update_service_view
    app.view_functions["UpdateService.update_service_simple_update"] = simple_update_view
