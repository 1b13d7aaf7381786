"""The XML reader: safe against hostile documents, strict about shape, with paths and lines."""

from __future__ import annotations

import pytest

from appliance.domain.profile import MAX_DOCUMENT_BYTES, parse_xml
from appliance.errors import Issue, ValidationError

NS = 'xmlns="urn:anvil:profile:v1"'
DOC = f"""<?xml version="1.0" encoding="UTF-8"?>
<ServerProfile {NS}>
  <apiVersion>anvil/v1</apiVersion>
  <metadata>
    <name>web-01</name>
    <labels><entry key="tier">web</entry></labels>
  </metadata>
  <spec>
    <identity>
      <nics>
        <nic><name>eth0</name><mac>02:a0:00:00:00:01</mac><pxe>true</pxe></nic>
        <nic>
          <name>eth1</name>
          <mac>02:a0:00:00:00:02</mac>
          <vlans><native>101</native><tagged><vlan>200</vlan><vlan>201</vlan></tagged></vlans>
        </nic>
      </nics>
    </identity>
    <boot><source><type>iscsi</type><portal>10.0.0.5:3260</portal><target>iqn.2026-11.io.anvil.san:w</target><lun>0</lun></source></boot>
  </spec>
</ServerProfile>
"""


def issues_of(text: str | bytes) -> list[Issue]:
    with pytest.raises(ValidationError) as info:
        parse_xml(text, source="t.xml")
    return info.value.issues


def test_document_parses_into_the_model() -> None:
    p = parse_xml(DOC)
    assert p.spec.identity.nics[0].pxe is True
    assert p.spec.identity.nics[1].vlans.tagged == (200, 201)
    assert p.metadata.labels == {"tier": "web"}
    assert p.spec.boot is not None and p.spec.boot.source.type == "iscsi"


def test_validation_issue_has_path_and_element_line() -> None:
    [issue] = issues_of(DOC.replace("02:a0:00:00:00:02", "02:zz:00:00:00:01"))
    assert issue == Issue("spec.identity.nics[1].mac", '"02:zz:00:00:00:01" is not a MAC address', 14)


def test_billion_laughs_is_refused() -> None:
    bomb = (
        '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
        ' <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">\n'
        ' <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">\n]>\n'
        f"<ServerProfile {NS}><apiVersion>&lol3;</apiVersion></ServerProfile>"
    )
    [issue] = issues_of(bomb)
    assert "not allowed" in issue.reason


def test_external_entity_is_refused() -> None:
    xxe = (
        '<?xml version="1.0"?>\n<!DOCTYPE p [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
        f"<ServerProfile {NS}><apiVersion>&xxe;</apiVersion></ServerProfile>"
    )
    [issue] = issues_of(xxe)
    assert "not allowed" in issue.reason


def test_any_dtd_is_refused() -> None:
    [issue] = issues_of('<?xml version="1.0"?>\n<!DOCTYPE ServerProfile>\n' + DOC.split("\n", 1)[1])
    assert issue.reason == "XML document type declarations (DTDs) are not allowed"


def test_external_dtd_is_refused() -> None:
    doc = '<?xml version="1.0"?>\n<!DOCTYPE ServerProfile SYSTEM "http://example.invalid/x.dtd">\n<ServerProfile/>'
    assert "not allowed" in issues_of(doc)[0].reason


def test_over_one_mib_is_refused_before_parsing() -> None:
    big = DOC.replace("<spec>", "<spec><!--" + "x" * MAX_DOCUMENT_BYTES + "-->")
    [issue] = issues_of(big.encode())
    assert issue.reason.startswith(f"document is {len(big.encode())} bytes")


def test_syntax_error_has_line() -> None:
    [issue] = issues_of(DOC.replace("</metadata>", "</metadat>"))
    assert issue.reason.startswith("XML syntax error") and issue.line == 7


def test_unknown_element() -> None:
    [issue] = issues_of(DOC.replace("<pxe>true</pxe>", "<pxe>true</pxe><speed>10</speed>"))
    assert issue == Issue("spec.identity.nics[0].speed", "unknown element", 11)


def test_kind_element_is_not_accepted() -> None:
    [issue] = issues_of(DOC.replace("<apiVersion>", "<kind>ServerProfile</kind><apiVersion>"))
    assert issue.path == "kind" and "root element" in issue.reason


