# Every name the worker puts in the globals of task code (and common_code): what
# `from pg_sync_task import *` gives an editor or a type checker. Kept equal to the
# runtime's set by tests/python/test_task_stubs.py. The providers' names are in
# pg_sync_task.providers.<name>, `secrets` (core_code only) in pg_sync_task.core.
import datetime as _datetime
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Literal

from base64 import b64decode as b64decode, b64encode as b64encode
from builtins import OSError as OSError
from pytz import timezone as timezone

from pg_sync_task._lib import datetime as datetime, dateutil as dateutil, json as json, time as time
from pg_sync_task.types import (
    DatabaseError as DatabaseError,
    JobCancelled as JobCancelled,
    RetryableJobError as RetryableJobError,
    TimeLimitExceeded as TimeLimitExceeded,
    UserError as UserError,
    ValidationError as ValidationError,
)
from pg_sync_task.types import Database, Environment, Links, Magic, Namespace, Records, SyncSummary

# -- the project and the job ----------------------------------------------------------------

env: Environment
"""Tables: `env['partner'].search(...)`, `.browse(ids)`, `.create({...})`."""
db: Database
"""SQL in the job's transaction: `db.execute`, `db.query`, `db.query_one`, `db.savepoint()`."""
params: Namespace
"""sync.project_param values: `params.KEY`, `params['KEY']`, `params.get('KEY', default)`."""
texts: Namespace
"""sync.project_text in the job's language (falling back to en_US): `texts.KEY`."""
webhooks: Namespace
"""URLs of the project's webhook triggers: `webhooks.NAME`."""
trigger_name: str | None
"""The name of the trigger that queued the job."""
user: str
"""Who caused the job (sync.job.user_name)."""
MAGIC: Magic
"""Every name of the layer by attribute: `MAGIC.env`."""

# -- logging --------------------------------------------------------------------------------

LOG_DEBUG: Final = "debug"
LOG_INFO: Final = "info"
LOG_WARNING: Final = "warning"
LOG_ERROR: Final = "error"
LOG_CRITICAL: Final = "critical"
_Level = Literal["debug", "info", "warning", "error", "critical"]

def log(message: object, level: _Level = "info") -> None:
    """A sync.log line, kept even when the job fails. LOG_WARNING marks the job
    done-with-warning; LOG_ERROR (and LOG_CRITICAL) fail it."""

def log_transmission(recipient: object, data_str: object) -> None:
    """A data_out line: what was sent to whom."""

def log_response(sender: object, data_str: object) -> None:
    """A data_in line: what was received from whom."""

# -- jobs -----------------------------------------------------------------------------------

def add_job(
    func_name: str | Callable[..., Any],
    *,
    priority: int | None = None,
    eta: _datetime.datetime | _datetime.timedelta | float | None = None,
    max_retries: int | None = None,
    description: str | None = None,
    identity_key: str | None = None,
) -> Callable[..., None]:
    """`add_job('name', ...)(*args, **kwargs)` runs function `name` of this task later, as
    a child job of this one, when this job succeeds. Arguments must be JSON values."""

# -- links ----------------------------------------------------------------------------------

def set_link(
    relation: str, refs: Mapping[str, object], sync_date: _datetime.datetime | None = None, allow_many2many: bool = False
) -> Links:
    """Link two external records: `set_link('rel', {'github': 12, 'trello': 'abc'})`."""

def search_links(relation: str, refs: Mapping[str, object]) -> Links:
    """Links between two systems; a ref may be a value, a list, or None (any)."""

def get_link(relation: str, ref_info: object) -> Links:
    """The link of an external ref (local links) or of refs `{system: ref, ...}`; an empty
    set when there is none."""

# -- sync helpers ---------------------------------------------------------------------------

def sync_db2x(src_list: Records | Iterable[Records], sync_info: Mapping[str, Any], create: bool = False, update: bool = False) -> SyncSummary:
    """Records -> another system, with `sync_info['x']['create'](record) -> ref` and
    `sync_info['x']['update'](ref, record)`; links in `sync_info['relation']`."""

def sync_x2db(src_list: Iterable[Any], sync_info: Mapping[str, Any], create: bool = False, update: bool = False) -> SyncSummary:
    """Another system -> records, with `sync_info['x']['get_ref'](item)` and
    `sync_info['db']['create'](item) -> record`, `sync_info['db']['update'](record, item)`."""

def sync_external(
    src_list: Iterable[Any],
    relation: str,
    src_info: Mapping[str, Any],
    dst_info: Mapping[str, Any],
    create: bool = False,
    update: bool = False,
) -> SyncSummary:
    """System -> system, with `src_info['get_ref'](item)`, `dst_info['create'](item) -> ref`
    and `dst_info['update'](dst_ref, item)`."""

sync_odoo2x = sync_db2x
sync_x2odoo = sync_x2db

# -- tools ----------------------------------------------------------------------------------

DEFAULT_SERVER_DATETIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
DEFAULT_SERVER_DATE_FORMAT: Final = "%Y-%m-%d"

def url2base64(url: str, timeout: float = 30, max_size: int = 20971520) -> bytes:
    """Download an http(s) URL; its content base64-encoded. Loopback, link-local and
    metadata addresses are refused (UserError)."""

def html2plaintext(html: str | None) -> str:
    """Plain text of an HTML fragment, links as footnotes [n]."""

def type2str(obj: object) -> str:
    """The type of a value as text, e.g. "<class 'int'>"."""

def get_lang(*args: object) -> str:
    """The language of the job (default en_US)."""
