# Provider postgres: connections to other PostgreSQL databases.
from pg_sync_task.types import DatabaseUnavailable as DatabaseUnavailable
from pg_sync_task.types import RemoteDatabase

postgres: RemoteDatabase
"""The database of the POSTGRES_DSN secret."""

def postgres_connection(name: str) -> RemoteDatabase:
    """The database of the NAME_DSN secret (NAME in capitals, e.g. 'WAREHOUSE')."""
