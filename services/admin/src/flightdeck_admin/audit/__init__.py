"""The tamper-evident audit log: one hash chain of every service's events."""
