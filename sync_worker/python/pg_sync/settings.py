# A provider's settings <PREFIX>_<KEY> from the project's secrets and params (module
# `pg_sync.settings`, also rest.Settings): what may come from params, and value parsing.
from pg_sync import errors as _errors


class Settings:
    """A provider's settings `<PREFIX>_<KEY>`. Credentials and base URLs come from secrets
    only; other settings from secrets first (admins only can write them), then params.

    A base URL decides where the credentials are sent, and developers write params: a
    base URL taken from a param would let a developer send an admin's token to a server
    of their own."""

    __slots__ = ("prefix", "_secrets", "_params")

    def __init__(self, prefix, secrets, params):
        self.prefix = prefix
        self._secrets = secrets
        self._params = params

    def key(self, key):
        return "%s_%s" % (self.prefix, key)

    def secret(self, key):
        value = self._secrets.get(self.key(key)) if self._secrets is not None else None
        return value if value not in (None, "") else None

    def param(self, key):
        value = self._params.get(self.key(key)) if self._params is not None else None
        return value if value not in (None, "") else None

    def value(self, key, default=None, secret_only=False):
        value = self.secret(key)
        if value is None and not secret_only and not key.endswith("BASE_URL"):
            value = self.param(key)
        return value if value not in (None, "") else default

    def base_url(self, name, default=None):
        """(base URL, problem): the secret <PREFIX>_BASE_URL, else `default`. `problem` (a
        message for JsonClient's problem=, naming client `name`) when there is neither,
        or when a param of that name points elsewhere than the default: it is ignored,
        and rather than sending the credentials somewhere unexpected the client says so."""
        key = self.key("BASE_URL")
        value = self.secret("BASE_URL")
        if value is not None:
            return value, None
        param = self.param("BASE_URL")
        if param is not None and (default is None or str(param).strip().rstrip("/") != default.rstrip("/")):
            return None, (
                "%s: %s is set as a param, which is ignored: a base URL decides where the credentials go, so it is read "
                "from secrets only (admins write them); set it as the secret %s in sync.project_secret%s"
                % (name, key, key, ", or delete the param to use %s" % default if default else "")
            )
        if default is None:
            return None, "%s: %s is not set: add it to sync.project_secret" % (name, key)
        return default, None

    def number(self, key, default):
        value = self.value(key)
        if value is None:
            return default
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = -1.0
        if not number > 0:
            raise _errors.UserError("%s must be a positive number of seconds, not %r" % (self.key(key), value))
        return number

    def flag(self, key, default):
        value = self.value(key)
        if value is None:
            return default
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise _errors.UserError("%s must be true or false, not %r" % (self.key(key), value))

    def missing(self, *keys):
        """A message for secrets that must be set, or None."""
        names = [self.key(k) for k in keys if self.secret(k) is None]
        if not names:
            return None
        if len(names) > 1:
            return "secrets %s are not set: add them to sync.project_secret" % " and ".join(names)
        return "secret %s is not set: add it to sync.project_secret" % names[0]
