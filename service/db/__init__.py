"""The database schema (owned by the gateway, imported by the workers)."""
