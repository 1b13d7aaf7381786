"""CLI tables fit 120 columns by cutting their widest columns (saying so with …); -o wide never cuts."""

from __future__ import annotations

from appliance.cli.output import MIN_CUT, WIDTH, table


def test_a_wide_table_is_cut_to_120_columns_widest_first_and_wide_is_not() -> None:
    rows = [{"name": f"blade-{i}", "state": "spare", "bmc": "redfish+https://" + "x" * 150, "profile": "p" * 60}
            for i in range(3)]
    cut = table(rows, ["name", "state", "profile", "bmc"]).splitlines()
    assert all(len(line) <= WIDTH for line in cut)
    assert cut[1].split()[:2] == ["blade-0", "spare"]        # the narrow columns are whole
    assert cut[1].split()[3].endswith("…") and cut[1].split()[2].endswith("…")
    whole = table(rows, ["name", "state", "profile", "bmc"], width=None).splitlines()
    assert "x" * 150 in whole[1] and "p" * 60 in whole[1]


def test_a_table_that_fits_is_left_alone_and_columns_have_their_own_headers() -> None:
    rows = [{"name": "rf-01", "memoryGiB": 64, "profile": None}]
    assert table(rows, ["name", ("memoryGiB", "MEM GiB"), "profile"]).splitlines() == [
        "NAME   MEM GiB  PROFILE", "rf-01  64       -"]


def test_a_table_with_too_many_columns_stops_cutting_at_the_minimum() -> None:
    rows = [{f"c{i}": "v" * 30 for i in range(12)}]
    lines = table(rows, [f"c{i}" for i in range(12)]).splitlines()
    assert all(len(cell) >= MIN_CUT for cell in lines[1].split())
