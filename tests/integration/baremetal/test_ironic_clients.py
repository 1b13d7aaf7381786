"""Ironic's own clients from PyPI against a real ``anvil serve`` over HTTPS (its self-signed
certificate given to the clients as their CA): python-ironicclient's ``baremetal`` command and
an openstacksdk script, with an Anvil token as the static token of keystoneauth's
``admin_token`` plugin (noauth-style, as Ironic standalone is driven).

    baremetal --os-auth-type admin_token --os-endpoint https://HOST:8443/baremetal \\
        --os-token "$ANVIL_TOKEN" --os-cacert STATE/tls/cert.pem node list
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.lab import procs

BAREMETAL = Path(sys.executable).parent / "baremetal"
LOCAL_PROFILE = """apiVersion: anvil/v1
kind: ServerProfile
metadata: {{name: {name}, tenant: acme}}
spec:
  requirements: {{minCpus: {cpus}}}
  identity:
    nics:
      - {{name: eth0, mac: "02:b0:00:00:00:{n:02x}", pxe: true}}
  boot: {{mode: uefi, source: {{type: local}}}}
"""


@dataclass(frozen=True)
class Served:
    url: str
    token: str
    cacert: str
    home: Path

    def env(self) -> dict[str, str]:
        """The client's environment: nothing of the caller's OS_* or ANVIL_*; its caches in ``home``."""
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "ANVIL_"))}
        return {**keep, "HOME": str(self.home), "XDG_CACHE_HOME": str(self.home / "cache")}

    def baremetal(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(BAREMETAL), "--os-auth-type", "admin_token", "--os-endpoint", f"{self.url}/baremetal",
               "--os-token", self.token, "--os-cacert", self.cacert, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=self.env())
        if ok:
            assert proc.returncode == 0, f"baremetal {' '.join(args)}: {proc.stderr}{proc.stdout}"
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.baremetal(*args, "-f", "json").stdout)

    def import_profile(self, doc: str) -> None:
        import ssl

        req = urllib.request.Request(f"{self.url}/api/v1/profiles", data=doc.encode(), method="POST",
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/yaml"})
        with urllib.request.urlopen(req, timeout=30, context=ssl.create_default_context(cafile=self.cacert)):
            pass


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``anvil serve`` with every role and its shipped defaults (HTTPS), stopped by PID."""
    work = tmp_path_factory.mktemp("baremetal-serve")
    state, ready, log = work / "state", work / "ready", work / "serve.log"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")},
           "ANVIL_STATE_DIR": str(state), "ANVIL_CONFIG": str(work / "none.toml"),
           "ANVIL_API_LISTEN": f"127.0.0.1:{procs.free_tcp_port()}",
           "ANVIL_BOOT_LISTEN": f"127.0.0.1:{procs.free_tcp_port()}"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "appliance", "serve", "--ready-file", str(ready)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    handle = procs.ProcHandle(proc.pid, ("anvil", "serve"), log, proc)
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and ready.read_text().strip()):
            assert proc.poll() is None, f"anvil serve exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"anvil serve not ready in 60 s: {log.read_text()[-2000:]}"
            time.sleep(0.1)
        url = ready.read_text().strip()
        assert url.startswith("https://")
        home = work / "home"
        home.mkdir()
        yield Served(url, (state / "admin.token").read_text().strip(), str(state / "tls" / "cert.pem"), home)
    finally:
        procs.stop(handle, timeout=20)


