"""Prometheus metrics of one appliance process (served at ``/metrics``, appliance.api.routes.metrics).

One :class:`Metrics` per appliance, holding its own ``CollectorRegistry``: tests start several
appliances in one process, and the client library's global default registry would mix their
numbers (and refuse a second registration of the same name). The serve command creates one and
hands it to the engine, the monitor, the Hardware registry, the boot service and the API app.

Counted as things happen: step durations, jobs finished, BMC calls (timed where Hardware hands
out drivers, :class:`MeteredBmc`, so every driver is measured the same way and none has to know),
monitor passes, failovers, boot requests. Read when scraped (:class:`StateCollector`): jobs by
kind and state from the store, the database pool, leadership. A scrape therefore reads the
store: render it off the event loop (:meth:`Metrics.render` is blocking).
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from appliance import __version__

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
# A stamp's steps take milliseconds (fake BMC) to many minutes (a real server's POST and image copy).
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
# A BMC call: a few ms (fake, IPMI) to tens of seconds (a Redfish service under load).
CALL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
PASS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BOOT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass(slots=True)
class Sources:
    """What a scrape reads: the store (jobs, pool, lease) and, in a process with an engine,
    whether that engine leads. Any of them may be absent."""

    jobs: Callable[[], list[tuple[str, str, int]]] | None = None   # (kind, state, count)
    pool: Callable[[], dict[str, int]] | None = None               # size, checked_out, overflow, idle
    leader_here: Callable[[], bool] | None = None                  # this process's engine leads
    leader_known: Callable[[], bool] | None = None                 # some engine holds a live lease


class StateCollector(Collector):
    """Gauges computed at scrape time. A source that fails is reported as ``anvil_scrape_errors``
    (by source) rather than failing the whole scrape: the counters are still worth having."""

    def __init__(self) -> None:
        self.sources = Sources()

    def describe(self) -> list[Metric]:
        return []   # unknown until scraped: the registry must not call collect() at registration

    def collect(self) -> Iterator[Metric]:
        errors = GaugeMetricFamily("anvil_scrape_source_up", "Whether a scrape-time source answered (1) or "
                                   "failed (0)", labels=["source"])
        src = self.sources
        if src.jobs is not None:
            ok = True
            try:
                rows = src.jobs()
            except Exception:  # a down store must not hide the other metrics
                log.warning("metrics: counting jobs failed", exc_info=True)
                ok, rows = False, []
            errors.add_metric(["jobs"], 1 if ok else 0)
            if ok:
                jobs = GaugeMetricFamily("anvil_jobs", "Jobs in the store by kind and state", labels=["kind", "state"])
                for kind, state, n in rows:
                    jobs.add_metric([kind, state], n)
                yield jobs
        if src.pool is not None:
            pool = GaugeMetricFamily("anvil_db_pool_connections", "The store's connection pool by state "
                                     "(size: configured; checked_out: in use; overflow: beyond size; idle)",
                                     labels=["state"])
            for state, n in sorted(src.pool().items()):
                pool.add_metric([state], n)
            yield pool
        if src.leader_here is not None:
            yield GaugeMetricFamily("anvil_engine_leader", "1 when this process's engine is the leader",
                                    value=1 if src.leader_here() else 0)
        if src.leader_known is not None:
            ok = True
            try:
                known = src.leader_known()
            except Exception:
                log.warning("metrics: reading the leader lease failed", exc_info=True)
                ok, known = False, False
            errors.add_metric(["leader_lease"], 1 if ok else 0)
            yield GaugeMetricFamily("anvil_engine_leader_known", "1 when some engine holds a live leader lease",
                                    value=1 if known else 0)
        yield errors


class Metrics:
    """Every metric of one appliance process, in its own registry.

    ``boot_only``: a ``serve --role boot`` process serves only the boot services' metrics. The
    others still exist (code handed a Metrics always counts) but in a registry nobody scrapes, so
    a boot role does not show series it can never move (monitor passes, leadership)."""

    def __init__(self, *, boot_only: bool = False) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        other = CollectorRegistry(auto_describe=True) if boot_only else r
        self.info = Gauge("anvil_build_info", "This appliance's version", ["version"], registry=r)
        self.info.labels(__version__).set(1)
        self.steps = Histogram("anvil_job_step_duration_seconds", "How long one try of a job step ran, by job kind, "
                               "step and outcome (done, retry, failed, undone, undo_failed)",
                               ["kind", "step", "outcome"], buckets=STEP_BUCKETS, registry=other)
        self.jobs_finished = Counter("anvil_jobs_finished", "Jobs this process's engine drove to a final state",
                                     ["kind", "state"], registry=other)
        self.bmc_calls = Histogram("anvil_bmc_call_duration_seconds", "BMC driver calls, by driver and call "
                                   "(errors too)", ["driver", "call"], buckets=CALL_BUCKETS, registry=other)
        self.bmc_errors = Counter("anvil_bmc_call_errors", "BMC driver calls that raised, by driver, call and "
                                  "error class", ["driver", "call", "error"], registry=other)
        self.monitor_pass = Histogram("anvil_monitor_pass_duration_seconds", "One monitor pass over every "
                                      "watched blade", buckets=PASS_BUCKETS, registry=other)
        self.monitor_pass_errors = Counter("anvil_monitor_pass_errors", "Monitor passes that failed", registry=other)
        self.failovers = Counter("anvil_failovers", "Failover requests from the monitor, by outcome "
                                 "(started, refused)", ["outcome"], registry=other)
        self.leadership = Counter("anvil_engine_leadership_changes", "This process's engine becoming (acquired) "
                                  "or ceasing to be (lost, released) the leader", ["change"], registry=other)
        # Known label values start at 0, so that "none yet" is a series a dashboard or an alert can
        # see (rate() over a series that appears only at its first increment misses that increment).
        for outcome in ("started", "refused"):
            self.failovers.labels(outcome)
        for change in ("acquired", "lost", "released"):
            self.leadership.labels(change)
        self.boot_requests = Counter("anvil_boot_requests", "Requests to the boot routes, by route and outcome "
                                     "(ok, client_error, server_error)", ["route", "outcome"], registry=r)
        self.boot_seconds = Histogram("anvil_boot_request_duration_seconds", "Boot route latency, by route",
                                      ["route"], buckets=BOOT_BUCKETS, registry=r)
        self.tftp_requests = Counter("anvil_tftp_requests", "TFTP read requests, by file (an iPXE binary, or "
                                     "other) and outcome (sent, refused)", ["file", "outcome"], registry=r)
        self.state = StateCollector()
        r.register(self.state)

    def count_tftp(self, file: str, outcome: str) -> None:
        """One TFTP read request (called from the TFTP server's thread; counters are thread-safe)."""
        self.tftp_requests.labels(file, outcome).inc()

    def count_dhcp(self, logfile: Path) -> None:
        """Count the DHCP messages of the managed dnsmasq, from its log (read at scrape time)."""
        self.registry.register(DnsmasqLogCollector(logfile))

    def watch(self, sources: Sources) -> None:
        """What scrapes read from now on (the API app sets it: it knows the store and engine)."""
        self.state.sources = sources

    def render(self) -> bytes:
        """The text exposition. Blocking (the scrape-time sources read the store)."""
        return generate_latest(self.registry)


DHCP_TYPE = re.compile(rb"\b(DHCP(?:DISCOVER|OFFER|REQUEST|ACK|NAK|RELEASE|DECLINE|INFORM)|PXE|BOOTP)\(")


class DnsmasqLogCollector(Collector):
    """``anvil_dhcp_messages_total`` by message type, counted from dnsmasq's own log (``log-dhcp``
    writes one line per message it receives or sends): dnsmasq is a child process with no counters
    of its own that we could read. Each scrape reads what was appended since the last one; a log
    that shrank was started again (a new dnsmasq) and is read from its beginning, the totals kept."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()   # two scrapes at once must not count the same lines twice

    def describe(self) -> list[Metric]:
        return []

    def _read(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < self._offset:
                    self._offset, self._partial = 0, b""
                fh.seek(self._offset)
                chunk = fh.read(max(0, size - self._offset))
        except FileNotFoundError:
            return
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()    # a line dnsmasq is still writing is counted next time
        for line in lines:
            m = DHCP_TYPE.search(line)
            if m is not None:
                kind = m.group(1).decode()
                self._counts[kind] = self._counts.get(kind, 0) + 1

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            try:
                self._read()
            except OSError:
                log.warning("metrics: reading dnsmasq's log %s failed", self.path, exc_info=True)
            counts = dict(self._counts)
        family = CounterMetricFamily("anvil_dhcp_messages", "DHCP messages the managed dnsmasq received or sent, "
                                     "by type (DHCPDISCOVER, DHCPOFFER, DHCPREQUEST, DHCPACK, PXE…), from its log",
                                     labels=["type"])
        for kind, n in sorted(counts.items()):
            family.add_metric([kind], n)
        yield family


def boot_outcome(status: int) -> str:
    if status >= 500:
        return "server_error"
    if status >= 400:
        return "client_error"
    return "ok"


class MeteredBmc:
    """A BMC driver whose coroutine methods are timed and whose errors are counted, by driver and
    method; everything else (attributes, plain methods, ``isinstance`` against the driver
    Protocols) reaches the driver itself."""

    __slots__ = ("_inner", "_metrics", "_name")

    def __init__(self, inner: Any, name: str, metrics: Metrics) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_metrics", metrics)

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if attr.startswith("_") or not inspect.iscoroutinefunction(value):
            return value
        histogram = self._metrics.bmc_calls.labels(self._name, attr)
        errors, driver = self._metrics.bmc_errors, self._name

        async def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return await value(*args, **kwargs)
            except BaseException as exc:
                errors.labels(driver, attr, type(exc).__name__).inc()
                raise
            finally:
                histogram.observe(time.perf_counter() - began)

        return timed

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(self._inner, attr, value)

    def __repr__(self) -> str:
        return f"MeteredBmc({self._inner!r})"


__all__ = ["CONTENT_TYPE", "DnsmasqLogCollector", "MeteredBmc", "Metrics", "Sources", "StateCollector", "boot_outcome"]
