"""anvil profile import|export|list|show|validate|delete."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from appliance.cli.context import CliContext, pass_ctx
from appliance.cli.output import emit, output_option
from appliance.errors import ValidationError
from appliance.services.profiles import PROFILE, PROFILE_SORTS, TEMPLATE, ProfileInfo, ProfileService

TENANT = click.option("--tenant", default="default", show_default=True, help="Tenant the name is resolved in.")
TEMPLATE_FLAG = click.option("--template", "is_template", is_flag=True, help="Act on a template, not a profile.")


def read_input(path: str) -> tuple[bytes, str]:
    if path == "-":
        return sys.stdin.buffer.read(), "<stdin>"
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > 1024 * 1024:
            # Refuse before reading: the limit exists to protect the parser and memory.
            raise click.ClickException(f"{path}: {size} bytes is over the 1 MiB document limit")
        return p.read_bytes(), path
    except OSError as exc:
        raise click.ClickException(f"{path}: {exc.strerror}") from None


def warn(source: str, warnings: Sequence[str]) -> None:
    """What was accepted but should be known, on stderr: ``anvil: warning: FILE: reason``."""
    for line in warnings:
        click.echo(f"anvil: warning: {source}: {line}", err=True)


def summary(info: ProfileInfo) -> dict[str, object]:
    spec = info.profile.spec
    boot = spec.boot.source.type if spec.boot is not None else None
    return {"name": info.name, "tenant": info.tenant, "kind": info.kind, "state": info.state, "blade": info.blade,
            "boot": boot, "identities": len(info.identities),
            "updated": info.updated_at.isoformat(timespec="seconds")}


@click.group("profile")
def profile() -> None:
    """Server profiles: the portable identity of a server."""


@profile.command("import")
@click.argument("files", nargs=-1, required=True)
@click.option("--replace", is_flag=True, help="Update a profile that already exists.")
@pass_ctx
def import_(ctx: CliContext, files: tuple[str, ...], replace: bool) -> None:
    """Import profiles or templates from YAML or XML FILES ('-' for stdin)."""
    if ctx.remote is not None:
        from appliance.domain.profile.sniff import looks_like_xml

        for path in files:
            data, source = read_input(path)
            ctype = "application/xml" if looks_like_xml(data) else "application/yaml"
            got = ctx.remote.json("POST", "/profiles", query={"replace": replace or None}, data=data,
                                  content_type=ctype)
            click.echo(f"imported {got['kind']} {got['tenant']}/{got['name']} ({got['identities']} identities)")
            warn(source, got.get("warnings") or [])
        return
    svc = ProfileService(ctx.store())
    for path in files:
        data, source = read_input(path)
        info = svc.import_document(data, source=source, replace=replace,
                                   parking_vlan=ctx.settings.network.parking_vlan)
        click.echo(f"imported {info.kind} {info.tenant}/{info.name} ({len(info.identities)} identities)")
        warn(source, info.warnings)


@profile.command("validate")
@click.argument("files", nargs=-1, required=True)
@click.option("--document-only", is_flag=True,
              help="Check the documents alone, not against the store (identity pools, identities held).")
@pass_ctx
def validate(ctx: CliContext, files: tuple[str, ...], document_only: bool) -> None:
    """Check FILES as `profile import` would, without importing them.

    \b
    The document: the profile schema, and the parking VLAN (network.parking_vlan).
    Against the store (the local one, or --url's appliance): that the identity pools it
    names exist and hold the right kind, and that no other profile holds its identities.
    Without a store (none created yet, or --document-only) only the document is checked,
    and each line says so."""
    if ctx.remote is not None and not document_only:
        _validate_remote(ctx, files)
        return
    svc, scope = _validation_store(ctx, document_only)
    failed: list[ValidationError] = []
    for path in files:
        data, source = read_input(path)
        try:
            p = ProfileService.parse(data, source=source, parking_vlan=ctx.settings.network.parking_vlan)
            warnings = svc.check(p, source=source) if svc is not None else []
        except ValidationError as exc:
            failed.append(exc)
            continue
        click.echo(f"{source}: valid {p.kind} {p.metadata.tenant}/{p.metadata.name}; checked {scope}")
        warn(source, warnings)
    if failed:
        raise ValidationError([i for exc in failed for i in exc.issues],
                              source=failed[0].source if len(failed) == 1 else None)


def _validation_store(ctx: CliContext, document_only: bool) -> tuple[ProfileService | None, str]:
    """The store to check against, and what the check covers (said on every line)."""
    if document_only:
        return None, "the document only (--document-only: identity pools and held identities not checked)"
    if ctx.settings.store.url is None:
        db = ctx.settings.state_dir / "anvil.db"
        if not db.exists():   # no appliance here yet: do not create a store just to look into it
            return None, (f"the document only (no store at {db}: identity pools and held identities not "
                          "checked)")
    return ProfileService(ctx.store()), "the document and the store (identity pools, identities held)"


def _validate_remote(ctx: CliContext, files: tuple[str, ...]) -> None:
    from appliance.domain.profile.sniff import looks_like_xml

    assert ctx.remote is not None
    failed: list[ValidationError] = []
    for path in files:
        data, source = read_input(path)
        ctype = "application/xml" if looks_like_xml(data) else "application/yaml"
        try:
            got = ctx.remote.json("POST", "/profile-validation", data=data, content_type=ctype)
        except ValidationError as exc:
            failed.append(ValidationError(exc.issues, source=source))
            continue
        click.echo(f"{source}: valid {got['kind']} {got['tenant']}/{got['name']}; checked the document and "
                   "the appliance's store (identity pools, identities held)")
        warn(source, got.get("warnings") or [])
    if failed:
        raise ValidationError([i for exc in failed for i in exc.issues],
                              source=failed[0].source if len(failed) == 1 else None)


@profile.command("export")
@click.argument("name")
@click.option("-f", "--format", "fmt", type=click.Choice(["yaml", "xml"]), default="yaml", show_default=True)
@TENANT
@TEMPLATE_FLAG
@pass_ctx
def export(ctx: CliContext, name: str, fmt: str, tenant: str, is_template: bool) -> None:
    """Print a profile as YAML or XML."""
    kind = TEMPLATE if is_template else PROFILE
    if ctx.remote is not None:
        media = "application/xml" if fmt == "xml" else "application/yaml"
        _s, _t, body = ctx.remote.request("GET", f"/{'templates' if is_template else 'profiles'}/{name}",
                                          query={"tenant": tenant}, accept=media)
        click.echo(body.decode().rstrip("\n"))
        return
    click.echo(ProfileService(ctx.store()).export(kind, tenant, name, fmt).rstrip("\n"))


PROFILE_COLUMNS = ["name", "tenant", "kind", "state", "blade", "boot", "identities", "updated"]


@profile.command("list")
@click.option("--tenant", default=None, help="Only this tenant.")
@click.option("--kind", type=click.Choice(["profile", "template", "all"]), default="profile", show_default=True)
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="state, tenant or blade; repeatable.")
@click.option("--search", default=None, help="Text in the name, tenant, state or blade.")
@click.option("--sort", type=click.Choice(PROFILE_SORTS), default="tenant", show_default=True,
              help="tenant: by tenant, then name.")
@output_option(wide=True)
@pass_ctx
def list_(ctx: CliContext, tenant: str | None, kind: str, filters: tuple[str, ...], search: str | None, sort: str,
          fmt: str) -> None:
    """List profiles (or templates) with their state and the blade each is live on."""
    from appliance.cli.blade import parse_filters

    f = parse_filters(filters, ("state", "tenant", "blade"))
    tenant = f.get("tenant", tenant)
    k = {"profile": PROFILE, "template": TEMPLATE, "all": None}[kind]
    if ctx.remote is not None:
        rows = []
        for path in (["/profiles"] if kind == "profile" else ["/templates"] if kind == "template"
                     else ["/profiles", "/templates"]):
            rows += ctx.remote.json("GET", path, query={"tenant": tenant, "limit": 1000, "search": search,
                                                        "sort": sort, "state": f.get("state"),
                                                        "blade": f.get("blade")})["items"]
        emit(rows, fmt, columns=PROFILE_COLUMNS)
        return
    svc = ProfileService(ctx.store())
    rows = [summary(i) for i in svc.list(kind=k, tenant=tenant, search=search, sort=sort, state=f.get("state"),
                                         blade=f.get("blade"))]
    emit(rows, fmt, columns=PROFILE_COLUMNS)
    if not rows and tenant:
        from appliance.domain.suggest import close_names

        known = {i.tenant for i in svc.list(kind=k)}
        if tenant not in known and (close := close_names(tenant, known)):
            click.echo(f"anvil: note: no tenant {tenant!r}; did you mean {' or '.join(close)}?", err=True)


@profile.command("show")
@click.argument("name")
@TENANT
@TEMPLATE_FLAG
@output_option()
@pass_ctx
def show(ctx: CliContext, name: str, tenant: str, is_template: bool, fmt: str) -> None:
    """Show one profile with the identities it holds."""
    from appliance.domain.profile import to_dict

    if ctx.remote is not None:
        got = ctx.remote.json("GET", f"/{'templates' if is_template else 'profiles'}/{name}", query={"tenant": tenant})
        document = got.pop("document")
        held = got.pop("heldIdentities")
        if fmt == "table":
            emit(got, fmt)
            for i in held:
                click.echo(f"  {i['kind']:<5} {i['value']}  ({i['path']})")
        else:
            emit({**got, "heldIdentities": held, "document": document}, fmt)
        return
    info = ProfileService(ctx.store()).get(TEMPLATE if is_template else PROFILE, tenant, name)
    if fmt == "table":
        emit(summary(info), fmt)
        for path, kind, value in info.identities:
            click.echo(f"  {kind:<5} {value}  ({path})")
    else:
        emit({**summary(info), "heldIdentities": [{"path": p, "kind": k, "value": v} for p, k, v in info.identities],
              "document": to_dict(info.profile)}, fmt)


@profile.command("delete")
@click.argument("name")
@TENANT
@TEMPLATE_FLAG
@pass_ctx
def delete(ctx: CliContext, name: str, tenant: str, is_template: bool) -> None:
    """Delete a profile; the identities it held return to their pools."""
    kind = TEMPLATE if is_template else PROFILE
    if ctx.remote is not None:
        ctx.remote.request("DELETE", f"/{'templates' if is_template else 'profiles'}/{name}",
                           query={"tenant": tenant})
        click.echo(f"deleted {kind} {tenant}/{name}")
        return
    ProfileService(ctx.store()).delete(kind, tenant, name)
    click.echo(f"deleted {kind} {tenant}/{name}")


def _engine_running(ctx: CliContext) -> None:
    from appliance.engine.leader import leader_alive

    if not leader_alive(ctx.store()):
        raise click.ClickException("no appliance is running (start `anvil serve`)")


@profile.command("assign")
@click.argument("name")
@TENANT
@click.option("--blade", default=None, help="Stamp this blade.")
@click.option("--pool", default=None, help="Choose the best spare in this blade pool (default: spares).")
@click.option("--dry-run", is_flag=True, help="Show which blade would be chosen and why others are rejected.")
@click.option("--no-wait", is_flag=True, help="Return as soon as the job is submitted.")
@click.option("--idempotency-key", default=None, help="Submitting again with the same key returns the same job.")
@pass_ctx
def assign(ctx: CliContext, name: str, tenant: str, blade: str | None, pool: str | None, dry_run: bool,
           no_wait: bool, idempotency_key: str | None) -> None:
    """Stamp a profile onto a spare blade."""
    from appliance.cli.job import exit_for, follow
    from appliance.services.jobs import JobService

    if ctx.remote is not None:
        _remote_assign(ctx, name, tenant, blade, pool, dry_run, no_wait, idempotency_key)
        return
    svc = JobService(ctx.store())
    if dry_run:
        pl = svc.dry_run(name, tenant=tenant, blade=blade, pool=pool)
        click.echo(f"would stamp {tenant}/{name} on: {pl.best or 'nothing'}")
        for other in pl.chosen[1:]:
            click.echo(f"  also suitable: {other}")
        for r in pl.rejected:
            click.echo(f"  rejected {r.blade}: {r.reason}")
        if pl.best is None:
            raise click.ClickException("no spare blade meets the requirements")
        return
    _engine_running(ctx)
    info = svc.submit_assign(name, tenant=tenant, blade=blade, pool=pool, idempotency_key=idempotency_key,
                             created_by=_who())
    if no_wait:
        click.echo(info.id)
        return
    exit_for(follow(svc, info.id))


@profile.command("release")
@click.argument("name")
@TENANT
@click.option("--no-wait", is_flag=True, help="Return as soon as the job is submitted.")
@pass_ctx
def release(ctx: CliContext, name: str, tenant: str, no_wait: bool) -> None:
    """Take a profile off its blade; the blade goes back to the spares, the profile keeps its identities."""
    from appliance.cli.job import exit_for, follow
    from appliance.services.jobs import JobService

    if ctx.remote is not None:
        got = ctx.remote.json("POST", f"/profiles/{name}/release", json_body={"tenant": tenant})
        if no_wait:
            click.echo(got["id"])
            return
        exit_for(follow(ctx.remote, got["id"]))
        return
    _engine_running(ctx)
    svc = JobService(ctx.store())
    info = svc.submit_release(name, tenant=tenant, created_by=_who())
    if no_wait:
        click.echo(info.id)
        return
    exit_for(follow(svc, info.id))


def _remote_assign(ctx: CliContext, name: str, tenant: str, blade: str | None, pool: str | None, dry_run: bool,
                   no_wait: bool, idempotency_key: str | None) -> None:
    from appliance.cli.job import exit_for, follow

    assert ctx.remote is not None
    body = {"tenant": tenant, "blade": blade, "pool": pool}
    if dry_run:
        pl = ctx.remote.json("POST", f"/profiles/{name}/dry-run", json_body=body)
        click.echo(f"would stamp {tenant}/{name} on: {pl['best'] or 'nothing'}")
        for other in pl["chosen"][1:]:
            click.echo(f"  also suitable: {other}")
        for r in pl["rejected"]:
            click.echo(f"  rejected {r['blade']}: {r['reason']}")
        if pl["best"] is None:
            raise click.ClickException("no spare blade meets the requirements")
        return
    got = ctx.remote.json("POST", f"/profiles/{name}/assign", json_body=body,
                          headers={"Idempotency-Key": idempotency_key} if idempotency_key else None)
    if no_wait:
        click.echo(got["id"])
        return
    exit_for(follow(ctx.remote, got["id"]))


def _who() -> str:
    import getpass

    return f"local:{getpass.getuser()}"


COMMANDS = [profile]
