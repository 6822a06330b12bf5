# The classes behind the names task code sees (records, rows, links, namespaces, webhook
# requests, REST and remote-database clients, errors). Task code cannot import, so these
# names are for string annotations (`def handle_db(records: "Records")`) and for the other
# stubs; tests/python/test_task_stubs.py compares their members with the runtime's.
import datetime
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, Generic, Literal, SupportsIndex, TypedDict, TypeVar, overload

_V = TypeVar("_V")

# -- errors -----------------------------------------------------------------------------

class UserError(Exception):
    """An error meant for the user; fails the job with its message (no retry)."""

class ValidationError(UserError):
    """Invalid data; fails the job with its message."""

class RetryableJobError(Exception):
    """Raise to have the job tried again later (5 min, 15 min, 60 min, 3 h, then a last
    try); also honoured when another exception wraps it (`raise X from err`)."""

class TimeLimitExceeded(BaseException):
    """Raised inside the code when the job's soft time limit passes (not an Exception)."""

class JobCancelled(BaseException):
    """Raised inside the code when sync_cancel_job stops the job (not an Exception)."""

class DatabaseError(Exception):
    """An SQL error of `db`, `env` or a remote database."""

    code: str | None
    """The SQLSTATE (e.g. '23505'), None when the error did not come from the server."""
    hint: str | None

class DatabaseUnavailable(DatabaseError, RetryableJobError):
    """A remote database could not be reached or the connection was lost (retried)."""

