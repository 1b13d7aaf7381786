"""The monitor: blade and heartbeat health, failure detection, and what it tells the outside (webhooks)."""
