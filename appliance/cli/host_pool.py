"""anvil host-pool create|list|show|grow|shrink|scale|hosts|release|delete|policy|quota.

Growing, shrinking and scaling move the pool's size; the running appliance's engine
requests and releases the hosts (``anvil host-pool show`` follows them). With ``--url``
every command goes to a remote appliance's API instead of the local store.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from pathlib import Path
from typing import Any

import click

from appliance.cli.context import CliContext, pass_ctx
from appliance.cli.output import emit, output_option
from appliance.domain.hostpool import Spread
from appliance.errors import Issue, ValidationError
from appliance.services.hostpools import HostPoolService

TENANT = click.option("--tenant", default=None, help="Tenant of the pool (default: default; a tenant-scoped "
                                                     "token's own with --url).")
SPREADS = click.Choice([s.value for s in Spread])
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smh]?)$")


def duration(text: str, what: str) -> float:
    """``300``, ``300s``, ``5m``, ``1h`` → seconds."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise ValidationError([Issue(what, f"{text!r} is not a duration (e.g. 90s, 5m, 1h)")])
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


class _Pools:
    """The same calls on the local store or a remote appliance; every answer is the API's JSON."""

    def __init__(self, ctx: CliContext) -> None:
        self.remote = ctx.remote
        self.svc = HostPoolService(ctx.store()) if ctx.remote is None else None

    def _path(self, name: str, *rest: str) -> str:
        return "/host-pools/" + "/".join(urllib.parse.quote(p, safe="") for p in (name, *rest))

    def _local(self) -> HostPoolService:
        assert self.svc is not None
        return self.svc

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.remote is not None:
            return dict(self.remote.json("POST", "/host-pools", json_body=body))
        return self._local().create(body["name"], template=body["template"], tenant=body.get("tenant"),
                                    blade_pool=body["bladePool"], min_size=body["min"], max_size=body["max"],
                                    size=body.get("size"), spread=body["spread"],
                                    keep_profiles=body["keepProfiles"]).public()

    def pools(self, tenant: str | None) -> list[dict[str, Any]]:
        if self.remote is not None:
            return list(self.remote.json("GET", "/host-pools", query={"tenant": tenant})["items"])
        return [p.public() for p in self._local().list(tenant=tenant)]

    def get(self, name: str, tenant: str | None) -> dict[str, Any]:
        if self.remote is not None:
            return dict(self.remote.json("GET", self._path(name), query={"tenant": tenant}))
        return self._local().get(name, tenant=tenant).public()

    def hosts(self, name: str, tenant: str | None, every: bool) -> list[dict[str, Any]]:
        if self.remote is not None:
            return list(self.remote.json("GET", self._path(name, "hosts"),
                                         query={"tenant": tenant, "all": every or None})["items"])
        return [h.public() for h in self._local().hosts(name, tenant=tenant, include_released=every)]

    def resize(self, name: str, tenant: str | None, *, size: int | None = None, grow: int = 0) -> dict[str, Any]:
        if self.remote is not None:
            if size is not None:
                return dict(self.remote.json("PUT", self._path(name, "size"), query={"tenant": tenant},
                                             json_body={"size": size}))
            if grow > 0:
                return dict(self.remote.json("POST", self._path(name, "hosts"), query={"tenant": tenant},
                                             json_body={"count": grow}))
            now = self.get(name, tenant)
            return dict(self.remote.json("PUT", self._path(name, "size"), query={"tenant": tenant},
                                         json_body={"size": now["size"] + grow}))
        return self._local().resize(name, size=size, grow=grow, tenant=tenant).public()

    def release(self, name: str, host: str, tenant: str | None, keep: bool, replace: bool) -> dict[str, Any]:
        if self.remote is not None:
            return dict(self.remote.json("DELETE", self._path(name, "hosts", host),
                                         query={"tenant": tenant, "keepProfile": keep or None,
                                                "replace": replace or None}))
        return self._local().release(name, host, keep_profile=keep, replace=replace, tenant=tenant).public()

    def update(self, name: str, tenant: str | None, body: dict[str, Any]) -> dict[str, Any]:
        if self.remote is not None:
            return dict(self.remote.json("PATCH", self._path(name), query={"tenant": tenant}, json_body=body))
        return self._local().update(name, tenant=tenant, min_size=body.get("min"), max_size=body.get("max"),
                                    policy=body.get("policy"), remove_policy="policy" in body and not body["policy"]
                                    ).public()

    def delete(self, name: str, tenant: str | None) -> None:
        if self.remote is not None:
            self.remote.request("DELETE", self._path(name), query={"tenant": tenant})
            return
        self._local().delete(name, tenant=tenant)

    def events(self, name: str, tenant: str | None, after: int, wait: int) -> dict[str, Any]:
        if self.remote is not None:
            return dict(self.remote.json("GET", self._path(name, "events"),
                                         query={"tenant": tenant, "after": after, "wait": wait or None}))
        page = self._local().feed(name, after=after, tenant=tenant)
        if wait and not page["items"]:
            time.sleep(1.0)      # the local store has no long poll: look again in a second
        return page

    def set_quota(self, tenant: str, max_hosts: int | None) -> dict[str, Any]:
        if self.remote is not None:
            return dict(self.remote.json("PUT", f"/host-quotas/{urllib.parse.quote(tenant, safe='')}",
                                         json_body={"maxHosts": max_hosts}))
        return self._local().set_quota(tenant, max_hosts)


