"""Suggestions for names that were not found: close names, best first, never the name itself."""

from __future__ import annotations

from appliance.domain.suggest import close_names, did_you_mean, elsewhere


def test_close_names_finds_typos_and_case_but_not_unrelated_names() -> None:
    names = ["rf-01", "rf-02", "rf-03", "web-01", "db-01", "spares"]
    assert close_names("rf-1", names)[0] == "rf-01"
    assert close_names("web01", names) == ["web-01"]
    assert close_names("WEB-01", names) == ["web-01"]
    assert close_names("spare", names) == ["spares"]
    assert close_names("kvm-99", names) == []
    assert close_names("web-01", ["web-01"]) == []          # the name itself is no suggestion
    assert len(close_names("rf-0", [f"rf-0{i}" for i in range(10)])) == 3


def test_sentences_name_every_suggestion() -> None:
    assert did_you_mean([]) is None
    assert did_you_mean(["web-01"]) == "did you mean web-01?"
    assert did_you_mean(["a", "b", "c"]) == "did you mean a, b or c?"
    assert elsewhere("web-01", []) is None
    assert elsewhere("web-01", ["acme"]) == "web-01 exists in tenant acme"
    assert elsewhere("web-01", ["acme", "globex"]) == "web-01 exists in tenants acme and globex"
