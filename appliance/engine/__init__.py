"""The engine: durable, resumable jobs made of idempotent steps (stamp, unstamp, …).

Only the leader runs jobs (leader.py); runner.py claims and drives them; the
steps live in steps/, one module per job kind.
"""
