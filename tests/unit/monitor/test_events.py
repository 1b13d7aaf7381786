"""BMC events: which blades an event names, what a Redfish Event body must hold, and where
the monitor tells BMCs to post."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import Settings
from appliance.monitor.events import EventSubscriptions, _Member, origins_of
from appliance.monitor.runner import monitor_settings


def test_origins_are_read_from_each_event_and_odd_ones_are_skipped() -> None:
    doc = {"Events": [{"OriginOfCondition": {"@odata.id": "/redfish/v1/Systems/1"}},
                      {"OriginOfCondition": "/redfish/v1/Systems/2/Bios"},
                      {"OriginOfCondition": {"@odata.id": 7}}, {}]}
    assert origins_of(doc) == ["/redfish/v1/Systems/1", "/redfish/v1/Systems/2/Bios"]
    assert origins_of({"Events": []}) == []


@pytest.mark.parametrize(("doc", "why"), [
    ([], "not a JSON object"), ({}, "'Events' is missing"), ({"Events": {}}, "not a list"),
    ({"Events": ["x"]}, "Events[0] is not an object"),
])
def test_a_body_that_is_not_an_event_is_refused_naming_why(doc: object, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("[", r"\[").replace("]", r"\]")):
        origins_of(doc)


def test_an_event_goes_to_the_blades_under_its_origin_or_else_to_all_of_the_endpoint() -> None:
    subs = EventSubscriptions(store=None, hw=None, base_url="https://a:8443")  # type: ignore[arg-type]
    subs.members = {"redfish+http://c1": [_Member("b1", "/redfish/v1/Systems/1"),
                                          _Member("b10", "/redfish/v1/Systems/10")]}
    assert subs.blades_for("redfish+http://c1", ["/redfish/v1/Systems/1/"]) == ["b1"]
    assert subs.blades_for("redfish+http://c1", ["/redfish/v1/Systems/10/Bios"]) == ["b10"]
    assert subs.blades_for("redfish+http://c1", ["/redfish/v1/Chassis/1"]) == ["b1", "b10"]
    assert subs.blades_for("redfish+http://c1", []) == ["b1", "b10"]
    assert subs.blades_for("redfish+http://other", ["/redfish/v1/Systems/1"]) == []


def test_bmcs_are_told_the_api_address_unless_it_is_a_wildcard(tmp_path: Path) -> None:
    def base(api_url: str, **monitor: object) -> str:
        settings = Settings.model_validate({"state_dir": tmp_path, "monitor": monitor})
        return monitor_settings(settings, api_url).event_base_url

    assert base("https://10.1.2.3:8443") == "https://10.1.2.3:8443"
    assert base("https://0.0.0.0:8443") == ""
    assert base("https://[::]:8443") == ""
    assert base("https://0.0.0.0:443", event_destination="https://anvil.example:443") == "https://anvil.example:443"
    assert base("https://10.1.2.3:8443", events=False) == ""
    with pytest.raises(ValueError, match="event_destination"):
        base("https://10.1.2.3:8443", event_destination="ftp://x/y")
