# Provider trello: the Trello client and the HTTP errors.
from pg_sync_task.types import (
    HTTPClientError as HTTPClientError,
    HTTPConnectionError as HTTPConnectionError,
    HTTPError as HTTPError,
    HTTPRetryableError as HTTPRetryableError,
)
from pg_sync_task.types import Trello

trello: Trello