def test_the_baremetal_cli_enrols_manages_provides_deploys_powers_and_undeploys_a_node(served: Served) -> None:
    drivers = {d["name"] for d in served.json("driver", "list")}
    assert {"fake-hardware", "ipmi", "redfish"} <= drivers
    node = served.json("node", "create", "--driver", "fake-hardware", "--name", "cli-01", "--property", "cpus=16",
                       "--property", "memory_mb=65536", "--extra", "rack=r7")
    assert node["provision_state"] == "enroll" and node["properties"] == {"cpus": 16, "memory_mb": 65536}
    served.baremetal("node", "manage", "cli-01", "--wait", "60")
    served.baremetal("node", "provide", "cli-01", "--wait", "60")
    port = served.json("port", "create", "52:54:00:00:10:01", "--node", node["uuid"])
    assert port["node_uuid"] == node["uuid"]
    ports = served.json("port", "list", "--node", "cli-01")
    assert [p["address"] for p in ports] == ["52:54:00:00:10:01"]
    listed = {n["name"]: n for n in served.json("node", "list")}
    assert listed["cli-01"]["provision_state"] == "available" and listed["cli-01"]["maintenance"] is False

    # Nothing to stamp yet: the client shows Anvil's reason, from Ironic's error document.
    refused = served.baremetal("node", "deploy", "cli-01", ok=False)
    assert refused.returncode != 0 and "instance_info needs anvil_profile" in refused.stderr
    served.import_profile(LOCAL_PROFILE.format(name="cli-web", cpus=8, n=1))
    served.baremetal("node", "set", "cli-01", "--instance-info", "anvil_profile=acme/cli-web")
    served.baremetal("node", "deploy", "cli-01", "--wait", "60")
    shown = served.json("node", "show", "cli-01")
    assert (shown["provision_state"], shown["power_state"], shown["owner"]) == ("active", "power on", "acme")
    assert shown["instance_uuid"]

    served.baremetal("node", "power", "off", "cli-01")
    assert served.json("node", "show", "cli-01", "--fields", "power_state")["power_state"] == "power off"
    served.baremetal("node", "power", "on", "cli-01")
    assert served.json("node", "show", "cli-01", "--fields", "power_state")["power_state"] == "power on"

    served.baremetal("node", "undeploy", "cli-01", "--wait", "60")
    shown = served.json("node", "show", "cli-01")
    assert (shown["provision_state"], shown["power_state"], shown["instance_uuid"]) == ("available", "power off",
                                                                                      None)


def test_openstacksdk_waits_for_many_nodes_and_sees_a_failed_deploy(served: Served) -> None:
    import openstack
    from openstack import exceptions

    conn = openstack.connect(auth_type="admin_token",
                             auth={"endpoint": f"{served.url}/baremetal/v1", "token": served.token},
                             cacert=served.cacert, load_yaml_config=False, load_envvars=False)
    try:
        bm = conn.baremetal
        nodes = [bm.create_node(driver="fake-hardware", name=f"sdk-{i}", properties={"cpus": 16})
                 for i in range(3)]
        assert {n.provision_state for n in nodes} == {"enroll"}
        for i, n in enumerate(nodes):
            bm.create_port(node_uuid=n.id, address=f"52:54:00:00:20:{i:02x}")
        assert len([p for p in bm.ports(details=True) if p.address.startswith("52:54:00:00:20:")]) == 3
        for n in nodes:
            bm.set_node_provision_state(n, "manage")
        bm.wait_for_nodes_provision_state(nodes, "manageable", timeout=60)
        for n in nodes:
            bm.set_node_provision_state(n, "provide")
        assert {n.provision_state for n in bm.wait_for_nodes_provision_state(nodes, "available", timeout=60)} == {
            "available"}
        for i, n in enumerate(nodes):
            # sdk-2's profile wants more CPUs than the blade has: its stamp fails, and the client sees it.
            served.import_profile(LOCAL_PROFILE.format(name=f"sdk-web-{i}", cpus=64 if i == 2 else 8, n=10 + i))
            bm.patch_node(n, [{"op": "add", "path": "/instance_info/anvil_profile", "value": f"acme/sdk-web-{i}"}])
            bm.set_node_provision_state(n, "active")
        done = bm.wait_for_nodes_provision_state(nodes, "active", timeout=60, fail=False)
        assert sorted(n.name for n in done.success) == ["sdk-0", "sdk-1"]
        assert [n.name for n in done.failure] == ["sdk-2"]
        with pytest.raises(exceptions.ResourceFailure, match="deploy failed"):
            bm.wait_for_nodes_provision_state(nodes[2:], "active", timeout=30)
        assert bm.get_node("sdk-2").last_error
        for n in nodes:
            bm.set_node_provision_state(n, "deleted")
        bm.wait_for_nodes_provision_state(nodes, "available", timeout=60)
        assert all(n.instance_id is None for n in bm.nodes(details=True) if n.name.startswith("sdk-"))
    finally:
        conn.close()
