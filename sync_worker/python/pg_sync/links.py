# Links from task code (module `pg_sync.links`): set_link / search_links / get_link and
# link sets, wrapping the SQL functions sync_set_link, sync_search_links, sync_get_link,
# sync_update_links and sync_unlink.
from pg_sync import records as _records
from pg_sync.errors import UserError

EXTERNAL = "__external__"
_COLUMNS = "l.id, l.relation, l.system1, l.ref1, l.system2, l.ref2, l.many2many, l.sync_date"


class Links:
    """A set of links: len, iteration (one-link sets), == - | & ^, .ids, .external,
    .record / .odoo (the local records), .sync_date, .get(system), update_links(), unlink()."""

    __slots__ = ("_rows",)

    def __init__(self, rows):
        object.__setattr__(self, "_rows", tuple(rows))

    def __setattr__(self, name, value):
        raise AttributeError("links are read-only; use update_links() or unlink()")

    def _pg_sync_ids(self):
        return [r.id for r in self._rows]

    # -- set behaviour ----------------------------------------------------------
    def __len__(self):
        return len(self._rows)

    def __bool__(self):
        return bool(self._rows)

    def __iter__(self):
        for r in self._rows:
            yield Links((r,))

    def _idset(self):
        return {r.id for r in self._rows}

    def __eq__(self, other):
        return isinstance(other, Links) and self._idset() == other._idset()

    def __hash__(self):
        return hash(frozenset(self._idset()))

    def __or__(self, other):
        _check(other)
        mine = self._idset()
        return Links(self._rows + tuple(r for r in other._rows if r.id not in mine))

    def __and__(self, other):
        _check(other)
        theirs = other._idset()
        return Links(r for r in self._rows if r.id in theirs)

    def __sub__(self, other):
        _check(other)
        theirs = other._idset()
        return Links(r for r in self._rows if r.id not in theirs)

    def __xor__(self, other):
        return (self | other) - (self & other)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Links(self._rows[i])
        return Links((self._rows[i],))

    def __repr__(self):
        return "<links %s>" % ", ".join(
            "%s:%s(%s=%s, %s=%s)" % (r.id, r.relation, r.system1, r.ref1, r.system2, r.ref2) for r in self._rows
        )

    # -- values -----------------------------------------------------------------
    @property
    def ids(self):
        return [r.id for r in self._rows]

    @property
    def id(self):
        self._ensure_one("id")
        return self._rows[0].id

    @property
    def relation(self):
        self._ensure_one("relation")
        return self._rows[0].relation

    def _ensure_one(self, what):
        if len(self._rows) != 1:
            raise ValueError("%s needs a single link, this set has %d" % (what, len(self._rows)))

    def get(self, system):
        """The refs of `system` in these links (a list)."""
        out = []
        for r in self._rows:
            if r.system1 == system:
                out.append(r.ref1)
            elif r.system2 == system:
                out.append(r.ref2)
            else:
                raise ValueError("link %s has no system %r (it links %s and %s)" % (r.id, system, r.system1, r.system2))
        return out

    @property
    def external(self):
        """The external ref of a local link (a list when the set has several or none)."""
        refs = self.get(EXTERNAL)
        return refs[0] if len(refs) == 1 else refs

    @property
    def record(self):
        """The local records of these links (None for an empty set)."""
        if not self._rows:
            return None
        systems, refs = set(), []
        for r in self._rows:
            system, ref = (r.system2, r.ref2) if r.system1 == EXTERNAL else (r.system1, r.ref1)
            systems.add(system)
            refs.append(ref)
        if len(systems) != 1:
            raise ValueError("these links point to rows of several tables: %s" % ", ".join(sorted(systems)))
        from pg_sync.project import current_env

        model = current_env()._system(systems.pop())
        composite = len(model._pk) > 1
        keys = [_records.parse_key_text(ref, composite) for ref in refs]
        if not composite:
            return model.browse(keys)
        rows = _records.query(
            "SELECT * FROM %s t WHERE ROW(%s)::text = ANY ($1)"
            % (model._quoted, ", ".join("t." + _records.quote_ident(c) for c in model._pk)),
            refs,
        )
        return model._from_rows(rows)

    odoo = record

    @property
    def sync_date(self):
        """The oldest sync date of these links (None for an empty set)."""
        return min((r.sync_date for r in self._rows), default=None)

    # -- writes -----------------------------------------------------------------
    def update_links(self, sync_date=None):
        """Set the sync date (default: now) of these links; returns the updated set."""
        if not self._rows:
            return self
        row = _records.query(
            "SELECT sync_update_links($1::bigint[], x.d) AS n, x.d FROM (SELECT coalesce($2::timestamptz, now()) AS d) x",
            self.ids,
            sync_date,
        )[0]
        return Links(
            _records.make_row(r._names, tuple(row.d if n == "sync_date" else v for n, v in zip(r._names, r)))
            for r in self._rows
        )

    def unlink(self):
        """Delete these links; returns how many were deleted."""
        if not self._rows:
            return 0
        return _records.query("SELECT sync_unlink($1::bigint[]) AS n", self.ids)[0].n


