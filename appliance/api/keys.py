"""Typed application keys shared by the app factory and the route modules."""

from __future__ import annotations

from aiohttp import web

from appliance.config import Settings
from appliance.engine.runner import Engine
from appliance.services.tokens import TokenService
from appliance.store import Store

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
TOKENS = web.AppKey("tokens", TokenService)
ENGINE = web.AppKey("engine", Engine)
PRINCIPAL = "anvil.principal"