def _summary(p: dict[str, Any]) -> dict[str, Any]:
    return {"name": p["name"], "tenant": p["tenant"], "template": p["template"], "size": p["size"],
            "ready": p["ready"], "bounds": f"{p['min']}-{p['max']}", "spread": p["spread"],
            "status": "at size" if p["converged"] else f"converging: {p['waiting'] or 'hosts on their way'}"}


def _said(p: dict[str, Any], was: int | None = None) -> str:
    moved = f" (was {was})" if was is not None and was != p["size"] else ""
    return (f"host pool {p['tenant']}/{p['name']}: size {p['size']}{moved}, {p['ready']} ready; the appliance "
            f"converges to it (anvil host-pool show {p['name']})")


@click.group("host-pool")
def host_pool() -> None:
    """Pools of hypervisor hosts that VM managers grow and shrink."""


@host_pool.command("create")
@click.argument("name")
@click.option("--template", required=True, help="The profile template every host is stamped from.")
@TENANT
@click.option("--blade-pool", default="spares", show_default=True, help="Blade pool the hosts are drawn from.")
@click.option("--size", type=click.IntRange(0, 10000), default=None, help="Hosts to start with (default: min).")
@click.option("--min", "min_size", type=click.IntRange(0, 10000), default=0, show_default=True)
@click.option("--max", "max_size", type=click.IntRange(0, 10000), default=100, show_default=True)
@click.option("--spread", type=SPREADS, default=Spread.CHASSIS.value, show_default=True,
              help="chassis: no two hosts in one chassis while another has a spare; chassis-strict: never.")
@click.option("--keep-profiles", is_flag=True, help="Keep a released host's profile (default: delete it).")
@output_option()
@pass_ctx
def create(ctx: CliContext, name: str, template: str, tenant: str | None, blade_pool: str, size: int | None,
           min_size: int, max_size: int, spread: str, keep_profiles: bool, fmt: str) -> None:
    """Create a host pool of hosts stamped from a template."""
    body = {"name": name, "template": template, "bladePool": blade_pool, "min": min_size, "max": max_size,
            "spread": spread, "keepProfiles": keep_profiles, **({"tenant": tenant} if tenant else {}),
            **({"size": size} if size is not None else {})}
    got = _Pools(ctx).create(body)
    if fmt != "table":
        emit(got, fmt)
        return
    click.echo(f"created host pool {got['tenant']}/{got['name']} (template {got['template']}, size {got['size']})")


@host_pool.command("list")
@TENANT
@output_option()
@pass_ctx
def list_(ctx: CliContext, tenant: str | None, fmt: str) -> None:
    """List host pools: size, ready hosts, and why a pool is not at its size."""
    pools = _Pools(ctx).pools(tenant)
    if fmt in ("json", "yaml"):
        emit(pools, fmt)
        return
    emit([_summary(p) for p in pools], fmt, columns=["name", "tenant", "template", "size", "ready", "bounds",
                                                      "spread", "status"])


