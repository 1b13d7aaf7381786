"""``-o table|wide|json|yaml`` output for list and show commands.

A table fits :data:`WIDTH` columns: when the rows are wider, the widest columns are cut
(ending in ``…``) until it fits; ``-o wide`` adds the long columns (a BMC's URL) and is
never cut, and JSON and YAML always carry every field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import click

FORMATS = click.Choice(["table", "json", "yaml"])
LIST_FORMATS = click.Choice(["table", "wide", "json", "yaml"])
WIDTH = 120
MIN_CUT = 10        # a cut column keeps at least this many characters
GAP = "  "

F = TypeVar("F", bound=Callable[..., Any])
Column = str | tuple[str, str]     # a row key, or (row key, header)


def output_option(default: str = "table", *, wide: bool = False) -> Callable[[F], F]:
    return click.option("-o", "--output", "fmt", type=LIST_FORMATS if wide else FORMATS, default=default,
                        show_default=True,
                        help="Output format" + (" (wide: every column, never cut)." if wide else "."))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value) or "-"
    if isinstance(value, Mapping):
        return ",".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    return str(value)


def _key(c: Column) -> str:
    return c if isinstance(c, str) else c[0]


def _header(c: Column) -> str:
    return c.upper() if isinstance(c, str) else c[1]


def _fit(widths: list[int], width: int) -> list[int]:
    """Column widths cut, widest first, until the row fits ``width`` (or every column is at MIN_CUT)."""
    out = list(widths)
    excess = sum(out) + len(GAP) * (len(out) - 1) - width
    while excess > 0:
        widest = max(range(len(out)), key=lambda i: out[i])
        if out[widest] <= MIN_CUT:
            break
        out[widest] -= 1
        excess -= 1
    return out


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], *, width: int | None = WIDTH) -> str:
    """Rows under upper-case headers, padded to columns; cut to ``width`` (None: never)."""
    cells = [[_header(c) for c in columns]] + [[_cell(r.get(_key(c))) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    if width is not None:
        widths = _fit(widths, width)
    return "\n".join(GAP.join(_cut(v, w).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def emit(data: Any, fmt: str, *, columns: Sequence[Column] | None = None,
         wide: Sequence[Column] | None = None) -> None:
    """Print ``data`` (a list of rows or one mapping) in the chosen format; ``wide`` are the
    columns of ``-o wide`` (default: ``columns``)."""
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, default=str))
    elif fmt == "yaml":
        import yaml  # here: the other formats need none (CLI start-up)

        click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())
    elif isinstance(data, list):
        cols = (wide or columns) if fmt == "wide" else columns
        click.echo(table(data, cols or (list(data[0]) if data else []), width=None if fmt == "wide" else WIDTH))
    else:
        width = max((len(k) for k in data), default=0)
        for key, value in data.items():
            click.echo(f"{key.ljust(width)}  {_cell(value)}")
