# Provider http_json: REST/JSON clients configured by settings, and the HTTP errors.
from pg_sync_task.types import (
    HTTPClientError as HTTPClientError,
    HTTPConnectionError as HTTPConnectionError,
    HTTPError as HTTPError,
    HTTPRetryableError as HTTPRetryableError,
)
from pg_sync_task.types import JsonClient

http_json: JsonClient
"""The client of the HTTP_JSON_* settings."""

def http_json_client(name: str) -> JsonClient:
    """The client of the NAME_* settings (NAME in capitals, e.g. 'CRM')."""