@host_pool.command("show")
@click.argument("name")
@TENANT
@output_option()
@pass_ctx
def show(ctx: CliContext, name: str, tenant: str | None, fmt: str) -> None:
    """Show a pool: its size and hosts, and why the SLA policy changed its size."""
    api = _Pools(ctx)
    pool = api.get(name, tenant)
    hosts = api.hosts(name, pool["tenant"], False)
    if fmt != "table":
        emit({**pool, "hostList": hosts}, fmt)
        return
    click.echo(f"host pool {pool['tenant']}/{pool['name']}: template {pool['template']}, blade pool "
               f"{pool['bladePool']}, spread {pool['spread']}, size {pool['size']} (min {pool['min']}, max "
               f"{pool['max']}), {pool['ready']} ready")
    if pool["waiting"]:
        click.echo(f"waiting: {pool['waiting']}")
    p = pool.get("policy")
    if p:
        click.echo(f"policy: grow when average {p['metric']} > {p['growAbove']:g}% for {p['forSeconds']:g} s, "
                   f"shrink below {p['shrinkBelow']:g}%, cool-down {p['cooldownSeconds']:g} s, step {p['step']}")
    if hosts:
        click.echo("")
        emit([{"host": h["name"], "id": h["id"], "state": h["state"], "blade": h["blade"], "uuid": h["uuid"],
               "macs": h["macs"], "reason": h["reason"]} for h in hosts], "table",
             columns=["host", "id", "state", "blade", "uuid", "macs", "reason"])
    if pool["decisions"]:
        click.echo("\nsize decisions (newest first):")
        for d in pool["decisions"]:
            click.echo(f"  {d['at'][:19]}  {d['action']} {d['from']} -> {d['to']}: {d['reason']}")


@host_pool.command("grow")
@click.argument("name")
@click.argument("count", type=click.IntRange(1, 10000))
@TENANT
@pass_ctx
def grow(ctx: CliContext, name: str, count: int, tenant: str | None) -> None:
    """Add COUNT hosts to a pool."""
    got = _Pools(ctx).resize(name, tenant, grow=count)
    click.echo(_said(got, got["size"] - count))


@host_pool.command("shrink")
@click.argument("name")
@click.argument("count", type=click.IntRange(1, 10000))
@TENANT
@pass_ctx
def shrink(ctx: CliContext, name: str, count: int, tenant: str | None) -> None:
    """Take COUNT hosts out of a pool (those not ready yet first, then the newest)."""
    got = _Pools(ctx).resize(name, tenant, grow=-count)
    click.echo(_said(got, got["size"] + count))


@host_pool.command("scale")
@click.argument("name")
@click.argument("size", type=click.IntRange(0, 10000))
@TENANT
@pass_ctx
def scale(ctx: CliContext, name: str, size: int, tenant: str | None) -> None:
    """Set the size a pool converges to."""
    api = _Pools(ctx)
    was = api.get(name, tenant)["size"]
    click.echo(_said(api.resize(name, tenant, size=size), was))


@host_pool.command("hosts")
@click.argument("name")
@TENANT
@click.option("--all", "every", is_flag=True, help="Released hosts too.")
@output_option(wide=True)
@pass_ctx
def hosts_(ctx: CliContext, name: str, tenant: str | None, every: bool, fmt: str) -> None:
    """List a pool's hosts: stable id, state, blade and identity."""
    rows = _Pools(ctx).hosts(name, tenant, every)
    emit(rows, fmt, columns=["name", "id", "state", "blade", "uuid", "macs"],
         wide=["name", "id", "state", "blade", "uuid", "macs", "iqn", "managementAddress", "reason"])


@host_pool.command("release")
@click.argument("name")
@click.argument("host")
@TENANT
@click.option("--keep-profile", is_flag=True, help="Keep the host's profile (and its identities).")
@click.option("--replace", is_flag=True, help="Keep the pool's size: a new host takes this one's place.")
@pass_ctx
def release(ctx: CliContext, name: str, host: str, tenant: str | None, keep_profile: bool, replace: bool) -> None:
    """Drain and release one host (by id or name)."""
    got = _Pools(ctx).release(name, host, tenant, keep_profile, replace)
    click.echo(f"host {got['name']} ({got['id']}) will be {'replaced' if replace else 'released'}")


