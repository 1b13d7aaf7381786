"""What `profile assign` / `job watch` print while a job runs (appliance.cli.job.follow): a line
per step as it ends, "k/n" numbered, with a live bar redrawn in place on a terminal only."""

from __future__ import annotations

import io
import sys
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from appliance.cli.job import follow
from appliance.services.jobs import JobInfo, StepInfo

NAMES = ("choose-blade", "set-vlans", "power-on")


def _job(done: int, state: str = "running") -> JobInfo:
    steps = tuple(StepInfo(i, n, "done" if i < done else "pending", 1 if i < done else 0, None, None)
                  for i, n in enumerate(NAMES))
    return JobInfo("j1", "stamp", "acme/web-01", "acme", state, min(done, len(NAMES)), len(NAMES), None, None,
                   {"blade": "b01"} if state == "succeeded" else {}, steps, datetime.now(UTC), None)


class _Source:
    def __init__(self) -> None:
        self.seq = [_job(0), _job(0), _job(1), _job(2), replace(_job(3, "succeeded"))]

    def get(self, job_id: str) -> JobInfo:
        return self.seq.pop(0) if len(self.seq) > 1 else self.seq[0]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [False, True])
def test_follow_prints_each_step_k_of_n_and_a_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch,
                                                                     tty: bool) -> None:
    out = _Tty() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    info = follow(_Source(), "j1", interval=0)
    assert info.state == "succeeded"
    text = out.getvalue()
    lines = [ln.rsplit("\r\033[K", 1)[-1] for ln in text.split("\n") if ln.rsplit("\r\033[K", 1)[-1]]
    assert lines[0] == "job j1: stamp acme/web-01"
    assert [ln.split()[1:3] for ln in lines[1:4]] == [["1/3", "choose-blade"], ["2/3", "set-vlans"],
                                                       ["3/3", "power-on"]]
    assert lines[-1] == "job j1 succeeded on blade b01"
    assert ("[" + "#" * 8 + "." * 16 + "] 1/3 set-vlans" in text) is tty
    assert ("\033[K" in text) is tty
