"""Registration requests and their signed review."""
