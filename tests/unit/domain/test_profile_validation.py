"""Every rejection of the profile model names the path, the reason and (YAML) the line."""

from __future__ import annotations

import pytest

from appliance.domain.profile import from_dict, parse_yaml, to_dict
from appliance.errors import Issue, ValidationError

BASE = """\
apiVersion: anvil/v1
kind: ServerProfile
metadata:
  name: web-01
spec:
  identity:
    nics:
      - name: eth0
        mac: "02:a0:00:00:00:01"
        vlans: {native: 100, tagged: [200]}
      - name: eth1
        mac: "02:a0:00:00:00:02"
"""


PARKED = ("VLAN {} is the parking VLAN, reserved for released switch ports (network.parking_vlan in the "
          "configuration, or ANVIL_NETWORK_PARKING_VLAN)")


def issues_of(text: str, **kw: int) -> list[Issue]:
    with pytest.raises(ValidationError) as info:
        parse_yaml(text, source="test.yaml", **kw)
    return info.value.issues


def only_issue(text: str, **kw: int) -> Issue:
    issues = issues_of(text, **kw)
    assert len(issues) == 1, issues
    return issues[0]


def test_the_base_document_is_valid() -> None:
    p = parse_yaml(BASE)
    assert p.spec.identity.nics[1].mac == "02:a0:00:00:00:02"


def test_malformed_mac_names_path_value_and_line() -> None:
    issue = only_issue(BASE.replace("02:a0:00:00:00:02", "02:zz:00:00:00:01"))
    assert issue == Issue("spec.identity.nics[1].mac", '"02:zz:00:00:00:01" is not a MAC address', 12)
    assert str(issue) == 'line 12: spec.identity.nics[1].mac: "02:zz:00:00:00:01" is not a MAC address'


def test_multicast_mac_is_rejected() -> None:
    issue = only_issue(BASE.replace("02:a0:00:00:00:01", "03:a0:00:00:00:01"))
    assert (issue.path, issue.line) == ("spec.identity.nics[0].mac", 9)
    assert "multicast" in issue.reason


def test_macs_are_canonicalised_lowercase() -> None:
    p = parse_yaml(BASE.replace("02:a0:00:00:00:01", "02:A0:00:00:00:0F"))
    assert p.spec.identity.nics[0].mac == "02:a0:00:00:00:0f"


def test_unknown_field_is_rejected_with_its_line() -> None:
    issue = only_issue(BASE.replace("      - name: eth1\n", "      - name: eth1\n        speed: 10\n"))
    assert issue == Issue("spec.identity.nics[1].speed", "unknown field", 12)


def test_unknown_top_level_field() -> None:
    issue = only_issue(BASE + "status: {}\n")
    assert (issue.path, issue.reason, issue.line) == ("status", "unknown field", 13)


@pytest.mark.parametrize(
    ("vlans", "path", "reason"),
    [
        ("{native: 0}", "spec.identity.nics[0].vlans.native", "VLAN 0 is outside 1-4094"),
        ("{native: 4095}", "spec.identity.nics[0].vlans.native", "VLAN 4095 is outside 1-4094"),
        ("{native: 4094}", "spec.identity.nics[0].vlans.native", PARKED.format(4094)),
        ("{tagged: [10, 4094]}", "spec.identity.nics[0].vlans.tagged[1]", PARKED.format(4094)),
        (
            "{native: 100, tagged: [200, 100]}",
            "spec.identity.nics[0].vlans.tagged[1]",
            "VLAN 100 is already the native VLAN",
        ),
        ("{tagged: [200, 300, 200]}", "spec.identity.nics[0].vlans.tagged[2]", "VLAN 200 is listed twice"),
        ("{native: ten}", "spec.identity.nics[0].vlans.native", 'must be an integer (got "ten")'),
    ],
)
def test_vlan_rejections(vlans: str, path: str, reason: str) -> None:
    issue = only_issue(BASE.replace("{native: 100, tagged: [200]}", vlans))
    assert (issue.path, issue.reason, issue.line) == (path, reason, 10)


