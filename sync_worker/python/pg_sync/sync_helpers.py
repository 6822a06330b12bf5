# Sync helpers of task code (module `pg_sync.sync_helpers`): sync_db2x, sync_x2db and
# sync_external (aliases sync_odoo2x, sync_x2odoo), one-to-one syncs driven by links.
#
# Sync Studio's semantics, per source item: a link in `relation` -> update (when
# update=True), no link -> create and link (when create=True), else skip. Unlike Sync
# Studio, the links of the whole source list are read with one statement, an update
# refreshes its link's sync_date, and the call returns what it did. Callbacks are the
# task's own functions; the helpers only call them, so restricted code can use them.
from pg_sync import job as _job
from pg_sync import links as _links
from pg_sync import records as _records
from pg_sync.errors import UserError

_EXTERNAL = _links.EXTERNAL


# ---------------------------------------------------------------------------------
# Checking sync_info
# ---------------------------------------------------------------------------------


def _relation(name, relation, where):
    if not isinstance(relation, str) or not relation:
        raise UserError("%s: %s must be the relation name (a non-empty str), got %r" % (name, where, relation))
    return relation


def _section(name, info, key, where, needed_for):
    """info[key], a dict; `where` names info in messages."""
    value = info.get(key)
    if value is None:
        raise UserError("%s: %s has no %r, needed for %s" % (name, where, key, needed_for))
    if not isinstance(value, dict):
        raise UserError("%s: %s[%r] must be a dict, got %s" % (name, where, key, type(value).__name__))
    return value


def _callback(name, info, key, where, what):
    """The function info[key]; `what` says what it is called with and returns."""
    fn = info.get(key)
    if fn is None:
        raise UserError("%s: %s has no %r: give a function %s" % (name, where, key, what))
    if not callable(fn):
        raise UserError("%s: %s[%r] must be a function %s, got %s" % (name, where, key, what, type(fn).__name__))
    return fn


def _sync_info(name, sync_info):
    if not isinstance(sync_info, dict):
        raise UserError("%s: sync_info must be a dict, got %s" % (name, type(sync_info).__name__))
    if "relation" not in sync_info:
        raise UserError("%s: sync_info has no 'relation' (the relation name of the links)" % name)
    return _relation(name, sync_info["relation"], "sync_info['relation']")


def _shown(item):
    text = repr(item)
    return text if len(text) <= 200 else text[:200] + "..."


def _ref_text(name, ref, source, item):
    """A ref returned by a callback, in the text form links store."""
    if ref is None or ref == "":
        raise UserError("%s: %s returned no ref for %s" % (name, source, _shown(item)))
    if isinstance(ref, (bool, dict, list, tuple, set, frozenset, _records.Records, _links.Links)):
        raise UserError(
            "%s: %s must return a ref (a str or a number), got %s for %s" % (name, source, type(ref).__name__, _shown(item))
        )
    return str(ref)


# ---------------------------------------------------------------------------------
# Outcome
# ---------------------------------------------------------------------------------


class _Outcome:
    __slots__ = ("name", "relation", "created", "updated", "skipped", "refresh")

    def __init__(self, name, relation):
        self.name = name
        self.relation = relation
        self.created, self.updated, self.skipped = [], [], []
        self.refresh = {}

    def finish(self):
        # One statement for every link an update touched (dict: each link once, in order).
        if self.refresh:
            _records.query("SELECT sync_update_links($1::bigint[]) AS n", list(self.refresh))
        _job.log(
            "%s: relation %r: %d created, %d updated, %d skipped"
            % (self.name, self.relation, len(self.created), len(self.updated), len(self.skipped)),
            _job.LOG_DEBUG,
        )
        return {"created": self.created, "updated": self.updated, "skipped": self.skipped}