def test_unexpected_attribute() -> None:
    [issue] = issues_of(DOC.replace("<nic><name>", '<nic id="1"><name>'))
    assert issue == Issue("spec.identity.nics[0]", 'unexpected attribute "id" (attributes carry no data here)', 11)


def test_xsi_attributes_on_the_root_are_tolerated() -> None:
    doc = DOC.replace(
        f"<ServerProfile {NS}>",
        f'<ServerProfile {NS} xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="urn:anvil:profile:v1 profile.xsd">',
    )
    assert parse_xml(doc) == parse_xml(DOC)


def test_text_where_elements_are_expected() -> None:
    [issue] = issues_of(DOC.replace("<nics>", "<nics>hello"))
    assert issue == Issue("spec.identity.nics", "unexpected text (expected only elements)", 10)


def test_element_inside_a_value() -> None:
    issue = issues_of(DOC.replace("<name>eth0</name>", "<name><b>eth0</b></name>"))[0]
    assert issue.reason == "unexpected element inside a value"
    assert issue.path == "spec.identity.nics[0].name" and issue.line == 11


def test_wrong_list_item_name() -> None:
    [issue] = issues_of(DOC.replace("<vlan>201</vlan>", "<id>201</id>"))
    assert issue.path == "spec.identity.nics[1].vlans.tagged[1]"
    assert issue.reason == "unexpected element <id> (expected <vlan>)"


def test_map_entry_needs_a_key_and_no_duplicates() -> None:
    issues = issues_of(
        DOC.replace(
            '<entry key="tier">web</entry>', '<entry>web</entry><entry key="a">1</entry><entry key="a">2</entry>'
        )
    )
    assert [(i.path, i.reason) for i in issues] == [
        ("metadata.labels", '<entry> needs a "key" attribute'),
        ("metadata.labels.a", "appears twice"),
    ]


def test_element_given_twice() -> None:
    [issue] = issues_of(DOC.replace("<name>web-01</name>", "<name>web-01</name><name>web-02</name>"))
    assert (issue.path, issue.reason, issue.line) == ("metadata.name", "appears twice", 5)


def test_wrong_namespace_and_root() -> None:
    [issue] = issues_of(DOC.replace(NS, 'xmlns="urn:other"'))
    assert "must be in namespace urn:anvil:profile:v1" in issue.reason
    [issue] = issues_of(DOC.replace("ServerProfile", "Server"))
    assert issue.reason == "unknown root element <Server> (expected ServerProfile or ServerProfileTemplate)"


def test_child_in_another_namespace() -> None:
    [issue] = issues_of(DOC.replace("<pxe>true</pxe>", '<pxe xmlns="urn:x">true</pxe>'))
    assert issue.path == "spec.identity.nics[0]" and "not in namespace" in issue.reason


def test_booleans_are_true_or_false_only() -> None:
    [issue] = issues_of(DOC.replace("<pxe>true</pxe>", "<pxe>yes</pxe>"))
    assert (issue.path, issue.line) == ("spec.identity.nics[0].pxe", 11)
    assert issue.reason.startswith("must be true or false")


def test_integers_are_checked() -> None:
    [issue] = issues_of(DOC.replace("<native>101</native>", "<native>x</native>"))
    assert issue == Issue("spec.identity.nics[1].vlans.native", 'must be an integer (got "x")', 15)


def test_parking_vlan_in_xml() -> None:
    [issue] = issues_of(DOC.replace("<vlan>201</vlan>", "<vlan>4094</vlan>"))
    assert (issue.path, issue.line) == ("spec.identity.nics[1].vlans.tagged[1]", 15)
    assert issue.reason.startswith("VLAN 4094 is the parking VLAN, reserved for released switch ports")


def test_structure_and_model_issues_are_reported_together() -> None:
    issues = issues_of(DOC.replace("<pxe>true</pxe>", "<pxe>true</pxe><speed/>").replace("web-01", "Web"))
    assert [i.path for i in issues] == ["spec.identity.nics[0].speed", "metadata.name"]


def test_missing_api_version() -> None:
    [issue] = issues_of(DOC.replace("<apiVersion>anvil/v1</apiVersion>", ""))
    assert issue == Issue("apiVersion", "is required", 2)


def test_unknown_boot_source_type_in_xml() -> None:
    [issue] = issues_of(DOC.replace("<type>iscsi</type>", "<type>floppy</type>"))
    assert issue.path == "spec.boot.source" and "floppy" in issue.reason
