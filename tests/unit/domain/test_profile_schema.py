"""The committed schemas are what the model generates, and every example validates against both."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import xmlschema
import yaml

from appliance.assets import asset_dir
from appliance.domain.profile import parse_xml, parse_yaml, to_dict, to_xml
from appliance.domain.profile.schema import render_json_schema, render_xsd

SCHEMA_DIR = asset_dir("profiles") / "schema"
EXAMPLES = sorted((asset_dir("profiles") / "examples").glob("*.yaml"))


def test_committed_json_schema_matches_the_model() -> None:
    assert (SCHEMA_DIR / "profile.schema.json").read_text(encoding="utf-8") == render_json_schema(), (
        "run scripts/gen-profile-schemas"
    )


def test_committed_xsd_matches_the_model() -> None:
    assert (SCHEMA_DIR / "profile.xsd").read_text(encoding="utf-8") == render_xsd(), "run scripts/gen-profile-schemas"


@pytest.fixture(scope="module")
def json_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMA_DIR / "profile.schema.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.fixture(scope="module")
def xsd() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(SCHEMA_DIR / "profile.xsd"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_against_json_schema(path: Path, json_validator: jsonschema.protocols.Validator) -> None:
    json_validator.validate(yaml.safe_load(path.read_text()))
    json_validator.validate(to_dict(parse_yaml(path.read_text())))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_xml_validates_against_xsd(path: Path, xsd: xmlschema.XMLSchema) -> None:
    xsd.validate(to_xml(parse_yaml(path.read_text())))


def test_json_schema_rejects_what_the_model_rejects(json_validator: jsonschema.protocols.Validator) -> None:
    doc = yaml.safe_load(EXAMPLES[0].read_text())
    doc["spec"]["identity"]["nics"][0]["mac"] = "02:zz:00:00:00:01"
    assert not json_validator.is_valid(doc)
    doc = yaml.safe_load(EXAMPLES[0].read_text())
    doc["spec"]["colour"] = "red"
    assert not json_validator.is_valid(doc)


def test_xsd_rejects_bad_xml(xsd: xmlschema.XMLSchema) -> None:
    xml = to_xml(parse_yaml(EXAMPLES[0].read_text()))
    assert xsd.is_valid(xml)
    assert not xsd.is_valid(xml.replace("<pxe>true</pxe>", "<pxe>yes</pxe>"))
    assert not xsd.is_valid(xml.replace("<name>", "<nom>", 1).replace("</name>", "</nom>", 1))
    first_mac = xml.index("<mac>") + len("<mac>")
    assert not xsd.is_valid(xml[:first_mac] + "02:zz" + xml[first_mac + 5 :])


def test_gen_script_check_mode_passes() -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[3] / "scripts" / "gen-profile-schemas"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


XML_EXAMPLES = sorted((asset_dir("profiles") / "examples").glob("*.xml"))


@pytest.mark.parametrize("path", XML_EXAMPLES, ids=lambda p: p.name)
def test_xml_example_is_valid_and_equals_its_yaml_twin(path: Path, xsd: xmlschema.XMLSchema) -> None:
    xsd.validate(str(path))
    assert parse_xml(path.read_bytes()) == parse_yaml(path.with_suffix(".yaml").read_text())


def test_schemas_let_policy_none_go_without_a_domain(json_validator: jsonschema.protocols.Validator,
                                                      xsd: xmlschema.XMLSchema) -> None:
    doc = yaml.safe_load(EXAMPLES[0].read_text())
    doc["spec"]["failover"] = {"policy": "none"}
    assert json_validator.is_valid(doc)
    assert xsd.is_valid(to_xml(parse_yaml(yaml.safe_dump(doc))))
    doc["spec"]["failover"] = {"policy": "n+1"}
    assert not json_validator.is_valid(doc)   # as the model: only policy none needs no domain


def test_schemas_allow_vlan_4094_because_the_parking_vlan_is_configurable(
        json_validator: jsonschema.protocols.Validator) -> None:
    doc = yaml.safe_load(EXAMPLES[0].read_text())
    doc["spec"]["identity"]["nics"][0]["vlans"] = {"native": 4094}
    assert json_validator.is_valid(doc)
    doc["spec"]["identity"]["nics"][0]["vlans"] = {"native": 4095}
    assert not json_validator.is_valid(doc)