class HTTPError(Exception):
    """An HTTP request of a provider's client failed."""

    message: str
    method: str | None
    url: str | None
    """The URL, credentials masked."""
    status: int | None
    """The HTTP status, None when no response came."""
    body: str | None
    """The response text."""
    data: Any
    """The response body parsed as JSON, or None."""
    headers: dict[str, str]
    """Response headers, lower-case names."""
    def __init__(
        self,
        message: str,
        method: str | None = None,
        url: str | None = None,
        status: int | None = None,
        body: str | None = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None: ...

class HTTPClientError(HTTPError, UserError):
    """The server refused the request (4xx except 408 and 429): the job fails."""

class HTTPRetryableError(HTTPError, RetryableJobError):
    """5xx, 408, 429 or a rate limit: the job is retried."""

class HTTPConnectionError(HTTPRetryableError):
    """No response (refused, lost, unknown host, timeout): the job is retried."""

# -- read-only namespaces ---------------------------------------------------------------

class Namespace:
    """`params`, `texts`, `webhooks`: values by attribute or key (`params.KEY`,
    `params['KEY']`, `params.get('KEY', default)`)."""

    def __getattr__(self, name: str) -> Any: ...
    def __getitem__(self, name: str) -> Any: ...
    def get(self, name: str, default: Any = None) -> Any: ...
    def keys(self) -> list[str]: ...
    def __contains__(self, name: object) -> bool: ...
    def __iter__(self) -> Iterator[str]: ...
    def __len__(self) -> int: ...

class Secrets(Namespace):
    """`secrets`: the project's secret values (core_code and providers only)."""

class Magic:
    """`MAGIC.<name>`: every name of the code layer, by attribute."""

    def __getattr__(self, name: str) -> Any: ...

# -- SQL: db and env ------------------------------------------------------------------------

class Row(tuple[Any, ...]):
    """A result row: `row.column`, `row['column']`, `row[0]`; `dict(row)`."""

    def __getattr__(self, name: str) -> Any: ...
    @overload
    def __getitem__(self, key: str | SupportsIndex) -> Any: ...
    @overload
    def __getitem__(self, key: slice) -> tuple[Any, ...]: ...
    def get(self, key: str, default: Any = None) -> Any: ...
    def keys(self) -> list[str]: ...
    def items(self) -> list[tuple[str, Any]]: ...

class Database:
    """`db`: SQL in the job's transaction ($1, $2... bound to the arguments)."""

    def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; the number of rows affected."""
    def query(self, sql: str, *args: Any) -> list[Row]:
        """Run a query; its rows."""
    def query_one(self, sql: str, *args: Any) -> Row | Any:
        """Run a query; its first row, or None when it returned none."""
    def savepoint(self) -> AbstractContextManager[None]:
        """`with db.savepoint():` a block that raises rolls back alone; the job goes on."""

class Environment:
    """`env`: `env['table']` or `env['schema.table']` is a Model."""

    def __getitem__(self, table: str) -> Model: ...
    @property
    def db(self) -> Database: ...

class Model:
    """One table: browse, search, create."""

    @property
    def table(self) -> str:
        """'<schema>.<table>', the system name of its rows in links."""
    def browse(self, ids: Any) -> Records:
        """Records for primary key values (one value or a list; tuples for composite keys)."""
    def search(self, where_sql: str = "TRUE", *args: Any, order: str | None = None, limit: int | None = None) -> Records:
        """Records whose rows match `where_sql` ($1.. bound to args)."""
    def create(self, values: dict[str, Any]) -> Records:
        """Insert a row; the new record."""

class Records:
    """A record set of one table. One record: `rec.column`, `rec['column']`, `rec.id`."""

    def __len__(self) -> int: ...
    def __bool__(self) -> bool: ...
    def __iter__(self) -> Iterator[Records]: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...
    def __or__(self, other: Records) -> Records: ...
    def __and__(self, other: Records) -> Records: ...
    def __sub__(self, other: Records) -> Records: ...
    @overload
    def __getitem__(self, key: str) -> Any: ...
    @overload
    def __getitem__(self, key: int | slice) -> Records: ...
    def __getattr__(self, name: str) -> Any: ...
    @property
    def ids(self) -> list[Any]:
        """The primary key values (tuples for composite keys)."""
    @property
    def id(self) -> Any:
        """The primary key value of a single record."""
    @property
    def table(self) -> str: ...
    def read(self) -> list[dict[str, Any]]:
        """The rows as dicts."""
    def exists(self) -> Records:
        """The records whose rows exist."""
    def write(self, values: dict[str, Any]) -> bool:
        """UPDATE the rows."""
    def unlink(self) -> bool:
        """DELETE the rows."""
    def set_link(
        self, relation: str, external: object, sync_date: datetime.datetime | None = None, allow_many2many: bool = False
    ) -> Links:
        """Link this record to an external ref in `relation`."""
    def search_links(self, relation: str) -> Links:
        """The links of these records in `relation`."""

# -- links ------------------------------------------------------------------------------

class Links:
    """A set of links (`set_link`, `search_links`, `get_link`, `records.search_links`)."""

    def __len__(self) -> int: ...
    def __bool__(self) -> bool: ...
    def __iter__(self) -> Iterator[Links]: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...
    def __or__(self, other: Links) -> Links: ...
    def __and__(self, other: Links) -> Links: ...
    def __sub__(self, other: Links) -> Links: ...
    def __xor__(self, other: Links) -> Links: ...
    def __getitem__(self, i: int | slice) -> Links: ...
    @property
    def ids(self) -> list[int]: ...
    @property
    def id(self) -> int: ...
    @property
    def relation(self) -> str: ...
    def get(self, system: str) -> list[str]:
        """The refs of `system` in these links."""
    @property
    def external(self) -> str | Any:
        """The external ref of a local link (a list of them when the set has several or none)."""
    @property
    def record(self) -> Records | Any:
        """The local records of these links (None for an empty set)."""
    @property
    def odoo(self) -> Records | Any:
        """Sync Studio's name of `record`."""
    @property
    def sync_date(self) -> datetime.datetime | None:
        """The oldest sync date of these links."""
    def update_links(self, sync_date: datetime.datetime | None = None) -> Links:
        """Set the sync date (default: now); the updated set."""
    def unlink(self) -> int:
        """Delete these links; how many were deleted."""

# -- sync helpers ---------------------------------------------------------------------------

class SyncSummary(TypedDict):
    """What the sync helpers return: the source items' keys, in `src_list` order."""

    created: list[Any]
    updated: list[Any]
    skipped: list[Any]

# -- webhooks -------------------------------------------------------------------------------

class MultiDict(Generic[_V]):
    """Query arguments, form fields, files: `d[key]` and `d.get(key)` the first value,
    `d.getlist(key)` all of them."""

    def __getitem__(self, key: str) -> _V: ...
    def get(self, key: str, default: Any = None, type: Callable[[_V], Any] | None = None) -> Any: ...
    def getlist(self, key: str) -> list[_V]: ...
    def keys(self) -> list[str]: ...
    def values(self) -> list[_V]: ...
    def items(self, multi: bool = False) -> list[tuple[str, _V]]: ...
    def to_dict(self, flat: bool = True) -> dict[str, Any]: ...
    def __contains__(self, key: object) -> bool: ...
    def __iter__(self) -> Iterator[str]: ...
    def __len__(self) -> int: ...
    def __bool__(self) -> bool: ...

class Headers(MultiDict[str]):
    """Request headers; names are case-insensitive."""

class UploadedFile:
    """One file of a multipart/form-data request."""

    name: str
    filename: str
    content_type: str
    data: bytes
    @property
    def size(self) -> int: ...
    def read(self) -> bytes: ...

class HttpRequest:
    """What `handle_webhook(httprequest)` receives (read-only)."""

    method: str
    path: str
    url: str
    query_string: str
    args: MultiDict[str]
    headers: Headers
    remote_addr: str
    data: bytes
    json: Any
    """The parsed JSON body; None when empty."""
    form: MultiDict[str]
    files: MultiDict[UploadedFile]
    content_type: str
    """The trigger's content_type: 'json' or 'form'."""
    @overload
    def get_data(self, as_text: Literal[False] = False) -> bytes: ...
    @overload
    def get_data(self, as_text: Literal[True]) -> str: ...
    @overload
    def get_data(self, as_text: bool) -> bytes | str: ...
    def get_json(self) -> Any: ...

# -- REST clients (providers) ------------------------------------------------------------

_Params = Mapping[str, Any]
_Headers = Mapping[str, str | None]
_Data = Mapping[str, Any] | str | bytes

class Response:
    """An HTTP response of `client.response(...)`."""

    status: int
    reason: str
    headers: dict[str, str]
    """Lower-case names."""
    text: str
    data: Any
    """The body parsed as JSON when it is JSON, else the text; None when empty."""
    url: str

class JsonClient:
    """A REST/JSON client bound to a base URL (`http_json`, the providers' clients). The
    methods return the response body parsed as JSON (the text when it is not JSON, None
    when empty)."""

    @property
    def name(self) -> str:
        """The recipient of its log lines."""
    @property
    def base_url(self) -> str | None: ...
    @property
    def timeout(self) -> float: ...
    def get(
        self, path: str, json: Any = None, params: _Params | None = None, headers: _Headers | None = None, timeout: float | None = None
    ) -> Any: ...
    def post(
        self,
        path: str,
        json: Any = None,
        params: _Params | None = None,
        headers: _Headers | None = None,
        timeout: float | None = None,
        data: _Data | None = None,
    ) -> Any: ...
    def put(
        self,
        path: str,
        json: Any = None,
        params: _Params | None = None,
        headers: _Headers | None = None,
        timeout: float | None = None,
        data: _Data | None = None,
    ) -> Any: ...
    def patch(
        self,
        path: str,
        json: Any = None,
        params: _Params | None = None,
        headers: _Headers | None = None,
        timeout: float | None = None,
        data: _Data | None = None,
    ) -> Any: ...
    def delete(
        self, path: str, json: Any = None, params: _Params | None = None, headers: _Headers | None = None, timeout: float | None = None
    ) -> Any: ...
    def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        params: _Params | None = None,
        headers: _Headers | None = None,
        timeout: float | None = None,
        data: _Data | None = None,
        masks: Iterable[str] = (),
    ) -> Any: ...
    def response(
        self,
        method: str,
        path: str,
        json: Any = None,
        params: _Params | None = None,
        headers: _Headers | None = None,
        timeout: float | None = None,
        data: _Data | None = None,
        masks: Iterable[str] = (),
    ) -> Response: ...
    def close(self) -> None:
        """Drop kept-alive connections."""