def _run(outcome, entries, found, create, update, link):
    """The Sync Studio loop over entries (item, key, shown): found[key] is (link id,
    destination) when the item is linked; link(item, key, created) links what `create`
    returned and records it in `found`, so a later entry with the same key sees it."""
    for item, key, shown in entries:
        hit = found.get(key)
        if hit is not None:
            if update is None:
                outcome.skipped.append(shown)
                continue
            update(hit[1], item)
            outcome.refresh[hit[0]] = True
            outcome.updated.append(shown)
        elif create is not None:
            link(item, key, create(item))
            outcome.created.append(shown)
        else:
            outcome.skipped.append(shown)
    return outcome.finish()


# ---------------------------------------------------------------------------------
# Local records and their links
# ---------------------------------------------------------------------------------


def _single_records(name, src_list):
    """src_list (a record set, or an iterable of records) as one-record sets, in order."""
    if isinstance(src_list, _records.Records):
        return list(src_list)
    if src_list is None or isinstance(src_list, (str, bytes, dict)):
        raise UserError("%s: src_list must be records (env[...] record sets), got %s" % (name, type(src_list).__name__))
    out = []
    try:
        iterator = iter(src_list)
    except TypeError:
        raise UserError("%s: src_list must be records (env[...] record sets), got %s" % (name, type(src_list).__name__)) from None
    for item in iterator:
        if not isinstance(item, _records.Records):
            raise UserError("%s: src_list must hold records (from env[...]), got %s" % (name, type(item).__name__))
        out.extend(item)
    return out


def _local_side(row):
    """(local system, local ref, external ref) of a local link row."""
    if row.system1 == _EXTERNAL:
        return row.system2, row.ref2, row.ref1
    return row.system1, row.ref1, row.ref2


def _links_of_records(name, records, relation):
    """{(table oid, key text): (link id, external ref)} for these records: one search per
    table (usually one)."""
    by_table = {}
    for rec in records:
        model = rec._model
        # A dict keeps each key once, in order.
        by_table.setdefault(model._oid, (model, {}))[1][_records.key_text(rec._keys[0])] = None
    found = {}
    for oid, (model, keys) in by_table.items():
        for row in _links.search_local_links(model, list(keys), relation)._rows:
            _system, ref, external = _local_side(row)
            if (oid, ref) in found:
                raise UserError(
                    "%s: %s record %s has several links in relation %r; the sync helpers are one-to-one (use search_links for the others)"
                    % (name, model.table, ref, relation)
                )
            found[(oid, ref)] = (row.id, external)
    return found


def _links_of_externals(name, relation, refs):
    """{external ref: link row} of local links: one statement for all refs, the match of
    sync_get_link(relation, external), without its error on the first ambiguous ref."""
    if not refs:
        return {}
    rows = _records.query(
        "SELECT %(c)s FROM sync.link l WHERE l.relation = $1 AND l.system1 = '__external__' AND l.ref1 = ANY ($2::text[])"
        " UNION ALL SELECT %(c)s FROM sync.link l WHERE l.relation = $1 AND l.system2 = '__external__' AND l.ref2 = ANY ($2::text[])"
        % {"c": _links._COLUMNS},
        relation,
        refs,
    )
    found = {}
    for row in rows:
        _system, _ref, external = _local_side(row)
        if external in found:
            raise UserError(
                "%s: external ref %r has several links in relation %r; the sync helpers are one-to-one (use get_link/search_links)"
                % (name, external, relation)
            )
        found[external] = row
    return found


def _linked_records(rows):
    """{external ref: one-record set} for local link rows. The rows of each table are read
    with one query: an update usually reads them, and one read each would cost more."""
    env = _current_env()
    by_system = {}
    for external, row in rows.items():
        system, ref, _external = _local_side(row)
        by_system.setdefault(system, []).append((external, ref))
    out = {}
    for system, pairs in by_system.items():
        model = env._system(system)
        if len(model._pk) > 1:
            # Composite keys: read the rows by the text form links store, so that keys of
            # any column type come back typed.
            key_sql = "ROW(%s)::text" % ", ".join("t." + _records.quote_ident(c) for c in model._pk)
            table_rows = _records.query(
                "SELECT %s AS pg_sync_ref, t.* FROM %s t WHERE %s = ANY ($1::text[])" % (key_sql, model._quoted, key_sql),
                [ref for _e, ref in pairs],
            )
            by_ref = {r[0]: _records.make_row(r.keys()[1:], tuple(r)[1:]) for r in table_rows}
            recs = model._from_rows(list(by_ref.values()))
            key_of = {ref: model._key_of(row) for ref, row in by_ref.items()}
            for external, ref in pairs:
                key = key_of.get(ref)
                if key is None:
                    raise UserError("%s has no row with key %s (deleted?)" % (model.table, ref))
                out[external] = _records.Records(model, (key,), recs._cache)
        else:
            keys = {ref: model._normalize_key(ref) for _e, ref in pairs}
            recs = _records.Records(model, tuple(keys.values()), {})
            recs._fetch()
            for external, ref in pairs:
                out[external] = _records.Records(model, (keys[ref],), recs._cache)
    return out