def test_duplicate_nic_names() -> None:
    issue = only_issue(BASE.replace("name: eth1", "name: eth0"))
    assert issue == Issue("spec.identity.nics[1].name", '"eth0" is already the name of nics[0]', 11)


def test_duplicate_hba_names_and_wwn_used_twice() -> None:
    text = BASE + (
        "    hbas:\n"
        '      - {name: fc0, wwpn: "20:00:00:25:b5:00:00:01", wwnn: "20:00:00:25:b5:00:01:01"}\n'
        '      - {name: fc0, wwpn: "20:00:00:25:B5:00:00:01"}\n'
    )
    issues = issues_of(text)
    assert [(i.path, i.line) for i in issues] == [
        ("spec.identity.hbas[1].name", 15),
        ("spec.identity.hbas[1].wwpn", 15),
    ]
    assert issues[1].reason == '"20:00:00:25:b5:00:00:01" is already used at spec.identity.hbas[0].wwpn'


def test_wwpn_and_wwnn_share_a_namespace() -> None:
    text = BASE + '    hbas:\n      - {name: fc0, wwpn: "20:00:00:25:b5:00:00:01", wwnn: "20:00:00:25:b5:00:00:01"}\n'
    assert only_issue(text).path == "spec.identity.hbas[0].wwnn"


def test_the_parking_vlan_is_the_configured_one_not_always_4094() -> None:
    """network.parking_vlan is configurable: with 100 configured, 100 is refused and 4094 is a VLAN like any."""
    issue = only_issue(BASE, parking_vlan=100)
    assert (issue.path, issue.reason, issue.line) == ("spec.identity.nics[0].vlans.native", PARKED.format(100), 10)
    p = parse_yaml(BASE.replace("{native: 100, tagged: [200]}", "{native: 4094, tagged: [200]}"), parking_vlan=100)
    assert p.spec.identity.nics[0].vlans.native == 4094
    issue = only_issue(BASE.replace("tagged: [200]", "tagged: [200, 300]"), parking_vlan=300)
    assert issue.path == "spec.identity.nics[0].vlans.tagged[1]"


def test_stored_documents_read_back_whatever_the_parking_vlan() -> None:
    """A profile imported before the parking VLAN changed must still load from the store."""
    p = parse_yaml(BASE.replace("native: 100", "native: 4094"), parking_vlan=100)
    assert from_dict(to_dict(p)) == p


def test_failover_policy_none_needs_no_domain() -> None:
    p = parse_yaml(BASE + "  failover: {policy: none}\n")
    assert p.spec.failover is not None and p.spec.failover.domain is None
    assert from_dict(to_dict(p)) == p
    for policy in ("n+1", "restart"):
        issue = only_issue(BASE + f"  failover: {{policy: {policy}}}\n")
        assert (issue.path, issue.line) == ("spec.failover.domain", 13)
        assert issue.reason == f"is required with policy {policy} (only policy none needs no failover domain)"


def test_hbas_of_one_profile_may_share_their_wwnn() -> None:
    """UCS-style: the WWNN names the server and all its vHBAs carry it; their WWPNs differ."""
    text = BASE + (
        "    hbas:\n"
        '      - {name: fc0, wwpn: "20:00:00:25:b5:00:00:01", wwnn: "20:00:00:25:b5:00:01:01"}\n'
        '      - {name: fc1, wwpn: "20:00:00:25:b5:00:00:02", wwnn: "20:00:00:25:B5:00:01:01"}\n'
    )
    p = parse_yaml(text)
    assert {h.wwnn for h in p.spec.identity.hbas} == {"20:00:00:25:b5:00:01:01"}