_Labels = Iterable[str | Mapping[str, Any]] | str
_Since = str | datetime.datetime | datetime.date | None

class GitHub(JsonClient):
    """`github`: the GitHub REST API. `repo` is 'owner/name'; methods return GitHub's JSON."""

    def paginate(self, path: str, params: _Params | None = None, limit: int | None = None) -> list[Any]: ...
    def get_issue(self, repo: str, number: int | str) -> Any: ...
    def list_issues(
        self,
        repo: str,
        state: str = "open",
        labels: _Labels | None = None,
        since: _Since = None,
        include_pulls: bool = False,
        limit: int | None = None,
        **params: Any,
    ) -> list[Any]: ...
    def create_issue(
        self, repo: str, title: str, body: str | None = None, labels: _Labels | None = None, assignees: Iterable[str] | None = None, **fields: Any
    ) -> Any: ...
    def update_issue(self, repo: str, number: int | str, **fields: Any) -> Any: ...
    def list_comments(self, repo: str, number: int | str, since: _Since = None, limit: int | None = None) -> list[Any]: ...
    def create_comment(self, repo: str, number: int | str, body: str) -> Any: ...
    def list_issue_labels(self, repo: str, number: int | str) -> list[Any]: ...
    def add_labels(self, repo: str, number: int | str, labels: _Labels) -> Any: ...
    def remove_label(self, repo: str, number: int | str, label: str | Mapping[str, Any]) -> Any: ...
    def set_labels(self, repo: str, number: int | str, labels: _Labels) -> Any: ...
    def list_labels(self, repo: str, limit: int | None = None) -> list[Any]: ...
    def get_label(self, repo: str, name: str) -> Any: ...
    def create_label(self, repo: str, name: str, color: str = "ededed", description: str | None = None) -> Any: ...

