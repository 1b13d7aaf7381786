"""Typed application keys shared by the app factory and the route modules."""

from __future__ import annotations

from aiohttp import web

from appliance.api.offload import Lane, Offload
from appliance.api.readiness import Readiness
from appliance.config import Settings
from appliance.engine.runner import Engine
from appliance.metrics import Metrics
from appliance.services.hardware import Hardware
from appliance.services.tokens import TokenService
from appliance.services.users import Principal, UserService
from appliance.store import Store

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
TOKENS = web.AppKey("tokens", TokenService)
USERS = web.AppKey("users", UserService)
ENGINE = web.AppKey("engine", Engine)
HARDWARE = web.AppKey("hardware", Hardware)
OPENAPI = web.AppKey("openapi", dict)
OFFLOAD = web.AppKey("offload", Offload)     # CPU-bound request work (document parsing), off the loop
READS = web.AppKey("reads", Lane)           # list pages' reads and renders, off the loop and the default pool
CHECKS = web.AppKey("checks", Lane)         # bearer-token checks: every request's first step, on threads of their own
WRITES = web.AppKey("writes", Lane)         # job submissions and node holds: one writer (appliance.api.offload)
PRINCIPAL = web.RequestKey("principal", Principal)
QUERY = web.RequestKey("query", dict)        # checked and converted query parameters
BODY = web.RequestKey("body", object)        # the checked JSON body, or the raw bytes of a document
BODY_TYPE = web.RequestKey("body_type", str)
SESSION_COOKIE = "anvil_session"
METRICS = web.AppKey("metrics", Metrics)         # this appliance's own registry (appliance.metrics)
READINESS = web.AppKey("readiness", Readiness)   # what /readyz checks beyond the store