def _check(other):
    if not isinstance(other, Links):
        raise TypeError("links can only be combined with links")


def _links(sql, *args):
    return Links(r for r in _records.query(sql, *args) if r.id is not None)


def _refs(refs, what):
    if not isinstance(refs, dict) or len(refs) != 2:
        raise TypeError('%s: refs must be a dict of two systems, e.g. {"github": 12, "trello": "abc"}' % what)
    out = {}
    for system, ref in refs.items():
        if isinstance(ref, (list, tuple, set)):
            out[str(system)] = [str(x) for x in ref]
        elif ref is None:
            out[str(system)] = None
        else:
            out[str(system)] = str(ref)
    return out


def set_link(relation, refs, sync_date=None, allow_many2many=False):
    """Link two external records: set_link("rel", {"github": 12, "trello": "abc"})."""
    return _links(
        "SELECT %s FROM sync_set_link($1::text, $2::jsonb, coalesce($3::timestamptz, now()), $4::boolean) l" % _COLUMNS,
        relation,
        _refs(refs, "set_link"),
        sync_date,
        bool(allow_many2many),
    )


def search_links(relation, refs):
    """Links between two systems; a ref may be a value, a list, or None (any)."""
    return _links(
        "SELECT %s FROM sync_search_links($1::text, $2::jsonb) l" % _COLUMNS,
        relation,
        _refs(refs, "search_links"),
    )


def get_link(relation, ref_info):
    """The link of an external ref (local links) or of refs {system: ref, ...}; an empty
    set when there is none, an error when there are several."""
    if isinstance(ref_info, dict):
        return _links(
            "SELECT %s FROM sync_get_link($1::text, $2::jsonb) l" % _COLUMNS,
            relation,
            _refs(ref_info, "get_link"),
        )
    if ref_info is None:
        raise UserError("get_link: give an external ref or a dict of refs")
    return _links("SELECT %s FROM sync_get_link($1::text, $2::text) l" % _COLUMNS, relation, str(ref_info))


def set_local_link(model, key, relation, external, sync_date, allow_many2many):
    if external is None or external == "":
        raise UserError("set_link: the external ref must not be empty")
    return _links(
        "SELECT %s FROM sync_set_link($1::text, $2::oid::regclass, $3::text, $4::text, coalesce($5::timestamptz, now()), $6::boolean) l"
        % _COLUMNS,
        relation,
        model._oid,
        key,
        str(external),
        sync_date,
        bool(allow_many2many),
    )


def search_local_links(model, keys, relation):
    return _links(
        "SELECT %s FROM sync_search_links($1::text, $2::oid::regclass, $3::text[]) l" % _COLUMNS,
        relation,
        model._oid,
        keys,
    )
