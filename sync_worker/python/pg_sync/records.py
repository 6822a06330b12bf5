# Tables from task code (module `pg_sync.records`): `env[table]` (browse/search/create,
# records with column attributes, write, unlink, links) on top of `db` (db.py). Identifiers
# are quoted here; values are always bound parameters.
import decimal as _decimal
import uuid as _uuid

# db.py's names stay reachable as records.X (links, sync_helpers, project and code written
# before db.py was split off use them so).
from pg_sync.db import DB, Database, Row, Savepoint, _arg, _args, _row_class, execute, make_row, query  # noqa: F401
from pg_sync.errors import UserError


def quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


def key_text(key):
    """A primary key as links store it: the column's text form, or the record text form
    (a,b) of a composite key."""
    if isinstance(key, tuple):
        return "(" + ",".join(_record_field(v) for v in key) + ")"
    return _scalar_text(key)


def _scalar_text(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _record_field(v):
    if v is None:
        return ""
    s = _scalar_text(v)
    if s == "" or any(c in s for c in '"\\(),') or any(c.isspace() for c in s):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return s


def parse_key_text(text, composite):
    """The inverse of key_text for keys read back from links."""
    if not composite:
        return text
    if not (text.startswith("(") and text.endswith(")")):
        raise ValueError("not a record text: %r" % text)
    body, fields, i = text[1:-1], [], 0
    while True:
        if i < len(body) and body[i] == '"':
            i += 1
            buf = []
            while i < len(body):
                c = body[i]
                if c == "\\" and i + 1 < len(body):
                    buf.append(body[i + 1])
                    i += 2
                elif c == '"' and i + 1 < len(body) and body[i + 1] == '"':
                    buf.append('"')
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    buf.append(c)
                    i += 1
            fields.append("".join(buf))
        else:
            j = body.find(",", i)
            j = len(body) if j < 0 else j
            fields.append(body[i:j] or None)
            i = j
        if i >= len(body):
            break
        i += 1  # the comma
    return tuple(fields)


_TABLE_SQL = """
SELECT c.oid::bigint AS oid, n.nspname AS schema, c.relname AS name,
       coalesce((SELECT pg_catalog.array_agg(a.attname::text ORDER BY k.ord)
                 FROM pg_catalog.pg_index i
                 CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                 WHERE i.indrelid = c.oid AND i.indisprimary), '{}') AS pk,
       coalesce((SELECT pg_catalog.array_agg(pg_catalog.format_type(a.atttypid, a.atttypmod) ORDER BY k.ord)
                 FROM pg_catalog.pg_index i
                 CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                 WHERE i.indrelid = c.oid AND i.indisprimary), '{}') AS pk_types
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = pg_catalog.to_regclass($1)
"""


_INT_TYPES = ("smallint", "integer", "bigint", "oid")


def _coerce(value, pg_type):
    """A key value given as text (or another type) as the Python type of its column."""
    try:
        if pg_type in _INT_TYPES and isinstance(value, (str, float)) and not isinstance(value, bool):
            return int(value)
        if pg_type == "uuid" and isinstance(value, str):
            return _uuid.UUID(value)
        if pg_type == "numeric" or pg_type.startswith("numeric("):
            if isinstance(value, (str, int)):
                return _decimal.Decimal(value)
        if (pg_type == "text" or pg_type.startswith(("character", "name"))) and not isinstance(value, str):
            return str(value)
    except (ValueError, ArithmeticError):
        raise ValueError("%r is not a valid %s key" % (value, pg_type)) from None
    return value


class Environment:
    """`env`: env["schema.table"] (or a name found on the search path) is a Model."""

    __slots__ = ("_models",)

    def __init__(self):
        object.__setattr__(self, "_models", {})

    def __getitem__(self, table):
        model = self._models.get(table)
        if model is None:
            if not isinstance(table, str) or not table:
                raise TypeError("env[...] takes a table name such as 'public.partner'")
            model = self._load(table, table)
        return model

    def _system(self, system):
        """The model of a system name '<schema>.<table>' (as links and db jobs name
        tables: unquoted, case kept)."""
        model = self._models.get(("system", system))
        if model is None:
            schema, _, name = system.partition(".")
            quoted = "%s.%s" % (quote_ident(schema), quote_ident(name)) if name else quote_ident(schema)
            model = self._load(quoted, system)
            self._models[("system", system)] = model
        return model

    def _load(self, regclass_text, shown):
        rows = query(_TABLE_SQL, regclass_text)
        if not rows:
            raise UserError("env[%r]: no such table (or not visible to the project's run_as role)" % shown)
        r = rows[0]
        model = Model(r.oid, r.schema, r.name, tuple(r.pk), tuple(r.pk_types))
        self._models[shown] = model
        return model

    @property
    def db(self):
        return DB

    def __setattr__(self, name, value):
        raise AttributeError("env is read-only")

    def __repr__(self):
        return "<env>"


class Model:
    """One table: browse(ids), search(where_sql, *args, order=None, limit=None), create(values)."""

    __slots__ = ("_oid", "_system", "_quoted", "_pk", "_pk_types")

    def __init__(self, oid, schema, name, pk, pk_types):
        object.__setattr__(self, "_oid", oid)
        object.__setattr__(self, "_system", "%s.%s" % (schema, name))
        object.__setattr__(self, "_quoted", "%s.%s" % (quote_ident(schema), quote_ident(name)))
        object.__setattr__(self, "_pk", pk)
        object.__setattr__(self, "_pk_types", pk_types)

    def __setattr__(self, name, value):
        raise AttributeError("models are read-only")

    @property
    def table(self):
        """'<schema>.<table>', the system name of its rows in links."""
        return self._system

    def __repr__(self):
        return "env[%r]" % self._system

    def _need_pk(self, what):
        if not self._pk:
            raise UserError("%s: table %s has no primary key" % (what, self._system))

    def _key_of(self, row):
        if len(self._pk) == 1:
            return row[self._pk[0]]
        return tuple(row[c] for c in self._pk)

    def _key_condition(self, first_param):
        """SQL matching the primary key against the key list bound at $first_param."""
        if len(self._pk) == 1:
            return "t.%s = ANY ($%d)" % (quote_ident(self._pk[0]), first_param)
        cols = ", ".join("t." + quote_ident(c) for c in self._pk)
        arrays = ", ".join("pg_catalog.unnest($%d::%s[])" % (first_param + i, ty) for i, ty in enumerate(self._pk_types))
        return "(%s) IN (SELECT * FROM ROWS FROM (%s))" % (cols, arrays)

    def _key_args(self, keys):
        if len(self._pk) == 1:
            return (list(keys),)
        return tuple([k[i] for k in keys] for i in range(len(self._pk)))

    def _normalize_key(self, key):
        """A key as rows carry it (ids often arrive as text: links, JSON)."""
        if isinstance(key, Records):
            return key.id
        if len(self._pk) > 1:
            if isinstance(key, str):
                key = parse_key_text(key, True)
            if not isinstance(key, (tuple, list)) or len(key) != len(self._pk):
                raise ValueError("%s has a %d-column primary key (%s): give each id as a tuple" % (self._system, len(self._pk), ", ".join(self._pk)))
            return tuple(_coerce(v, t) for v, t in zip(key, self._pk_types))
        return _coerce(key, self._pk_types[0])

    def browse(self, ids):
        """Records for primary key values (one value, or a list); rows are read on first use."""
        self._need_pk("browse")
        if ids is None:
            ids = []
        elif isinstance(ids, Records):
            ids = list(ids._keys)
        elif not isinstance(ids, (list, tuple, set, frozenset)) or (len(self._pk) > 1 and isinstance(ids, tuple) and ids and not isinstance(ids[0], (tuple, list))):
            ids = [ids]
        normalized = [self._normalize_key(k) for k in ids]
        try:
            # Duplicates go, order stays, in linear time.
            keys = tuple(dict.fromkeys(normalized))
        except TypeError:
            # An unhashable key value (a jsonb primary key): the slow way.
            keys = []
            for k in normalized:
                if k not in keys:
                    keys.append(k)
            keys = tuple(keys)
        return Records(self, keys, {})

    def search(self, where_sql="TRUE", *args, order=None, limit=None):
        """Records whose rows match `where_sql` ($1.. bound to args), optionally ordered and limited."""
        if not isinstance(where_sql, str) or not where_sql.strip():
            where_sql = "TRUE"
        sql = "SELECT * FROM %s t WHERE (%s)" % (self._quoted, where_sql)
        if order:
            sql += " ORDER BY " + str(order)
        args = list(args)
        if limit is not None:
            args.append(int(limit))
            sql += " LIMIT $%d" % len(args)
        rows = query(sql, *args)
        return self._from_rows(rows)

    def _from_rows(self, rows, readonly=False):
        self._need_pk("records")
        cache, keys = {}, []
        for row in rows:
            k = self._key_of(row)
            if k not in cache:
                keys.append(k)
            cache[k] = row
        return Records(self, tuple(keys), cache, readonly)

    def create(self, values):
        """Insert a row from a dict of column values; return it as a record."""
        if not isinstance(values, dict):
            raise TypeError("create() takes a dict of column values")
        if values:
            cols = ", ".join(quote_ident(str(c)) for c in values)
            marks = ", ".join("$%d" % (i + 1) for i in range(len(values)))
            sql = "INSERT INTO %s AS t (%s) VALUES (%s) RETURNING *" % (self._quoted, cols, marks)
        else:
            sql = "INSERT INTO %s AS t DEFAULT VALUES RETURNING *" % self._quoted
        rows = query(sql, *values.values())
        return self._from_rows(rows)

    def _images(self, keys, images):
        """Read-only records of deleted rows, from their old images (dicts)."""
        rows = [make_row(tuple(i), tuple(i.values())) for i in (images or []) if isinstance(i, dict)]
        if rows:
            return self._from_rows(rows, readonly=True)
        return Records(self, tuple(self._normalize_key(k) for k in keys), {}, True)


class Records:
    """A record set of one table: iterate, len, .ids; one record: column attributes, .id,
    rec["column"]. write(), unlink(), set_link(), search_links()."""

    __slots__ = ("_model", "_keys", "_cache", "_readonly")

    def __init__(self, model, keys, cache, readonly=False):
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_keys", keys)
        object.__setattr__(self, "_cache", cache)
        object.__setattr__(self, "_readonly", readonly)

    def __setattr__(self, name, value):
        raise AttributeError("use write({%r: ...}) to change a record" % name)

    def _pg_sync_ids(self):
        # As a query argument (db.py): one record is its id, a set the list of ids.
        return self.id if len(self._keys) == 1 else list(self._keys)

    # -- set behaviour ----------------------------------------------------------
    def __len__(self):
        return len(self._keys)

    def __bool__(self):
        return bool(self._keys)

    def __iter__(self):
        for k in self._keys:
            yield Records(self._model, (k,), self._cache, self._readonly)

    def __eq__(self, other):
        return isinstance(other, Records) and other._model._oid == self._model._oid and set(other._keys) == set(self._keys)

    def __hash__(self):
        return hash((self._model._oid, frozenset(self._keys)))

    def __or__(self, other):
        self._same_table(other)
        keys = list(self._keys) + [k for k in other._keys if k not in self._keys]
        return Records(self._model, tuple(keys), self._merged_cache(other), self._readonly and other._readonly)

    def __and__(self, other):
        self._same_table(other)
        return Records(self._model, tuple(k for k in self._keys if k in other._keys), self._cache, self._readonly)

    def __sub__(self, other):
        self._same_table(other)
        return Records(self._model, tuple(k for k in self._keys if k not in other._keys), self._cache, self._readonly)

    def _same_table(self, other):
        if not isinstance(other, Records) or other._model._oid != self._model._oid:
            raise TypeError("records of different tables cannot be combined")

    def _merged_cache(self, other):
        cache = dict(other._cache)
        cache.update(self._cache)
        return cache

    def __getitem__(self, key):
        if isinstance(key, str):
            return self._row()[key]
        if isinstance(key, slice):
            return Records(self._model, self._keys[key], self._cache, self._readonly)
        return Records(self._model, (self._keys[key],), self._cache, self._readonly)

    def __repr__(self):
        ids = list(self._keys)
        return "%r.browse(%r)" % (self._model, ids[0] if len(ids) == 1 else ids)

    @property
    def ids(self):
        """The primary key values (tuples for composite keys)."""
        return list(self._keys)

    @property
    def id(self):
        """The primary key value of a single record."""
        self._ensure_one("id")
        return self._keys[0]

    @property
    def table(self):
        return self._model.table

    def _ensure_one(self, what):
        if len(self._keys) != 1:
            raise ValueError("%s needs a single record, this set has %d (iterate over it)" % (what, len(self._keys)))

    # -- values -----------------------------------------------------------------
    def _fetch(self):
        missing = [k for k in self._keys if k not in self._cache]
        if not missing:
            return
        m = self._model
        sql = "SELECT * FROM %s t WHERE %s" % (m._quoted, m._key_condition(1))
        for row in query(sql, *m._key_args(missing)):
            self._cache[m._key_of(row)] = row

    def _row(self):
        self._ensure_one("reading a column")
        key = self._keys[0]
        row = self._cache.get(key)
        if row is None:
            self._fetch()
            row = self._cache.get(key)
            if row is None:
                raise UserError("%s has no row with key %r (deleted?)" % (self._model.table, key))
        return row

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        row = self._row()
        try:
            return row[name]
        except KeyError:
            raise AttributeError("%s has no column %r" % (self._model.table, name)) from None

    def read(self):
        """The rows as dicts (column -> value)."""
        self._fetch()
        return [dict(self._cache[k].items()) for k in self._keys if k in self._cache]

    def exists(self):
        """The records whose rows exist."""
        self._fetch()
        return Records(self._model, tuple(k for k in self._keys if k in self._cache), self._cache, self._readonly)

    # -- writes -----------------------------------------------------------------
    def _writable(self, what):
        if self._readonly:
            raise UserError("%s: these records are old images of deleted rows (read-only)" % what)

    def write(self, values):
        """UPDATE the rows with a dict of column values."""
        self._writable("write")
        if not isinstance(values, dict) or not values:
            raise TypeError("write() takes a non-empty dict of column values")
        if not self._keys:
            return True
        m = self._model
        sets = ", ".join("%s = $%d" % (quote_ident(str(c)), i + 1) for i, c in enumerate(values))
        sql = "UPDATE %s AS t SET %s WHERE %s RETURNING *" % (m._quoted, sets, m._key_condition(len(values) + 1))
        for k in self._keys:
            self._cache.pop(k, None)
        for row in query(sql, *list(values.values()), *m._key_args(self._keys)):
            self._cache[m._key_of(row)] = row
        return True

    def unlink(self):
        """DELETE the rows."""
        self._writable("unlink")
        if not self._keys:
            return True
        m = self._model
        execute("DELETE FROM %s AS t WHERE %s" % (m._quoted, m._key_condition(1)), *m._key_args(self._keys))
        for k in self._keys:
            self._cache.pop(k, None)
        return True

    # -- links ------------------------------------------------------------------
    def set_link(self, relation, external, sync_date=None, allow_many2many=False):
        """Link this record to an external ref in `relation`; returns the link."""
        from pg_sync import links

        self._ensure_one("set_link")
        return links.set_local_link(self._model, key_text(self._keys[0]), relation, external, sync_date, allow_many2many)

    def search_links(self, relation):
        """The links of these records in `relation`."""
        from pg_sync import links

        return links.search_local_links(self._model, [key_text(k) for k in self._keys], relation)


def records_for_db_event(env, args):
    """The `records` of handle_db from job args {"event", "table", "keys", "old"}."""
    table = args.get("table")
    if not table:
        raise UserError("the job has no table in its args")
    model = env._system(table)
    keys = [tuple(k) if isinstance(k, list) else k for k in (args.get("keys") or [])]
    if args.get("event") == "delete":
        return model._images(keys, args.get("old"))
    return model.browse(keys).exists()
