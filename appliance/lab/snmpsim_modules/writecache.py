"""snmpsim's own ``writecache`` variation module, plus a log of every SET it stores.

snmpsim loads this file (``--variation-modules-dir``) in place of its stock module of the
same name, so the lab switch's data set keeps its ``:writecache`` tags. The stock module's
code runs here unchanged, in this module's namespace (snmpsim hands each variation module
its ``moduleContext`` and ``recordContext`` as globals); only ``variate`` is wrapped. With
the module option ``log:PATH`` beside ``file:PATH``, each SET the cache took is appended to
PATH as ``{"t": epoch s, "oid": "...", "value": "..."}`` (OCTET STRINGs as hex): the
switch's own history of what was written to it, for tests (``SnmpSwitch.set_log``).

Not imported by Anvil: it runs inside the snmpsim process only.
"""

# mypy: ignore-errors
# ruff: noqa: F821 - moduleContext and recordContext are globals snmpsim provides

import json
import threading
import time
from pathlib import Path

import snmpsim.variation

_STOCK = Path(snmpsim.variation.__file__).with_suffix("") / "writecache.py"
exec(compile(_STOCK.read_text(), str(_STOCK), "exec"), globals())

_stock_variate = variate
_lock = threading.Lock()


def _text(value):
    octets = getattr(value, "asOctets", None)
    return octets().hex() if octets is not None else str(value)


def variate(oid, tag, value, **context):
    result = _stock_variate(oid, tag, value, **context)
    path = moduleContext["settings"].get("log")
    stored = oid in moduleContext and moduleContext[oid]["type"].isSameTypeWith(context["origValue"])
    if path and context["setFlag"] and stored:   # what the stock module stores (it ignores a wrong type)
        line = json.dumps({"t": time.time(), "oid": str(oid), "value": _text(context["origValue"])}) + "\n"
        with _lock, open(path, "a") as fh:
            fh.write(line)
    return result