@pytest.mark.parametrize(
    ("hba0", "hba1", "path"),
    [
        # a WWNN equal to another HBA's WWPN, either way round
        ('wwpn: "20:00:00:25:b5:00:00:01"', 'wwnn: "20:00:00:25:b5:00:00:01"', "spec.identity.hbas[1].wwnn"),
        ('wwnn: "20:00:00:25:b5:00:00:01"', 'wwpn: "20:00:00:25:b5:00:00:01"', "spec.identity.hbas[1].wwpn"),
        # a WWPN never repeats, even when the WWNNs are shared
        ('wwpn: "20:00:00:25:b5:00:00:01", wwnn: "20:00:00:25:b5:00:01:01"',
         'wwpn: "20:00:00:25:b5:00:00:01", wwnn: "20:00:00:25:b5:00:01:01"', "spec.identity.hbas[1].wwpn"),
    ],
)
def test_a_wwn_used_as_a_port_name_stays_unique(hba0: str, hba1: str, path: str) -> None:
    text = BASE + f"    hbas:\n      - {{name: fc0, {hba0}}}\n      - {{name: fc1, {hba1}}}\n"
    issue = only_issue(text)
    assert (issue.path, issue.line) == (path, 15)
    assert "is already used at spec.identity.hbas[0]" in issue.reason


def test_same_mac_twice() -> None:
    issue = only_issue(BASE.replace("02:a0:00:00:00:02", "02:A0:00:00:00:01"))
    assert issue == Issue(
        "spec.identity.nics[1].mac", '"02:a0:00:00:00:01" is already used at spec.identity.nics[0].mac', 12
    )


def test_pool_refs_may_repeat() -> None:
    p = parse_yaml(BASE.replace('"02:a0:00:00:00:01"', "pool:macs").replace('"02:a0:00:00:00:02"', "pool:macs"))
    assert p.spec.identity.nics[0].mac == "pool:macs"


def test_bad_pool_name() -> None:
    issue = only_issue(BASE.replace('"02:a0:00:00:00:01"', "pool:Macs"))
    assert issue.path == "spec.identity.nics[0].mac"
    assert "does not name a pool" in issue.reason


@pytest.mark.parametrize(
    ("line", "path", "reason"),
    [
        ("    uuid: 4c4c4544-0042-3510-8052\n", "spec.identity.uuid", '"4c4c4544-0042-3510-8052" is not a UUID'),
        ("    iscsiInitiator: iqn.bad\n", "spec.identity.iscsiInitiator", '"iqn.bad" is not an iSCSI name'),
        ('    hbas: [{name: fc0, wwpn: "20:00:00:25"}]\n', "spec.identity.hbas[0].wwpn", '"20:00:00:25" is not a WWN'),
        (
            '    hbas: [{name: fc0, wwnn: "zz:00:00:25:b5:00:00:01"}]\n',
            "spec.identity.hbas[0].wwnn",
            '"zz:00:00:25:b5:00:00:01" is not a WWN',
        ),
    ],
)
def test_malformed_identities(line: str, path: str, reason: str) -> None:
    issue = only_issue(BASE.replace("  identity:\n", "  identity:\n" + line))
    assert (issue.path, issue.line) == (path, 7)
    assert issue.reason.startswith(reason)


def test_unknown_api_version_and_kind_are_both_reported() -> None:
    issues = issues_of(BASE.replace("anvil/v1", "anvil/v2").replace("kind: ServerProfile", "kind: Server"))
    assert [(i.path, i.line) for i in issues] == [("apiVersion", 1), ("kind", 2)]
    assert issues[0].reason == 'unsupported apiVersion "anvil/v2" (expected "anvil/v1")'
    assert issues[1].reason == 'unknown kind "Server" (expected ServerProfile or ServerProfileTemplate)'


def test_missing_name_points_at_metadata() -> None:
    issue = only_issue(BASE.replace("  name: web-01\n", "  tenant: acme\n"))
    assert issue == Issue("metadata.name", "is required", 4)


