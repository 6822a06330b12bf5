# Entry points called from Rust (module `pg_sync.runner`): init, prepare (a project's
# layers), run_job (one handler call with its soft time limit), format_exception.
import json as _json
import linecache as _linecache
import signal as _signal
import threading as _threading
import time as _time
import traceback as _traceback

from pg_sync import _native
from pg_sync import errors as _errors
from pg_sync import job as _job
from pg_sync import project as _project
from pg_sync import records as _records
from pg_sync import webhook as _webhook

_providers = None
_use_alarm = False
_limit = 0.0
_timer = None
# The running job's soft deadline (time.monotonic()), None between jobs; and when the
# interval timer fires (0.0: not set). The timer is left running between jobs: setting
# it costs a system call, as much as a trivial job itself. It is brought forward when a
# job's deadline comes before it, and when it fires early it is set again for the rest.
_deadline = None
_timer_at = 0.0
# One encoder for every result: json.dumps(x, default=str) builds a new one per call.
_encoder = _json.JSONEncoder(default=str)


_job_id = None
_memory_limit = 0


def init(builtin_providers, provider_path, memory_limit=0):
    """Called once by Runtime::new."""
    global _providers, _use_alarm, _memory_limit
    _providers = _project.Providers(builtin_providers, provider_path)
    _memory_limit = memory_limit
    # SIGALRM and SIGUSR1 are ours in executor processes: they raise TimeLimitExceeded
    # and JobCancelled in task code.
    if _threading.current_thread() is _threading.main_thread():
        _signal.signal(_signal.SIGALRM, _on_alarm)
        _signal.signal(_signal.SIGUSR1, _on_cancel)
        _use_alarm = True


def _on_cancel(signum, frame):
    # The pipe thread names the job to stop; a signal that arrives after that job ended
    # must not stop the next one.
    if _job_id is not None and _native.cancelled_job() == _job_id:
        raise _errors.JobCancelled("the job was cancelled (sync_cancel_job)")


def prepare(data):
    """Prepare a project's code layers (once per project version)."""
    return _project.Project(data, _providers)


# -- soft time limit ------------------------------------------------------------------


def _time_limit_error():
    return _errors.TimeLimitExceeded("the job ran longer than its soft time limit (%g s) and was stopped" % _limit)


def _set_timer(seconds):
    global _timer_at
    _timer_at = _time.monotonic() + seconds
    _signal.setitimer(_signal.ITIMER_REAL, seconds)


def _on_alarm(signum, frame):
    global _timer_at
    _timer_at = 0.0
    if _deadline is None:
        return  # between jobs: nothing to stop
    left = _deadline - _time.monotonic()
    if left > 0.001:
        _set_timer(left)  # set for an earlier job: the rest of this one's time
        return
    raise _time_limit_error()


def _arm(seconds):
    global _limit, _timer, _deadline
    _limit = seconds
    if seconds <= 0:
        _deadline = None
        return
    if _use_alarm:
        _deadline = _time.monotonic() + seconds
        if _timer_at == 0.0 or _timer_at > _deadline:
            _set_timer(seconds)
    else:
        # Not on the main thread: inject the exception into this thread instead.
        import ctypes

        ident = _threading.get_ident()

        def fire():
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(_errors.TimeLimitExceeded))

        _timer = _threading.Timer(seconds, fire)
        _timer.daemon = True
        _timer.start()


def _disarm():
    global _timer, _deadline
    if _use_alarm:
        _deadline = None
    elif _timer is not None:
        _timer.cancel()
        _timer = None


# -- running a job ----------------------------------------------------------------------


def _handler_args(project, info):
    handler = info["handler"]
    args = info.get("args") or {}
    if handler == "handle_db":
        return (_records.records_for_db_event(project.env, args),), {}
    if handler in ("handle_cron", "handle_button"):
        return (), {}
    if not isinstance(args, dict):
        return (), {}
    positional = args.get("args") or []
    keywords = args.get("kwargs") or {}
    return tuple(positional), dict(keywords)