@host_pool.command("delete")
@click.argument("name")
@TENANT
@pass_ctx
def delete(ctx: CliContext, name: str, tenant: str | None) -> None:
    """Delete a pool whose hosts are all released."""
    _Pools(ctx).delete(name, tenant)
    click.echo(f"deleted host pool {name}")


@host_pool.command("policy")
@click.argument("name")
@TENANT
@click.option("--grow-above", type=click.FloatRange(0, 100), default=75.0, show_default=True,
              help="Grow when the ready hosts' average is above this percentage…")
@click.option("--shrink-below", type=click.FloatRange(0, 100), default=30.0, show_default=True,
              help="…shrink when below this one…")
@click.option("--for", "hold", default="5m", show_default=True, help="…for this long (90s, 5m, 1h).")
@click.option("--cooldown", default="10m", show_default=True, help="Nothing moves for this long after a change.")
@click.option("--metric", type=click.Choice(["cpu", "memory"]), default="cpu", show_default=True)
@click.option("--step", type=click.IntRange(1, 100), default=1, show_default=True)
@click.option("--off", is_flag=True, help="Remove the policy: the size changes only when asked.")
@pass_ctx
def policy(ctx: CliContext, name: str, tenant: str | None, grow_above: float, shrink_below: float, hold: str,
           cooldown: str, metric: str, step: int, off: bool) -> None:
    """Grow and shrink a pool from its hosts' reported utilisation (SLA policy)."""
    if off:
        got = _Pools(ctx).update(name, tenant, {"policy": None})
        click.echo(f"host pool {got['name']}: no SLA policy")
        return
    body = {"metric": metric, "growAbove": grow_above, "shrinkBelow": shrink_below,
            "forSeconds": duration(hold, "for"), "cooldownSeconds": duration(cooldown, "cooldown"), "step": step}
    got = _Pools(ctx).update(name, tenant, {"policy": body})
    p = got["policy"]
    click.echo(f"host pool {got['name']}: grow when average {p['metric']} > {p['growAbove']:g}% for "
               f"{p['forSeconds']:g} s, shrink below {p['shrinkBelow']:g}%, cool-down {p['cooldownSeconds']:g} s")


@host_pool.command("quota")
@click.argument("tenant")
@click.option("--max-hosts", type=click.IntRange(0, 10000), default=None, help="The most hosts of its pools.")
@click.option("--none", "unlimited", is_flag=True, help="Remove the tenant's quota.")
@pass_ctx
def quota(ctx: CliContext, tenant: str, max_hosts: int | None, unlimited: bool) -> None:
    """Set the most hosts a tenant's pools may hold together."""
    if (max_hosts is None) == (not unlimited):
        raise click.UsageError("give --max-hosts N or --none")
    got = _Pools(ctx).set_quota(tenant, None if unlimited else max_hosts)
    limit = "no quota" if got["maxHosts"] is None else f"quota {got['maxHosts']} hosts"
    click.echo(f"tenant {tenant}: {limit}; its pools hold {got['used']}")


def _event_line(e: dict[str, Any]) -> str:
    h = e["host"]
    extra = "".join(f" {k}={e[k]}" for k in ("failover", "replacement", "reason") if e.get(k))
    return (f"#{e['cursor']} {e['at'][:19]} {e['event']:<15} {h['name']} {h['id']} {h['state']} "
            f"{h['blade'] or '-'}{extra}")


@host_pool.command("events")
@click.argument("name")
@TENANT
@click.option("--after", type=click.IntRange(0), default=0, show_default=True, help="Events after this cursor.")
@click.option("--follow", is_flag=True, help="Keep printing new events (Ctrl-C stops).")
@output_option()
@pass_ctx
def events(ctx: CliContext, name: str, tenant: str | None, after: int, follow: bool, fmt: str) -> None:
    """A pool's events after a cursor (host.requested, ready, failed, replaced, released)."""
    api = _Pools(ctx)
    while True:
        page = api.events(name, tenant, after, 30 if follow else 0)
        if fmt == "table":
            for e in page["items"]:
                click.echo(_event_line(e))
        elif page["items"] or not follow:
            emit(page["items"], fmt)
        after = page["cursor"]
        if not follow and not page["more"]:
            return