@pytest.mark.parametrize("name", ["Web-01", "-web", "web_01", "a" * 64, ""])
def test_bad_names(name: str) -> None:
    issue = only_issue(BASE.replace("name: web-01", f'name: "{name}"'))
    assert (issue.path, issue.line) == ("metadata.name", 4)
    assert "is not a valid name" in issue.reason


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/boot/vmlinuz", "is an absolute path"),
        ("../etc/passwd", 'leaves images/ (".." is not allowed)'),
        ("lab/../../x", 'leaves images/ (".." is not allowed)'),
        ("lab//vmlinuz", "is not a clean relative path"),
        ("lab\\\\vmlinuz", "contains a backslash"),
    ],
)
def test_image_paths_are_confined(path: str, reason: str) -> None:
    text = BASE + f'  boot:\n    source: {{type: image, kernel: "{path}", initrd: lab/initrd.img}}\n'
    issue = only_issue(text)
    assert (issue.path, issue.line) == ("spec.boot.source.kernel", 14)
    assert reason in issue.reason


def test_unknown_boot_source_type() -> None:
    issue = only_issue(BASE + "  boot:\n    source: {type: floppy}\n")
    assert issue == Issue(
        "spec.boot.source", 'unknown boot source type "floppy" (expected iscsi, fc, image or local)', 14
    )


def test_boot_source_errors_have_no_tag_in_path() -> None:
    text = BASE + '  boot:\n    source: {type: iscsi, portal: "10.0.0.5", target: iqn.2026-11.io.anvil:t, lun: -1}\n'
    issues = issues_of(text)
    assert [i.path for i in issues] == ["spec.boot.source.portal", "spec.boot.source.lun"]


def test_local_source_rejects_extra_fields() -> None:
    issue = only_issue(BASE + "  boot:\n    source: {type: local, kernel: x}\n")
    assert issue.path == "spec.boot.source.kernel"


def test_bad_ipv4_interface() -> None:
    issue = only_issue(BASE.replace("      - name: eth1\n", "      - name: eth1\n        ipv4: 10.0.0.0/24\n"))
    assert issue.path == "spec.identity.nics[1].ipv4"
    assert "network or broadcast" in issue.reason


def test_all_issues_are_reported_at_once() -> None:
    text = BASE.replace("web-01", "Web").replace("02:a0:00:00:00:02", "nope").replace("tagged: [200]", "tagged: [0]")
    assert [i.path for i in issues_of(text)] == [
        "metadata.name",
        "spec.identity.nics[0].vlans.tagged[0]",
        "spec.identity.nics[1].mac",
    ]


def test_bios_scalars_become_strings() -> None:
    p = parse_yaml(BASE + "  bios: {NumaNodes: 2, Turbo: true, Mode: Enabled}\n")
    assert p.spec.bios == {"NumaNodes": "2", "Turbo": "true", "Mode": "Enabled"}


def test_bios_null_value_is_rejected() -> None:
    issue = only_issue(BASE + "  bios: {Turbo: }\n")
    assert (issue.path, issue.line) == ("spec.bios.Turbo", 13)


def test_from_dict_reports_paths_without_lines() -> None:
    with pytest.raises(ValidationError) as info:
        from_dict({"apiVersion": "anvil/v1", "kind": "ServerProfile", "metadata": {"name": "x", "colour": "red"}})
    assert info.value.issues == [Issue("metadata.colour", "unknown field", None)]


def test_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(ValidationError, match="must be a mapping"):
        from_dict(["a"])


def test_error_message_names_source_and_count() -> None:
    with pytest.raises(ValidationError) as info:
        parse_yaml(BASE.replace("web-01", "Web").replace("02:a0:00:00:00:02", "nope"), source="web.yaml")
    assert str(info.value).startswith("web.yaml: line 4: metadata.name: ")
    assert str(info.value).endswith("(and 1 more)")
