"""Progress on a terminal: a line per stage, a counter redrawn in place; nothing elsewhere."""

from __future__ import annotations

import io

from appliance.progress import NoProgress, TerminalProgress, for_terminal


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_stages_are_lines_and_a_counter_is_redrawn_in_place_ending_with_its_last_item() -> None:
    out = _Tty()
    p = TerminalProgress(out, "backup", every=3600)     # no redraw in between: only the first and the last
    p.stage("reading the store")
    for i in range(1, 51):
        p.count(i, 50, "tables read")
    p.stage("writing")
    p.close()
    text = out.getvalue()
    assert text.startswith("backup: reading the store\n")
    assert text.count("\r\033[K") == 2 and "tables read 1/50" in text and "tables read 50/50\n" in text
    assert "[####################] tables read 50/50" in text
    assert text.endswith("backup: writing\n")


def test_not_a_terminal_means_no_progress_at_all() -> None:
    assert isinstance(for_terminal("backup", io.StringIO()), NoProgress)
    assert isinstance(for_terminal("backup", _Tty()), TerminalProgress)
