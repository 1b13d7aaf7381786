"""anvil site pair-code|pair|list|show|sync|unpair: paired peer appliances and replication to them."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from appliance.cli.context import CliContext, pass_ctx
from appliance.cli.output import emit, output_option
from appliance.sites.service import SiteInfo, SiteService


def _service(ctx: CliContext) -> SiteService:
    return SiteService(ctx.store(), ctx.box())


def _own_cert_pem(ctx: CliContext) -> str:
    from appliance.api.routes.sites import own_cert
    from appliance.api.tls import ensure_self_signed

    s = ctx.settings
    if not s.api.tls:
        raise click.UsageError("pairing needs HTTPS ([api] tls = true)")
    if s.api.tls_cert is None:
        ensure_self_signed(s.state_dir / "tls")   # what `anvil serve` serves
    return own_cert(s).read_text()


def _row(info: SiteInfo) -> dict[str, Any]:
    d = info.public()
    out, inn = d["outbound"], d["inbound"]
    return {"name": d["name"], "url": d["url"], "push": d["push"], "pending": out["pending"],
            "lag": f"{out['lagSeconds']:.1f}s", "applied": inn["applied"],
            "lastContact": d["lastContactAt"] or "-", "error": d["lastError"] or ""}


@click.group("site")
def site() -> None:
    """Paired sites (peer appliances) and the replication of profiles to them."""


@site.command("pair-code")
@click.option("--as", "as_", metavar="NAME", help="This site's name (needed once, when it has none).")
@pass_ctx
def pair_code(ctx: CliContext, as_: str | None) -> None:
    """Print a one-time pairing code and this site's certificate fingerprint, for the other site."""
    from appliance.sites.peer import fingerprint_of_pem

    pem = _own_cert_pem(ctx)
    code, name = _service(ctx).pair_code(as_)
    fp = fingerprint_of_pem(pem)
    click.echo(f"site:        {name}\ncode:        {code}\nfingerprint: sha256:{fp}\n"
               f"valid for 15 minutes, once. At the other site:\n"
               f"  anvil site pair {name} --url https://THIS-HOST:PORT --code {code} --fingerprint sha256:{fp}")


@site.command("pair")
@click.argument("name")
@click.option("--url", required=True, help="The other site's API: https://HOST:PORT.")
@click.option("--code", required=True, help="The code `anvil site pair-code` printed there.")
@click.option("--fingerprint", required=True, help="The certificate fingerprint it printed (sha256:…).")
@click.option("--as", "as_", metavar="NAME", help="This site's name (needed once, when it has none).")
@click.option("--our-url", help="Where the other site reaches this one (default: https://[api] listen).")
@pass_ctx
def pair(ctx: CliContext, name: str, url: str, code: str, fingerprint: str, as_: str | None,
         our_url: str | None) -> None:
    """Pair with site NAME as its protected site: this site's profiles replicate to it."""
    own = our_url or f"https://{ctx.settings.api.listen}"
    info = asyncio.run(_service(ctx).pair(name, url=url, code=code, fingerprint=fingerprint, own_url=own,
                                          own_cert_pem=_own_cert_pem(ctx), local=as_))
    click.echo(f"paired with site {info.name} at {info.url} (certificate sha256:{info.fingerprint} pinned); "
               f"this site replicates to it")


@site.command("list")
@output_option()
@pass_ctx
def list_(ctx: CliContext, fmt: str) -> None:
    """List paired sites with replication to and from each."""
    rows = _service(ctx).list()
    emit([_row(i) if fmt == "table" else i.public() for i in rows], fmt,
         columns=["name", "url", "push", "pending", "lag", "applied", "lastContact", "error"])


@site.command("show")
@click.argument("name")
@output_option()
@pass_ctx
def show(ctx: CliContext, name: str, fmt: str) -> None:
    """One site: replication both ways (last record applied and its age), and whether it answers now."""
    from appliance.api.routes.sites import probe

    svc = _service(ctx)
    info = svc.get(name)
    data = {**info.public(), "probe": asyncio.run(probe(svc, info))}
    if fmt != "table":
        emit(data, fmt)
        return
    out, inn, pr = data["outbound"], data["inbound"], data["probe"]
    remote = pr.get("remote") or {}
    there = remote.get("inbound") or {}
    lines = {
        "site": f"{info.name} at {info.url}",
        "fingerprint": f"sha256:{info.fingerprint}",
        "reachable": f"yes ({pr['rttMs']} ms)" if pr["reachable"] else f"no: {pr['error']}",
        "we replicate to it": "yes" if info.push else "no",
        "queued / acknowledged": f"{out['queued']} / {out['acknowledged']} ({out['pending']} pending)",
        "lag": f"{out['lagSeconds']:.1f} s",
        "last applied there": (f"v{there.get('applied')} {there.get('lastRecord')}, made "
                               f"{there.get('ageSeconds')} s ago" if there.get("lastRecord") else "-"),
        "applied here from it": (f"v{inn['applied']} {inn['lastRecord']}, made {inn['ageSeconds']} s ago"
                                 if inn["lastRecord"] else "-"),
        "last contact": data["lastContactAt"] or "-",
        "last error": data["lastError"] or "-",
    }
    emit(lines, "table")


@site.command("sync")
@click.argument("name", required=False)
@pass_ctx
def sync(ctx: CliContext, name: str | None) -> None:
    """Replicate now (the appliance also does it every few seconds) to NAME or every site we replicate to."""
    from appliance.sites.kinds import default_registry
    from appliance.sites.replication import Replicator

    rep = Replicator(ctx.store(), ctx.box(), default_registry())
    svc = _service(ctx)
    ids = rep.pushing() if name is None else [rep.site_id(svc.get(name).name)]
    failed = False
    for sid in ids:
        r = asyncio.run(rep.push(sid))
        click.echo(f"{r.site}: {r.queued} queued, {r.sent} sent, acknowledged up to {r.acked}, {r.pending} pending"
                   + (f"; error: {r.error}" if r.error else ""))
        failed |= r.error is not None
    if failed:
        raise click.ClickException("replication did not complete")


@site.command("unpair")
@click.argument("name")
@pass_ctx
def unpair(ctx: CliContext, name: str) -> None:
    """Forget site NAME and revoke its DR token here (replicas from it stay, held by it)."""
    _service(ctx).unpair(name)
    click.echo(f"unpaired site {name}")


COMMANDS = [site]