def _hooks(ctx: CliContext) -> Any:
    from appliance.services.host_webhooks import HostWebhookService

    return HostWebhookService(ctx.store(), ctx.box())


@host_pool.group("webhook")
def webhook() -> None:
    """Where a pool's events are POSTed, signed (X-Anvil-Signature), and each one's delivery log."""


@webhook.command("add")
@click.argument("name")
@click.argument("url")
@TENANT
@click.option("--secret-file", type=click.Path(dir_okay=False, allow_dash=True), required=True,
              help="File holding the HMAC secret that signs the bodies ('-' for stdin).")
@click.option("--after", type=click.IntRange(0), default=None, help="Replay events after this cursor (default: "
                                                                    "new events only).")
@pass_ctx
def webhook_add(ctx: CliContext, name: str, url: str, tenant: str | None, secret_file: str,
                after: int | None) -> None:
    """Send a pool's events to URL."""

    from appliance.cli.failover import _read_secret

    secret = _read_secret(Path(secret_file))
    assert secret is not None
    if ctx.remote is not None:
        got = ctx.remote.json("POST", f"/host-pools/{urllib.parse.quote(name, safe='')}/webhooks",
                              query={"tenant": tenant}, json_body={"url": url, "secret": secret.reveal(),
                                                                   **({"after": after} if after is not None else {})})
    else:
        got = _hooks(ctx).add(name, url, secret, after=after, tenant=tenant).public()
    click.echo(f"webhook #{got['id']} of host pool {name}: events after #{got['cursor']} go to {got['url']}")


@webhook.command("list")
@click.argument("name")
@TENANT
@output_option()
@pass_ctx
def webhook_list(ctx: CliContext, name: str, tenant: str | None, fmt: str) -> None:
    """A pool's webhooks: where each is in the feed, deliveries, failures."""
    if ctx.remote is not None:
        rows = ctx.remote.json("GET", f"/host-pools/{urllib.parse.quote(name, safe='')}/webhooks",
                               query={"tenant": tenant})["items"]
    else:
        rows = [w.public() for w in _hooks(ctx).list(name, tenant=tenant)]
    emit(rows, fmt, columns=["id", "url", "cursor", "delivered", "failures", "givenUp", "nextAttemptAt"])


@webhook.command("remove")
@click.argument("name")
@click.argument("webhook_id", type=click.IntRange(1))
@TENANT
@pass_ctx
def webhook_remove(ctx: CliContext, name: str, webhook_id: int, tenant: str | None) -> None:
    """Stop sending a pool's events to a webhook."""
    if ctx.remote is not None:
        ctx.remote.request("DELETE", f"/host-pools/{urllib.parse.quote(name, safe='')}/webhooks/{webhook_id}",
                           query={"tenant": tenant})
    else:
        _hooks(ctx).remove(name, webhook_id, tenant=tenant)
    click.echo(f"removed webhook #{webhook_id} of host pool {name}")


@webhook.command("log")
@click.argument("name")
@click.argument("webhook_id", type=click.IntRange(1))
@TENANT
@output_option()
@pass_ctx
def webhook_log(ctx: CliContext, name: str, webhook_id: int, tenant: str | None, fmt: str) -> None:
    """A webhook's delivery log, newest first: each try, its answer and how long it took."""
    if ctx.remote is not None:
        rows = ctx.remote.json("GET", f"/host-pools/{urllib.parse.quote(name, safe='')}/webhooks/{webhook_id}"
                                      "/deliveries", query={"tenant": tenant})["items"]
    else:
        rows = _hooks(ctx).deliveries(name, webhook_id, tenant=tenant)
    emit(rows, fmt, columns=["at", "event", "cursor", "attempt", "ok", "status", "error", "elapsedMs"])


COMMANDS = [host_pool]
