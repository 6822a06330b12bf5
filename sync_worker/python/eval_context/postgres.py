# Built-in provider "postgres": `postgres`, a connection to another PostgreSQL database
# with the API of `db` (execute, query, query_one, $1 placeholders, Row results).
#
# Settings:
#   POSTGRES_DSN   secret: postgresql://user:password@host:port/dbname (or key=value form)
#   POSTGRES_LOG   param: log every statement as data_out/data_in lines (default true)
# `postgres_connection(NAME)` gives more connections, from the secret NAME_DSN (and the
# param NAME_LOG). Statements commit one by one unless grouped in `with x.transaction():`.
# The connection stays open for the later jobs of the project (until the project changes)
# and is replaced when it broke; the DSN never appears in logs or errors.
import re

from pg_sync import errors, remote, rest

_CONNECTION_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _connection(prefix, secrets, params, name):
    s = rest.Settings(prefix, secrets, params)
    dsn = s.secret("DSN")
    missing = None
    if dsn is None:
        missing = "%s: secret %s is not set: add the connection string to sync.project_secret" % (name, s.key("DSN"))
    return remote.RemoteDatabase(dsn, name=name, log=s.flag("LOG", True), missing=missing)


def eval_context(secrets, context):
    params = context["params"]
    connections = {}

    def postgres_connection(name):
        """The connection configured by the secret NAME_DSN (and the param NAME_LOG)."""
        if not isinstance(name, str) or not _CONNECTION_NAME.match(name):
            raise ValueError("postgres_connection: the name is the settings' prefix in capitals, e.g. 'WAREHOUSE' for WAREHOUSE_DSN, not %r" % (name,))
        conn = connections.get(name)
        if conn is None:
            conn = connections[name] = _connection(name, secrets, params, name.lower())
        return conn

    return {
        "postgres": _connection("POSTGRES", secrets, params, "postgres"),
        "postgres_connection": postgres_connection,
        "DatabaseUnavailable": errors.DatabaseUnavailable,
    }
