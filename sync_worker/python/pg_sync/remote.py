# Remote PostgreSQL databases for trusted code (module `pg_sync.remote`): the `db` API
# (execute/query/query_one, $1 placeholders, Row results) over a native connection that
# stays open across jobs; statements autocommit unless inside `with x.transaction():`.
from pg_sync import _native
from pg_sync import db as _local_db
from pg_sync import job as _job
from pg_sync.errors import DatabaseError

# Longest SQL/argument text written to a log line.
LOG_LIMIT = 4000


def _clip(text, limit=LOG_LIMIT):
    if len(text) <= limit:
        return text
    return "%s... (%d more characters)" % (text[:limit], len(text) - limit)


class Transaction:
    """`with remote.transaction():` — BEGIN ... COMMIT, or ROLLBACK if the block raises.
    Nested blocks are savepoints: an inner block that raises rolls back alone."""

    __slots__ = ("_db",)

    def __init__(self, db):
        self._db = db

    def __enter__(self):
        self._db._begin()
        return self._db

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self._db._finish(True)
        else:
            self._db._finish(False)
        return False


class RemoteDatabase:
    """A connection to another PostgreSQL database, opened on first use. `execute`,
    `query`, `query_one` as for `db`; every statement commits on its own unless it runs
    inside `with <name>.transaction():`."""

    __slots__ = ("_conn", "_error", "_name", "_log", "_owner")

    def __init__(self, dsn, name="postgres", log=True, application_name=None, missing=None):
        """`dsn`: a connection string (URL or key=value). Never shown in messages or logs.
        `missing`: the message to raise on use instead (the DSN is not configured)."""
        self._name = name
        self._log = bool(log)
        self._owner = None
        self._conn = None
        self._error = missing
        if missing is None:
            try:
                self._conn = _native.RemoteConnection(dsn, application_name or "pg_sync %s" % name)
            except DatabaseError as e:
                # Raised on use, so projects listing the provider still run other tasks.
                self._error = "%s: %s" % (name, e)

    @property
    def name(self):
        """The name log lines use as recipient."""
        return self._name

    @property
    def database(self):
        """user@host:port/dbname (no password)."""
        return self._conn.label if self._conn is not None else None

    def _connection(self):
        if self._conn is None:
            raise DatabaseError(self._error)
        conn = self._conn
        # A transaction left open by another job (its block never ended, e.g. the soft
        # time limit struck inside __exit__) must not swallow this job's statements.
        if conn.depth and self._owner is not _job.current():
            conn.reset()
            self._owner = None
        return conn

    def _logged(self, sql, args, call):
        if self._log:
            text = sql.strip()
            if args:
                text += "\nargs: " + _clip(repr(args), 1000)
            _job.log_transmission(self._name, _clip(text))
        try:
            result, summary = call()
        except DatabaseError as e:
            if self._log:
                _job.log_response(self._name, _clip("error: %s" % e))
            raise
        if self._log:
            _job.log_response(self._name, summary)
        return result

    def execute(self, sql, *args):
        """Run a statement with $1, $2, ... bound to args; return the number of rows affected."""
        if not isinstance(sql, str):
            raise TypeError("the SQL statement must be a str")
        conn = self._connection()
        args = _local_db._args(args)

        def call():
            n = conn.execute(sql, args)
            return n, "%d row%s affected" % (n, "" if n == 1 else "s")

        return self._logged(sql, args, call)

    def query(self, sql, *args):
        """Run a query; return a list of Row (row.column, row["column"], row[0])."""
        if not isinstance(sql, str):
            raise TypeError("the SQL statement must be a str")
        conn = self._connection()
        args = _local_db._args(args)

        def call():
            names, rows = conn.query(sql, args)
            cls = _local_db._row_class(tuple(names))
            out = [cls(r) for r in rows]
            return out, "%d row%s" % (len(out), "" if len(out) == 1 else "s")

        return self._logged(sql, args, call)

    def query_one(self, sql, *args):
        """Run a query; return its first Row, or None."""
        rows = self.query(sql, *args)
        return rows[0] if rows else None

    def transaction(self):
        """`with x.transaction():` groups statements: committed together when the block
        ends, rolled back if it raises. Nested blocks are savepoints."""
        return Transaction(self)

    def _begin(self):
        conn = self._connection()
        conn.begin()
        self._owner = _job.current()

    def _finish(self, commit):
        conn = self._conn
        if conn is None:
            return
        try:
            if commit:
                conn.commit()
            else:
                conn.rollback()
        finally:
            if not conn.depth:
                self._owner = None

    @property
    def in_transaction(self):
        """True inside a transaction() block."""
        return bool(self._conn is not None and self._conn.depth and self._owner is _job.current())

    def close(self):
        """Close the connection now (the next statement reconnects)."""
        if self._conn is not None:
            self._conn.close()
        self._owner = None

    def __repr__(self):
        if self._conn is None:
            return "<remote database %s: not configured>" % self._name
        return "<remote database %s: %s>" % (self._name, self._conn.label)