def _is_retryable(exc):
    """RetryableJobError itself, or wrapped by other exceptions (raise X from err, or
    raised while handling it), unless the code dropped it with `raise X from None`."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, _errors.RetryableJobError):
            return True
        if exc.__cause__ is not None:
            exc = exc.__cause__
        elif not exc.__suppress_context__:
            exc = exc.__context__
        else:
            exc = None
    return False


def _execute(project, info, extra_args=None):
    """Run the job's handler; returns (status, result or error text, state) where status
    is done|retry|failed."""
    global _job_id
    state = _job.start(info)
    state.lang = project.job_lang(info.get("lang"))
    _project.set_current(project)
    _job_id = info.get("job_id")
    status, outcome = "done", None
    try:
        try:
            task_id = info.get("task_id")
            if task_id is None:
                raise _errors.UserError("the job has no task")
            code = project.task_code(task_id)
            g = project.job_globals(info, state.lang)
            _arm(info.get("soft_time_limit") or 0)
            try:
                exec(code, g)
                state.namespace = g
                handler = info["handler"]
                fn = g.get(handler)
                if not callable(fn):
                    raise _errors.MissingHandler(
                        "task %s does not define %s(); define it to handle this job" % (project.task_name(task_id), handler)
                    )
                if extra_args is not None:
                    args, kwargs = extra_args, {}
                else:
                    args, kwargs = _handler_args(project, info)
                outcome = fn(*args, **kwargs)
            finally:
                _disarm()
        except MemoryError as e:
            status = "failed"
            outcome = format_exception(e, project) + (
                "\nThe job ran out of memory: its executor may use %s (executor_memory_limit). Work in smaller pieces, or raise the limit." % _size(_memory_limit)
                if _memory_limit
                else ""
            )
        except BaseException as e:  # noqa: B902 - the job's failure, whatever it is
            status = "retry" if _is_retryable(e) else "failed"
            outcome = format_exception(e, project)
        if status == "done" and state.error is not None:
            status, outcome = "failed", "the job logged an error: %s" % state.error
        return status, outcome, state
    finally:
        _job_id = None
        _job.stop()
        _project.set_current(None)


def _size(n):
    for unit in ("GiB", "MiB", "KiB"):
        scale = {"GiB": 1 << 30, "MiB": 1 << 20, "KiB": 1 << 10}[unit]
        if n >= scale and n % scale == 0:
            return "%d %s" % (n // scale, unit)
    return "%d bytes" % n


def run_job(project, info):
    """Run one job; returns (status, payload, warning, logs, children) where status is
    done|retry|failed and payload the JSON result or the error text."""
    status, outcome, state = _execute(project, info)
    payload = outcome
    if status == "done":
        payload = None if outcome is None else _encoder.encode(outcome)
    return status, payload, state.warning, state.logs, state.children


def run_webhook(project, info, request, content_type):
    """Run handle_webhook(httprequest); returns run_job's tuple plus the response
    (status, headers, body) when the handler succeeded."""
    status, outcome, state = _execute(project, info, (_webhook.HttpRequest(request),))
    payload, response = outcome, None
    if status == "done":
        try:
            response = _webhook.response_for(outcome, content_type)
            payload = None if outcome is None else _encoder.encode(outcome)
        except Exception as e:  # noqa: B902 - a return value that cannot be sent
            status, payload = "failed", format_exception(e, project)
    return status, payload, state.warning, state.logs, state.children, response


# -- error text ---------------------------------------------------------------------------


def _frame_lines(tb, project):
    out = []
    for fs in _traceback.extract_tb(tb):
        if fs.filename.startswith("<pg_sync/"):
            continue
        out.append('  File "%s", line %s, in %s\n' % (fs.filename, fs.lineno, fs.name))
        line = None
        if project is not None and fs.filename in project.sources and fs.lineno:
            lines = project.sources[fs.filename].splitlines()
            if 0 < fs.lineno <= len(lines):
                line = lines[fs.lineno - 1]
        elif not fs.filename.startswith("<"):
            line = _linecache.getline(fs.filename, fs.lineno)
        if line and line.strip():
            out.append("    %s\n" % line.strip())
    return out


def _format_one(exc, project):
    parts = []
    frames = _frame_lines(exc.__traceback__, project)
    if frames:
        parts.append("Traceback (most recent call last):\n")
        parts.extend(frames)
    parts.extend(_traceback.format_exception_only(type(exc), exc))
    return "".join(parts)


def format_exception(exc, project=None):
    """The error as Python shows it, with the frames of user code only (file names like
    <task NAME>, <common_code>) and their source lines."""
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        if exc.__cause__ is not None:
            exc = exc.__cause__
        elif not exc.__suppress_context__:
            exc = exc.__context__
        else:
            exc = None
    out = []
    for i, e in enumerate(reversed(chain)):
        if i:
            cause = e.__cause__ is not None
            out.append(
                "\nThe above exception was the direct cause of the following exception:\n\n"
                if cause
                else "\nDuring handling of the above exception, another exception occurred:\n\n"
            )
        out.append(_format_one(e, project))
    return "".join(out).rstrip("\n")