class Trello(JsonClient):
    """`trello`: the Trello REST API; ids are Trello's (letters and digits)."""

    def get_board(self, board_id: str, **params: Any) -> Any: ...
    def board_lists(self, board_id: str, filter: str = "open") -> Any: ...
    def board_labels(self, board_id: str) -> Any: ...
    def create_label(self, board_id: str, name: str, color: str | None = None) -> Any: ...
    def board_cards(self, board_id: str, filter: str = "open") -> Any: ...
    def list_cards(self, list_id: str) -> Any: ...
    def get_card(self, card_id: str, **params: Any) -> Any: ...
    def create_card(self, list_id: str, name: str, desc: str | None = None, **fields: Any) -> Any: ...
    def update_card(self, card_id: str, **fields: Any) -> Any: ...
    def card_comments(self, card_id: str) -> Any: ...
    def add_comment(self, card_id: str, text: str) -> Any: ...
    def add_label(self, card_id: str, label_id: str) -> Any: ...
    def remove_label(self, card_id: str, label_id: str) -> Any: ...

class Telegram(JsonClient):
    """`telegram`: the Telegram Bot API; methods return the `result` of its answer."""

    def call(self, method: str, **params: Any) -> Any: ...
    def get_me(self) -> Any: ...
    def send_message(self, chat_id: int | str, text: str, **opts: Any) -> Any: ...
    def set_webhook(self, url: str, **opts: Any) -> Any: ...
    def delete_webhook(self, **opts: Any) -> Any: ...

# -- another PostgreSQL database (provider postgres) -------------------------------------

class RemoteDatabase:
    """`postgres`: another database with the API of `db`; statements autocommit unless
    inside `with postgres.transaction():`."""

    @property
    def name(self) -> str: ...
    @property
    def database(self) -> str | None:
        """user@host:port/dbname."""
    @property
    def in_transaction(self) -> bool: ...
    def execute(self, sql: str, *args: Any) -> int: ...
    def query(self, sql: str, *args: Any) -> list[Row]: ...
    def query_one(self, sql: str, *args: Any) -> Row | Any:
        """The first row, or None when the query returned none."""
    def transaction(self) -> AbstractContextManager[RemoteDatabase]: ...
    def close(self) -> None: ...
