"""JSON Patch on a node's free-form fields (appliance.api.ironic.patch)."""

from __future__ import annotations

import pytest

from appliance.api.ironic.patch import apply
from appliance.errors import ValidationError

DOC = {"extra": {"a": 1}, "properties": {"cpus": 8}, "instance_info": {}, "driver_info": {}}


def test_add_replace_remove_below_the_patchable_fields() -> None:
    new, touched = apply(DOC, [{"op": "add", "path": "/extra/b", "value": {"c": 2}},
                               {"op": "replace", "path": "/properties/cpus", "value": 16},
                               {"op": "remove", "path": "/extra/a"},
                               {"op": "add", "path": "/instance_info/anvil_profile", "value": "acme/web-01"}])
    assert new["extra"] == {"b": {"c": 2}} and new["properties"] == {"cpus": 16}
    assert new["instance_info"] == {"anvil_profile": "acme/web-01"}
    assert touched == {"extra", "properties", "instance_info"}
    assert DOC["extra"] == {"a": 1}, "the input is left as it was"


def test_keys_with_a_slash_are_escaped_as_rfc_6901_says() -> None:
    new, _ = apply(DOC, [{"op": "add", "path": "/extra/a~1b~0c", "value": 1}])
    assert new["extra"]["a/b~c"] == 1


def test_a_whole_field_is_replaced_or_emptied() -> None:
    new, _ = apply(DOC, [{"op": "replace", "path": "/extra", "value": {"z": 0}},
                         {"op": "remove", "path": "/properties"}])
    assert new["extra"] == {"z": 0} and new["properties"] == {}


@pytest.mark.parametrize(("ops", "where"), [
    ([], "body"),
    ([{"op": "move", "path": "/extra/a"}], "[0].op"),
    ([{"op": "add", "path": "extra/a", "value": 1}], "[0].path"),
    ([{"op": "add", "path": "/name", "value": "x"}], "[0].path"),
    ([{"op": "add", "path": "/extra/x"}], "[0].value"),
    ([{"op": "remove", "path": "/extra/missing"}], "[0].path"),
    ([{"op": "replace", "path": "/extra/missing", "value": 1}], "[0].path"),
    ([{"op": "add", "path": "/extra/a/b", "value": 1}], "[0].path"),
])
def test_a_bad_patch_names_the_operation_and_changes_nothing(ops: list[dict[str, object]], where: str) -> None:
    with pytest.raises(ValidationError) as err:
        apply(DOC, ops)
    assert err.value.issues[0].path == where
