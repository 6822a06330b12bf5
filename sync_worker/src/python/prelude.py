# Python side of the pg_sync runtime, embedded in sync_worker (module `_pg_sync`).
# It compiles task code and calls handlers; the task-code context is built here.
import traceback as _traceback


class RetryableJobError(Exception):
    """Raise to have the job retried later (5 min, 15 min, 60 min, 3 h, last try)."""


class UserError(Exception):
    """An error meant for the user; fails the job with its message."""


class ValidationError(UserError):
    """Invalid data; fails the job with its message."""


class MissingHandler(Exception):
    pass


def run(code, filename, handler, args, kwargs, context):
    """Execute task `code` with `context` as globals and call `handler`."""
    g = dict(context)
    g.setdefault("RetryableJobError", RetryableJobError)
    g.setdefault("UserError", UserError)
    g.setdefault("ValidationError", ValidationError)
    exec(compile(code, filename, "exec"), g)
    fn = g.get(handler)
    if not callable(fn):
        raise MissingHandler(
            "the task code does not define %s(); define it to handle this trigger" % handler
        )
    return fn(*args, **kwargs)


def format_exception(exc, tb=None):
    return "".join(_traceback.format_exception(type(exc), exc, tb or exc.__traceback__))