def _current_env():
    from pg_sync.project import current_env

    return current_env()


# ---------------------------------------------------------------------------------
# The helpers
# ---------------------------------------------------------------------------------


def _db2x(name, src_list, sync_info, create, update):
    relation = _sync_info(name, sync_info)
    x_create = x_update = None
    if create or update:
        x = _section(name, sync_info, "x", "sync_info", "create=True" if create else "update=True")
        if create:
            x_create = _callback(name, x, "create", "sync_info['x']", "record -> external ref")
        if update:
            x_update = _callback(name, x, "update", "sync_info['x']", "(external_ref, record)")
    records = _single_records(name, src_list)
    found = _links_of_records(name, records, relation)
    entries = [(rec, (rec._model._oid, _records.key_text(rec._keys[0])), rec.id) for rec in records]

    def link(rec, key, external):
        external = _ref_text(name, external, "sync_info['x']['create']", rec)
        found[key] = (rec.set_link(relation, external).id, external)

    return _run(_Outcome(name, relation), entries, found, x_create, x_update, link)


def _db_section(name, sync_info, needed_for):
    """sync_info["db"], or sync_info["odoo"] (Sync Studio's key); (key, section)."""
    db, odoo = sync_info.get("db"), sync_info.get("odoo")
    if db is not None and odoo is not None and db is not odoo:
        raise UserError("%s: sync_info has both 'db' and 'odoo' (two names of the same thing): give one" % name)
    key = "odoo" if db is None and odoo is not None else "db"
    return key, _section(name, sync_info, key, "sync_info", needed_for)


def _x2db(name, src_list, sync_info, create, update):
    relation = _sync_info(name, sync_info)
    x = _section(name, sync_info, "x", "sync_info", "its 'get_ref' function")
    get_ref = _callback(name, x, "get_ref", "sync_info['x']", "item -> external ref")
    db_create = db_update = None
    where = "sync_info['db']"
    if create or update:
        key, db = _db_section(name, sync_info, "create=True" if create else "update=True")
        where = "sync_info[%r]" % key
        if create:
            db_create = _callback(name, db, "create", where, "item -> record")
        if update:
            db_update = _callback(name, db, "update", where, "(record, item)")
    items = list(src_list)
    refs = [_ref_text(name, get_ref(item), "sync_info['x']['get_ref']", item) for item in items]
    rows = _links_of_externals(name, relation, list(dict.fromkeys(refs)))
    # Only an update needs the linked records.
    records = _linked_records(rows) if db_update is not None else {}
    found = {ref: (row.id, records.get(ref)) for ref, row in rows.items()}

    def link(item, ref, rec):
        if not isinstance(rec, _records.Records) or len(rec) != 1:
            got = "%d records" % len(rec) if isinstance(rec, _records.Records) else type(rec).__name__
            raise UserError(
                "%s: %s['create'] must return the created record (one record of env[...]), got %s for %s"
                % (name, where, got, _shown(item))
            )
        found[ref] = (rec.set_link(relation, ref).id, rec)

    return _run(_Outcome(name, relation), list(zip(items, refs, refs)), found, db_create, db_update, link)


def _system(name, info, where):
    system = info.get("system")
    if not isinstance(system, str) or not system:
        raise UserError("%s: %s needs 'system', the system name (a non-empty str), got %r" % (name, where, system))
    return system


