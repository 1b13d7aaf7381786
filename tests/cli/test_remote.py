"""The CLI against a remote appliance: --url/--token (ANVIL_URL/ANVIL_TOKEN) over HTTPS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import Anvil
from tests.cli.test_serve import _free_port, _start, _stop

DOC = """apiVersion: anvil/v1
kind: ServerProfile
metadata: {name: web-09, tenant: acme}
spec:
  requirements: {nics: 1}
  identity:
    nics:
      - {name: eth0, mac: "02:a0:00:00:00:09"}
"""


@pytest.fixture
def remote(anvil: Anvil, anvil_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[Anvil, dict[str, str]]]:
    """A served appliance (HTTPS) with one fake blade, and the env of a client that has no local store of it."""
    env = {**anvil_env, "ANVIL_API_LISTEN": f"127.0.0.1:{_free_port()}"}
    proc, url = _start(env, tmp_path)
    try:
        anvil("blade", "enroll", "b01", "--bmc", "fake://b01", "--username", "u", "--password-stdin",
              "--nic", "eth0=aa:00:00:00:00:01", input="p\n")
        state = Path(anvil_env["ANVIL_STATE_DIR"])
        client = {"ANVIL_STATE_DIR": str(tmp_path / "client"), "ANVIL_CONFIG": str(tmp_path / "client.toml"),
                  "ANVIL_URL": url, "ANVIL_TOKEN": (state / "admin.token").read_text().strip(),
                  "ANVIL_CA_CERT": str(state / "tls" / "cert.pem")}
        yield anvil, client
    finally:
        _stop(proc)


def test_list_show_assign_release_and_jobs_go_to_the_remote_api(remote: tuple[Anvil, dict[str, str]],
                                                                 tmp_path: Path) -> None:
    anvil, env = remote
    doc = tmp_path / "web-09.yaml"
    doc.write_text(DOC)
    assert "imported profile acme/web-09" in anvil("profile", "import", str(doc), env=env).out
    rows = json.loads(anvil("profile", "list", "-o", "json", env=env).out)
    assert [(r["name"], r["tenant"]) for r in rows] == [("web-09", "acme")]
    assert "name: web-09" in anvil("profile", "export", "web-09", "--tenant", "acme", env=env).out
    blades = json.loads(anvil("blade", "list", "-o", "json", env=env).out)
    assert [b["name"] for b in blades] == ["b01"]
    assert json.loads(anvil("blade", "show", "b01", "-o", "json", env=env).out)["password"] == "***"
    out = anvil("profile", "assign", "web-09", "--tenant", "acme", "--blade", "b01", env=env).out
    assert "succeeded on blade b01" in out
    jobs = json.loads(anvil("job", "list", "-o", "json", env=env).out)
    assert jobs[0]["state"] == "succeeded"
    assert "succeeded" in anvil("job", "show", jobs[0]["id"], env=env).out
    assert "succeeded" in anvil("profile", "release", "web-09", "--tenant", "acme", env=env).out
    # the changes were audited as the token, from the client's address
    audit = json.loads(anvil("audit", "list", "--resource", "job", "-o", "json", env=env).out)
    assert {a["who"] for a in audit} == {"token:admin-initial#1"} and len(audit) == 2
    # errors read the same as locally: a one-line reason, non-zero
    bad = anvil("profile", "show", "nope", env=env, check=False)
    assert bad.code != 0 and "not found" in bad.err
    denied = anvil("blade", "list", env={**env, "ANVIL_TOKEN": "anvil_wrong"}, check=False)
    assert denied.code != 0 and "401" in denied.err
    local_only = anvil("blade", "enroll", "x", "--bmc", "fake://x", "--username", "u", "--password-stdin",
                       input="p\n", env=env, check=False)
    assert local_only.code != 0 and "local appliance only" in local_only.err
