"""Persistence: the typed ORM, engine and session factory, migrations."""
