"""Fault suite: each case runs against real processes (gateway, SMSC simulator, PostgreSQL)."""