def _external_callback(name, src_info, dst_info, key, what):
    """(dst_info[key], where), or src_info[key] where Sync Studio's documentation puts it."""
    dst, src = dst_info.get(key), src_info.get(key)
    if dst is not None and src is not None and dst is not src:
        raise UserError("%s: both dst_info and src_info have %r: give it in dst_info" % (name, key))
    where = "src_info" if dst is None and src is not None else "dst_info"
    info = src_info if where == "src_info" else dst_info
    return _callback(name, info, key, where, what), "%s[%r]" % (where, key)


def sync_external(src_list, relation, src_info, dst_info, create=False, update=False):
    """Sync items of one external system to another, linked in `relation` by refs of two
    systems: src_info {"system", "get_ref": item -> ref}, dst_info {"system",
    "create": item -> destination ref, "update": (destination_ref, item)}. Returns
    {"created", "updated", "skipped"}: lists of source refs."""
    name = "sync_external"
    relation = _relation(name, relation, "relation")
    for info, where in ((src_info, "src_info"), (dst_info, "dst_info")):
        if not isinstance(info, dict):
            raise UserError("%s: %s must be a dict, got %s" % (name, where, type(info).__name__))
    src_system = _system(name, src_info, "src_info")
    dst_system = _system(name, dst_info, "dst_info")
    if src_system == dst_system:
        raise UserError("%s: src_info and dst_info name the same system %r; a link joins two systems" % (name, src_system))
    get_ref = _callback(name, src_info, "get_ref", "src_info", "item -> source ref")
    dst_create = dst_update = None
    create_where = "dst_info['create']"
    if create:
        dst_create, create_where = _external_callback(name, src_info, dst_info, "create", "item -> destination ref")
    if update:
        dst_update = _external_callback(name, src_info, dst_info, "update", "(destination_ref, item)")[0]
    items = list(src_list)
    refs = [_ref_text(name, get_ref(item), "src_info['get_ref']", item) for item in items]
    found = {}
    if refs:
        # One search for the whole list: the links of these source refs to dst_system.
        links = _links.search_links(relation, {src_system: list(dict.fromkeys(refs)), dst_system: None})
        for row in links._rows:
            src_ref, dst_ref = (row.ref1, row.ref2) if row.system1 == src_system else (row.ref2, row.ref1)
            if src_ref in found:
                raise UserError(
                    "%s: %s ref %r has several links to %s in relation %r; the sync helpers are one-to-one (use search_links)"
                    % (name, src_system, src_ref, dst_system, relation)
                )
            found[src_ref] = (row.id, dst_ref)

    def link(item, ref, dst_ref):
        dst_ref = _ref_text(name, dst_ref, create_where, item)
        found[ref] = (_links.set_link(relation, {src_system: ref, dst_system: dst_ref}).id, dst_ref)

    return _run(_Outcome(name, relation), list(zip(items, refs, refs)), found, dst_create, dst_update, link)


def sync_db2x(src_list, sync_info, create=False, update=False):
    """Sync local records to an external system: sync_info {"relation", "x": {"create":
    record -> external ref, "update": (external_ref, record)}}. Returns {"created",
    "updated", "skipped"}: lists of record ids."""
    return _db2x("sync_db2x", src_list, sync_info, create, update)


def sync_odoo2x(src_list, sync_info, create=False, update=False):
    """Sync Studio's name of sync_db2x."""
    return _db2x("sync_odoo2x", src_list, sync_info, create, update)


def sync_x2db(src_list, sync_info, create=False, update=False):
    """Sync external items to local records: sync_info {"relation", "x": {"get_ref": item
    -> external ref}, "db" (or "odoo"): {"create": item -> record, "update": (record,
    item)}}. Returns {"created", "updated", "skipped"}: lists of external refs."""
    return _x2db("sync_x2db", src_list, sync_info, create, update)


def sync_x2odoo(src_list, sync_info, create=False, update=False):
    """Sync Studio's name of sync_x2db."""
    return _x2db("sync_x2odoo", src_list, sync_info, create, update)
