# Exceptions of the task-code context (module `pg_sync.errors`). Trusted code (providers,
# core code) may import them from here; task code gets them as context names.
from pg_sync._native import DatabaseError  # noqa: F401  (re-exported)


# Error messages read "UserError: ..." rather than "pg_sync.errors.UserError: ...".
_SHORT = "builtins"


class Frozen(type):
    """Metaclass of classes handed to task code: their attributes cannot be replaced,
    so code of one project cannot change what another project's code sees."""

    def __setattr__(cls, name, value):
        raise AttributeError("%s is read-only" % cls.__name__)

    def __delattr__(cls, name):
        raise AttributeError("%s is read-only" % cls.__name__)


class UserError(Exception, metaclass=Frozen):
    """An error meant for the user; fails the job with its message."""

    __module__ = _SHORT


class ValidationError(UserError):
    """Invalid data; fails the job with its message."""

    __module__ = _SHORT


class RetryableJobError(Exception, metaclass=Frozen):
    """Raise to have the job tried again later (after 5 min, 15 min, 60 min, 3 h, then a
    last try). Also honoured when another exception wraps it (raise ... from err)."""

    __module__ = _SHORT


class DatabaseUnavailable(DatabaseError, RetryableJobError):
    """A remote database (the `postgres` provider) could not be reached, or the
    connection was lost: a DatabaseError that also makes the job retry."""

    __module__ = _SHORT


class TimeLimitExceeded(BaseException, metaclass=Frozen):
    """Raised inside task code when the job's soft time limit passes. A BaseException, so
    `except Exception:` in task code does not swallow it."""

    __module__ = _SHORT


class JobCancelled(BaseException, metaclass=Frozen):
    """Raised inside task code when sync_cancel_job stops the running job. A
    BaseException like TimeLimitExceeded; a job that catches it anyway is still rolled
    back and recorded cancelled (and killed if it goes on for long)."""

    __module__ = _SHORT


class MissingHandler(Exception, metaclass=Frozen):
    """The task code does not define the handler the job calls."""

    __module__ = _SHORT


class SandboxError(Exception, metaclass=Frozen):
    """Task or common code uses something restricted execution refuses."""

    __module__ = _SHORT
