"""The garbage collector's settings for a long-running server process (``anvil serve``).

CPython's cycle collector stops every thread while it runs, and a full (oldest-generation) pass
walks every tracked object: with the modules, the store's mappers and the schemas loaded, that
is about a million objects. Under list-page load at 10,000 blades the server made one such pass
every 2-3 s, each holding every request for 115-430 ms: the long tail of the page latency.

:func:`settle`, once the server has started, moves everything alive then (what startup loaded,
which lives as long as the process) out of the collector's sight with ``gc.freeze()``, and lets
more short-lived objects (a page's rows and dicts) be allocated between young collections, so
fewer of them live long enough to be promoted and trigger full passes. Cycles made afterwards
are still collected as before.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000   # container allocations between young collections (CPython's default: 700)


def settle() -> None:
    """Freeze what startup left alive and widen the young generation (see the module's text)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(max(YOUNG_THRESHOLD, gc.get_threshold()[0]), middle, old)
