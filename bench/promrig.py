"""A real Prometheus (Debian's ``prometheus`` package) for benches and tests: started in a folder of
its own on a loopback port, scraping the given targets every second, asked through its HTTP API,
and stopped by PID. Nothing is left behind but that folder (its TSDB and log)."""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.lab import procs

BINARY = shutil.which("prometheus")
# One scrape per second: a stamp round of a few seconds still leaves several points per series.
SCRAPE_INTERVAL = "1s"


@dataclass(frozen=True, slots=True)
class Target:
    """One scrape job. ``extra`` is YAML flow-mapping text added to the job (scheme, TLS, credentials)."""

    job: str
    address: str
    extra: str = ""


@dataclass
class Prometheus:
    work: Path
    targets: list[Target]
    port: int = field(default_factory=procs.free_tcp_port)
    proc: procs.ProcHandle | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        jobs = "".join(f'  - {{job_name: {t.job}, static_configs: [{{targets: ["{t.address}"]}}]'
                       f'{", " + t.extra if t.extra else ""}}}\n' for t in self.targets)
        return (f"global: {{scrape_interval: {SCRAPE_INTERVAL}, scrape_timeout: {SCRAPE_INTERVAL}, "
                "evaluation_interval: 1m}\nscrape_configs:\n" + jobs)

    def start(self) -> Prometheus:
        if BINARY is None:
            raise RuntimeError("prometheus is not installed (Debian package prometheus; dev.sh installs it)")
        self.work.mkdir(parents=True, exist_ok=True)
        config = self.work / "prometheus.yml"
        config.write_text(self.config())
        self.proc = procs.start([BINARY, f"--config.file={config}", f"--storage.tsdb.path={self.work / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                                self.work / "prometheus.log")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc, timeout=10)
            self.proc = None

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self) -> str:
        return self.proc.log_tail() if self.proc else ""

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        url = f"{self.base}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=5) as resp:
            doc = json.loads(resp.read())
        if doc.get("status") != "success":
            raise RuntimeError(f"prometheus {path}: {doc}")
        return doc["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        result: list[dict[str, Any]] = self._get("/api/v1/query", {"query": promql})["result"]
        return result

    def targets_by_job(self) -> dict[str, dict[str, Any]]:
        return {t["labels"]["job"]: t for t in self._get("/api/v1/targets")["activeTargets"]}

    def until(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        """Poll ``check()`` (4 times a second) until it returns something true; AssertionError naming
        ``what`` with Prometheus' log tail after ``timeout`` s."""
        last: Any = None
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout * 4) + 1):
            try:
                last = check()
            except OSError as exc:    # still starting
                last = exc
            if last and not isinstance(last, Exception):
                return last
            if time.monotonic() > deadline:
                break
            time.sleep(0.25)
        raise AssertionError(f"{what}: not within {timeout:g} s (last: {last!r}); prometheus log: {self.log_tail()}")

    def wait_up(self, timeout: float = 30.0) -> None:
        """Every target scraped successfully at least once."""
        jobs = {t.job for t in self.targets}
        self.until("every target up", lambda: {r["metric"]["job"] for r in self.query("up == 1")} >= jobs, timeout)


def step_quantiles(prom: Prometheus, window: str, kind: str = "stamp",
                   quantiles: tuple[float, ...] = (0.5, 0.95, 0.99)) -> dict[str, dict[str, float]]:
    """Per step of ``kind`` (outcome done): each quantile of its duration and the count of tries since
    the appliance started, from the histogram buckets Prometheus scraped (histogram_quantile over the
    buckets' last values, by le and step). The appliance must start inside ``window``.
    NaN (no try) is left out."""
    # Last values, not rate()/increase(): a step's series is born at its first try, between two
    # scrapes, so rate() never sees the tries before the series' first sample (a 3 s run scraped
    # 3 times had no stamp quantile at all; increase() gave 6.25 tries for 7). The appliance starts
    # inside the window, so its cumulative counters are exactly the run's tries.
    out: dict[str, dict[str, float]] = {}
    sel = f'anvil_job_step_duration_seconds_bucket{{kind="{kind}",outcome="done"}}'
    for q in quantiles:
        for r in prom.query(f"histogram_quantile({q}, sum by (le, step) (last_over_time({sel}[{window}])))"):
            v = float(r["value"][1])
            if v == v:
                out.setdefault(r["metric"]["step"], {})[f"p{round(q * 100)}"] = v
    count = f'anvil_job_step_duration_seconds_count{{kind="{kind}",outcome="done"}}'
    for r in prom.query(f"sum by (step) (last_over_time({count}[{window}]))"):
        if r["metric"]["step"] in out:
            out[r["metric"]["step"]]["tries"] = float(r["value"][1])
    return out
