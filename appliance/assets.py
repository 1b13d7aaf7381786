"""Where the non-Python assets (pxe/, profiles/, firmware/) are.

In a source checkout they are the top-level folders beside the package; in an
installed wheel they are shipped under ``appliance/_assets/`` (see pyproject).
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def asset_dir(name: str) -> Path:
    """Return the folder ``pxe``, ``profiles`` or ``firmware``."""
    if name not in {"pxe", "profiles", "firmware"}:
        raise ValueError(f"unknown asset folder {name!r}")
    shipped = _PKG / "_assets" / name
    if shipped.is_dir():
        return shipped
    return _PKG.parent / name
