"""The REST API (aiohttp) under /api/v1; one app factory in app.py."""
