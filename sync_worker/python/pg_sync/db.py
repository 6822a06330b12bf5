# SQL in the job's transaction (module `pg_sync.db`): `db` and the query/execute behind it,
# with $1.. bound to arguments and Row results; records.py re-exports these names.
from pg_sync import _native


class Row(tuple):
    """A result row: row.column, row["column"], row[0]; iterates over its values."""

    __slots__ = ()
    _index = {}
    _names = ()

    def __getattr__(self, name):
        try:
            return tuple.__getitem__(self, self._index[name])
        except KeyError:
            raise AttributeError("the row has no column %r (columns: %s)" % (name, ", ".join(self._names))) from None

    def __getitem__(self, key):
        if isinstance(key, str):
            try:
                key = self._index[key]
            except KeyError:
                raise KeyError("the row has no column %r (columns: %s)" % (key, ", ".join(self._names))) from None
        return tuple.__getitem__(self, key)

    def get(self, key, default=None):
        i = self._index.get(key)
        return default if i is None else tuple.__getitem__(self, i)

    def keys(self):
        return list(self._names)

    def items(self):
        return list(zip(self._names, self))

    def __repr__(self):
        return "Row(%s)" % ", ".join("%s=%r" % kv for kv in zip(self._names, self))


_row_classes = {}


def _row_class(names):
    cls = _row_classes.get(names)
    if cls is None:
        index = {}
        for i, n in enumerate(names):
            index.setdefault(n, i)
        if len(_row_classes) > 1000:
            _row_classes.clear()
        cls = type("Row", (Row,), {"__slots__": (), "_index": index, "_names": names})
        _row_classes[names] = cls
    return cls


def make_row(names, values):
    return _row_class(tuple(names))(values)


def _arg(value):
    # Records and link sets stand for their ids: their classes say how (_pg_sync_ids), as
    # this module loads before records.py and links.py.
    ids = getattr(type(value), "_pg_sync_ids", None)
    if ids is not None:
        return ids(value)
    return value


def _args(args):
    return tuple(_arg(a) for a in args)


def query(sql, *args):
    if not isinstance(sql, str):
        raise TypeError("the SQL statement must be a str")
    names, rows = _native.query(sql, _args(args))
    cls = _row_class(names)
    return [cls(r) for r in rows]


def execute(sql, *args):
    if not isinstance(sql, str):
        raise TypeError("the SQL statement must be a str")
    return _native.execute(sql, _args(args))


class Savepoint:
    __slots__ = ()

    def __enter__(self):
        _native.savepoint(0)
        return self

    def __exit__(self, exc_type, exc, tb):
        _native.savepoint(1 if exc_type is None else 2)
        return False


class Database:
    """`db`: SQL in the job's transaction, as the project's run_as role."""

    __slots__ = ()

    def execute(self, sql, *args):
        """Run a statement with $1, $2, ... bound to args; return the number of rows affected."""
        return execute(sql, *args)

    def query(self, sql, *args):
        """Run a query; return a list of Row."""
        return query(sql, *args)

    def query_one(self, sql, *args):
        """Run a query; return its first Row, or None."""
        rows = query(sql, *args)
        return rows[0] if rows else None

    def savepoint(self):
        """`with db.savepoint():` — if the block raises (a database error included), its
        writes are rolled back and the job's transaction stays usable."""
        return Savepoint()

    def __repr__(self):
        return "<db>"


DB = Database()
