"""anvil user add|list|passwd|delete, and anvil token create|list|revoke."""

from __future__ import annotations

import sys

import click

from appliance.cli.context import CliContext, local_who, pass_ctx
from appliance.cli.output import emit, output_option
from appliance.services.tokens import TokenService, parse_ttl
from appliance.services.users import ROLES, UserService

ROLE = click.option("--role", type=click.Choice(ROLES), required=True, help="What the holder may do.")
TENANT = click.option("--tenant", default=None, help="Scope to one tenant (default: the whole appliance).")


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise click.UsageError("give the password with --password-stdin")
    return str(click.prompt("password", hide_input=True, confirmation_prompt=True))


@click.group("user")
def user() -> None:
    """Local users of the console and API."""


@user.command("add")
@click.argument("name")
@ROLE
@TENANT
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@pass_ctx
def add(ctx: CliContext, name: str, role: str, tenant: str | None, password_stdin: bool) -> None:
    """Add a user (the password is read from stdin or prompted, never an argument)."""
    info = UserService(ctx.store()).add(name, read_password(password_stdin), role=role, tenant=tenant)
    click.echo(f"added user {info.name} ({info.role}{', tenant ' + info.tenant if info.tenant else ''})")


@user.command("list")
@output_option()
@pass_ctx
def list_users(ctx: CliContext, fmt: str) -> None:
    """List users."""
    emit([u.public() for u in UserService(ctx.store()).list()], fmt,
         columns=["name", "role", "tenant", "lockedUntil", "createdAt"])


@user.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input.")
@pass_ctx
def passwd(ctx: CliContext, name: str, password_stdin: bool) -> None:
    """Set a user's password (ends the user's console sessions and lifts a login lock)."""
    UserService(ctx.store()).set_password(name, read_password(password_stdin))
    click.echo(f"password of {name} changed")


@user.command("delete")
@click.argument("name")
@pass_ctx
def delete_user(ctx: CliContext, name: str) -> None:
    """Delete a user."""
    UserService(ctx.store()).delete(name)
    click.echo(f"deleted user {name}")


@click.group("token")
def token() -> None:
    """Bearer tokens for the API."""


@token.command("create")
@click.argument("name")
@ROLE
@TENANT
@click.option("--expires", default="90d", show_default=True, help="Lifetime: 90d, 12h, 30m, or 'never'.")
@pass_ctx
def create(ctx: CliContext, name: str, role: str, tenant: str | None, expires: str) -> None:
    """Create a token and print it; it is shown only this once (stored hashed)."""
    ttl = None if expires == "never" else parse_ttl(expires)
    click.echo(TokenService(ctx.store()).create(name, role=role, tenant=tenant, ttl=ttl, owner=local_who()))


@token.command("list")
@output_option()
@pass_ctx
def list_tokens(ctx: CliContext, fmt: str) -> None:
    """List tokens (never their values)."""
    emit([t.public() for t in TokenService(ctx.store()).list()], fmt,
         columns=["id", "name", "owner", "role", "tenant", "state", "expiresAt"])


@token.command("revoke")
@click.argument("name")
@click.option("--id", "token_id", type=int, default=None,
              help="The token's id (anvil token list), when several owners have a token of that name.")
@pass_ctx
def revoke(ctx: CliContext, name: str, token_id: int | None) -> None:
    """Revoke the live token called NAME (yours, or the only one of that name)."""
    info = TokenService(ctx.store()).revoke(name, token_id=token_id, owner=local_who())
    click.echo(f"revoked token {info.name} (id {info.id})")


COMMANDS = [user, token]
