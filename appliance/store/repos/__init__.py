"""Repositories: functions over a Session, one module per aggregate."""
