"""What /metrics reads from the store when scraped: jobs by kind and state, and the pool's use."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.pool import QueuePool

from appliance.store.db import Store
from appliance.store.tables import JobRow


def job_counts(store: Store) -> list[tuple[str, str, int]]:
    """(kind, state, count) of every job in the store: one grouped read, indexed or not it is a
    single pass, cheap next to a scrape interval."""
    with store.read() as s:
        rows = s.execute(select(JobRow.kind, JobRow.state, func.count()).group_by(JobRow.kind, JobRow.state)).all()
    return sorted((str(kind), str(state), int(n)) for kind, state, n in rows)


def pool_use(store: Store) -> dict[str, int]:
    """The connection pool's configured size and current use; empty for a pool without those
    figures (not a QueuePool)."""
    pool = store.engine.pool
    if not isinstance(pool, QueuePool):
        return {}
    return {"size": pool.size(), "checked_out": pool.checkedout(), "overflow": max(0, pool.overflow()),
            "idle": pool.checkedin()}
