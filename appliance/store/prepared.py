"""A Core SELECT compiled once per dialect and run on the driver's own cursor.

For the few reads on the hottest path (a list page: five statements per request, sixteen
clients; every request's token): SQLAlchemy's per-execution work (cache key, execution
context, result rows and their type processors) cost more than SQLite's own work for them.
Rows come back as the driver gives them: SQLite's booleans are 0/1 and its timestamps text, so
callers coerce.

On SQLite the statement is asked for as one row, its rows in a JSON array: Python's sqlite3
releases the interpreter lock around every row it steps, and with other threads waiting for
the lock on the other core each of a page's ~450 rows handed it over and waited to get it
back. A page under 100 deploys cost 8 ms of CPU that way, 3 ms with the process on one core.
SQLite gives no order to an aggregate's input, so callers order what they need ordered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, func, select
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.selectable import SelectBase


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]                            # bind names in the driver's order
    constants: dict[str, Any]                         # binds the statement fixes, processed once
    processors: dict[str, Callable[[Any], Any]]
    positional: bool
    as_json: bool                                     # one row: a JSON array of the rows


class Prepared:
    def __init__(self, stmt: SelectBase) -> None:
        self._stmt = stmt
        self._by_dialect: dict[str, _Compiled] = {}

    def _compiled(self, conn: Connection) -> _Compiled:
        dialect = conn.dialect
        got = self._by_dialect.get(dialect.name)
        if got is None:
            as_json = dialect.name == "sqlite"
            stmt: SelectBase = self._stmt
            if as_json:
                sub = stmt.subquery()
                stmt = select(func.json_group_array(func.json_array(*sub.c)))
            c = stmt.compile(dialect=dialect)
            assert isinstance(c, SQLCompiler)
            names = tuple(c.positiontup or ()) if c.positional else tuple(c.binds)
            processors: dict[str, Callable[[Any], Any]] = {
                n: p for n in names if (p := c.binds[n].type.dialect_impl(dialect).bind_processor(dialect)) is not None}
            constants = {}
            for n in names:
                bind = c.binds[n]
                if bind.value is not None and not bind.required:
                    constants[n] = processors[n](bind.value) if n in processors else bind.value
            got = _Compiled(c.string, names, constants, processors, bool(c.positional), as_json)
            self._by_dialect[dialect.name] = got
        return got

    def rows(self, conn: Connection, **values: Any) -> Sequence[Sequence[Any]]:
        """Every row, as the driver's tuples (lists on SQLite, in no set order); ``values`` by bind name."""
        c = self._compiled(conn)
        params = {}
        for n in c.names:
            if n in c.constants:
                params[n] = c.constants[n]
            else:
                v = values[n]
                params[n] = c.processors[n](v) if n in c.processors else v
        cursor = conn.connection.driver_connection.cursor()   # type: ignore[union-attr]
        try:
            cursor.execute(c.sql, tuple(params[n] for n in c.names) if c.positional else params)
            if c.as_json:
                return orjson.loads(cursor.fetchone()[0])  # type: ignore[no-any-return]
            return cursor.fetchall()  # type: ignore[no-any-return]
        finally:
            cursor.close()
