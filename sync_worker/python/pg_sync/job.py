# The running job as the context sees it (module `pg_sync.job`): its log lines (the worker
# writes them as they happen) and add_job() (collected into the state handed to Rust).
import datetime as _datetime
import decimal as _decimal
import json as _json
import re as _re
import time as _time
import uuid as _uuid

LOG_DEBUG = "debug"
LOG_INFO = "info"
LOG_WARNING = "warning"
LOG_ERROR = "error"
LOG_CRITICAL = "critical"  # Sync Studio's level; stored as error
_LEVELS = {
    LOG_DEBUG: LOG_DEBUG,
    LOG_INFO: LOG_INFO,
    LOG_WARNING: LOG_WARNING,
    LOG_ERROR: LOG_ERROR,
    LOG_CRITICAL: LOG_ERROR,
}
try:
    from pg_sync._native import log_line as _stream
except ImportError:  # outside the worker (the package's own tests)
    _stream = None

_IDENTIFIER = _re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_JOB_OPTIONS = ("priority", "eta", "max_retries", "description", "identity_key")


class JobState:
    __slots__ = ("info", "lang", "logs", "children", "warning", "error", "namespace")

    def __init__(self, info):
        self.info = info
        # Settled by the runner once the project is known (Project.job_lang).
        self.lang = info.get("lang") or "en_US"
        self.logs = []
        # The task code's names once it ran (add_job reads its functions' docstrings).
        self.namespace = {}
        self.children = None
        self.warning = False
        self.error = None


_current = None
# Lines logged while no job runs (code layers being prepared): they go to the next job.
_pending_logs = []


def start(info):
    global _current
    state = JobState(info)
    if _pending_logs:
        state.logs.extend(_pending_logs)
        _pending_logs.clear()
    _current = state
    return state


def stop():
    global _current
    _current = None


def current():
    return _current


def lang():
    return _current.lang if _current is not None else "en_US"


def _add_line(level, kind, recipient, message):
    line = (level, kind, recipient, message, _time.time())
    if _current is None:
        _pending_logs.append(line)
        return
    # The worker writes a running job's lines as they happen (they show at once and
    # survive the job's rollback); without it they go in with the job's outcome.
    if _stream is None or not _stream(*line):
        _current.logs.append(line)
    if level == LOG_WARNING:
        _current.warning = True
    elif level == LOG_ERROR and _current.error is None:
        _current.error = message


def log(message, level=LOG_INFO):
    """Write a line to sync.log (kept even if the job fails). A warning marks the job
    done-with-warning; an error fails it."""
    stored = _LEVELS.get(level)
    if stored is None:
        raise ValueError("log level must be one of LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERROR, got %r" % (level,))
    _add_line(stored, "message", None, message if isinstance(message, str) else str(message))


def log_transmission(recipient, data_str):
    """Record data sent to another system (a data_out line of sync.log)."""
    _add_line(LOG_INFO, "data_out", str(recipient), data_str if isinstance(data_str, str) else str(data_str))


def log_response(sender, data_str):
    """Record data received from another system (a data_in line of sync.log)."""
    _add_line(LOG_INFO, "data_in", str(sender), data_str if isinstance(data_str, str) else str(data_str))


def _json_default(value):
    if isinstance(value, (_datetime.datetime, _datetime.date, _datetime.time)):
        return value.isoformat()
    if isinstance(value, _decimal.Decimal):
        return str(value)
    if isinstance(value, _uuid.UUID):
        return str(value)
    ids = getattr(value, "ids", None)
    if isinstance(ids, list):
        return ids
    raise TypeError("add_job arguments must be JSON values (numbers, strings, lists, dicts, dates), not %s" % type(value).__name__)


def _first_doc_line(func):
    doc = getattr(func, "__doc__", None) if callable(func) else None
    if not isinstance(doc, str):
        return None
    for line in doc.strip().splitlines():
        if line.strip():
            return line.strip()[:500]
    return None


def add_job(func_name, **options):
    """add_job("name", priority=.., eta=.., max_retries=.., description=.., identity_key=..)(*args, **kwargs):
    run function `name` of this task later, as a child job of this one."""
    func = func_name if callable(func_name) else None
    if func is not None:
        func_name = getattr(func, "__name__", "")
    if not isinstance(func_name, str) or not _IDENTIFIER.match(func_name):
        raise ValueError("add_job: the function must be given by name (a Python identifier), got %r" % (func_name,))
    for key in options:
        if key not in _JOB_OPTIONS:
            raise TypeError("add_job: unknown option %r (known: %s)" % (key, ", ".join(_JOB_OPTIONS)))
    child = {"handler": func_name}
    priority = options.get("priority")
    if priority is not None:
        if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
            raise ValueError("add_job: priority must be an integer >= 0 (0 is the highest)")
        child["priority"] = priority
    max_retries = options.get("max_retries")
    if max_retries is not None:
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ValueError("add_job: max_retries must be an integer >= 0")
        child["max_retries"] = max_retries
    eta = options.get("eta")
    if isinstance(eta, _datetime.datetime):
        if eta.tzinfo is None:
            eta = eta.replace(tzinfo=_datetime.timezone.utc)
        child["eta"] = eta.isoformat()
    elif isinstance(eta, _datetime.timedelta):
        child["eta_seconds"] = eta.total_seconds()
    elif isinstance(eta, (int, float)) and not isinstance(eta, bool):
        child["eta_seconds"] = float(eta)
    elif eta is not None:
        raise ValueError("add_job: eta must be a datetime, a timedelta or a number of seconds")
    for key in ("description", "identity_key"):
        value = options.get(key)
        if value is not None:
            child[key] = str(value)

    def queue(*args, **kwargs):
        state = _current
        if state is None:
            raise RuntimeError("add_job: no job is running")
        if "description" not in child:
            # As queue_job: the first line of the function's docstring.
            described = _first_doc_line(func if func is not None else state.namespace.get(func_name))
            if described:
                child["description"] = described
        payload = _json.loads(_json.dumps({"args": list(args), "kwargs": kwargs}, default=_json_default))
        item = dict(child, args=payload)
        if state.children is None:
            state.children = []
        state.children.append(item)
        log("add_job: %s(*%r, **%r)" % (func_name, list(args), kwargs), LOG_DEBUG)

    return queue
