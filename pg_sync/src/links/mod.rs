// Links between local rows and external records: the SQL
// functions sync_set_link, sync_search_links, sync_get_link, sync_update_links and
// sync_unlink. The many2many rule lives in set.rs, local rows in local.rs, link
// cleanup of deleted rows and dropped tables in cleanup.rs, input checks in refs.rs.
use pgrx::datum::DatumWithOid;
use pgrx::heap_tuple::PgHeapTuple;
use pgrx::prelude::*;
use pgrx::{pg_sys, JsonB};

use crate::error::*;
use crate::plans;
use crate::tables::{table_info, Regclass};

mod cleanup;
mod local;
mod refs;
mod set;

use set::{set_link, Side};

/// System name of the external side of a local link.
pub const EXTERNAL: &str = "__external__";

type Link = PgHeapTuple<'static, pgrx::AllocatedByRust>;

fn now() -> TimestampWithTimeZone {
    // SAFETY: GetCurrentTransactionStartTimestamp only reads backend state; now() is
    // the transaction start, like the SQL default.
    let ts = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    TimestampWithTimeZone::try_from(ts).unwrap_or_else(|_| {
        raise(
            ERRCODE_DATETIME_FIELD_OVERFLOW,
            "transaction start time out of range",
            "",
        )
    })
}

// ---------------------------------------------------------------------------------
// sync_set_link
// ---------------------------------------------------------------------------------

fn set_local_link(
    relation: Option<&str>,
    tbl: Option<Regclass>,
    id: Option<String>,
    external: Option<&str>,
    sync_date: Option<TimestampWithTimeZone>,
    allow_many2many: Option<bool>,
) -> Link {
    const FUNC: &str = "sync_set_link";
    let relation = refs::relation(relation, FUNC);
    let info = table_info(tbl, FUNC);
    let id = refs::reference(id.as_deref(), FUNC, "id");
    let external = refs::reference(external, FUNC, "external");
    local::check_can_read(&info, FUNC);
    let local = Side {
        system: info.system.clone(),
        reference: local::row_ref(&info, &id, FUNC),
    };
    let link = set_link(
        &relation,
        local,
        Side::external(external),
        sync_date.unwrap_or_else(now),
        allow_many2many.unwrap_or(false),
        FUNC,
    );
    local::ensure_cleanup(&info);
    link
}

/// Link a local row (by bigint id) to an external ref.
#[pg_extern(name = "sync_set_link", volatile, parallel_unsafe)]
fn sync_set_link_bigint(
    relation: Option<&str>,
    tbl: Option<Regclass>,
    id: Option<i64>,
    external: Option<&str>,
    sync_date: default!(Option<TimestampWithTimeZone>, "now()"),
    allow_many2many: default!(Option<bool>, false),
) -> pgrx::composite_type!('static, "sync.link") {
    set_local_link(
        relation,
        tbl,
        id.map(|i| i.to_string()),
        external,
        sync_date,
        allow_many2many,
    )
}

/// Link a local row (by text id: uuid, text or composite key text form) to an external ref.
#[pg_extern(name = "sync_set_link", volatile, parallel_unsafe)]
fn sync_set_link_text(
    relation: Option<&str>,
    tbl: Option<Regclass>,
    id: Option<&str>,
    external: Option<&str>,
    sync_date: default!(Option<TimestampWithTimeZone>, "now()"),
    allow_many2many: default!(Option<bool>, false),
) -> pgrx::composite_type!('static, "sync.link") {
    set_local_link(
        relation,
        tbl,
        id.map(str::to_string),
        external,
        sync_date,
        allow_many2many,
    )
}

/// Link records of two external systems: refs like {"github": "12", "trello": "abc"}.
#[pg_extern(name = "sync_set_link", volatile, parallel_unsafe)]
fn sync_set_link_refs(
    relation: Option<&str>,
    refs: Option<JsonB>,
    sync_date: default!(Option<TimestampWithTimeZone>, "now()"),
    allow_many2many: default!(Option<bool>, false),
) -> pgrx::composite_type!('static, "sync.link") {
    const FUNC: &str = "sync_set_link";
    let relation = refs::relation(relation, FUNC);
    let [(s1, v1), (s2, v2)] = refs::two_systems(&refs, FUNC);
    let a = Side {
        reference: refs::scalar(v1, &s1, FUNC),
        system: s1,
    };
    let b = Side {
        reference: refs::scalar(v2, &s2, FUNC),
        system: s2,
    };
    set_link(
        &relation,
        a,
        b,
        sync_date.unwrap_or_else(now),
        allow_many2many.unwrap_or(false),
        FUNC,
    )
}

// ---------------------------------------------------------------------------------
// Searching
// ---------------------------------------------------------------------------------

fn search(sql: &str, types: &[pg_sys::Oid], args: &[DatumWithOid]) -> Vec<Link> {
    Spi::connect(|client| {
        let table = plans::query(client, sql, types, args);
        let mut out = Vec::with_capacity(table.len());
        for row in table {
            if let Some(link) = row.get::<Link>(1).or_raise("reading a link") {
                out.push(link);
            }
        }
        out
    })
}

const TEXT: pg_sys::Oid = pg_sys::TEXTOID;
const TEXT_ARRAY: pg_sys::Oid = pg_sys::TEXTARRAYOID;

// Local links of a table: the table's system sorts before or after '__external__',
// which decides the side its rows are on. All links, or those of the given keys.
const LOCAL_FIRST_ALL: &str = "SELECT l FROM sync.link l
     WHERE l.relation = $1 AND l.system1 = $2 AND l.system2 = '__external__' ORDER BY l.id";
const LOCAL_FIRST_IDS: &str = "SELECT l FROM sync.link l
     WHERE l.relation = $1 AND l.system1 = $2 AND l.system2 = '__external__'
       AND l.ref1 = ANY ($3) ORDER BY l.id";
const LOCAL_SECOND_ALL: &str = "SELECT l FROM sync.link l
     WHERE l.relation = $1 AND l.system2 = $2 AND l.system1 = '__external__' ORDER BY l.id";
const LOCAL_SECOND_IDS: &str = "SELECT l FROM sync.link l
     WHERE l.relation = $1 AND l.system2 = $2 AND l.system1 = '__external__'
       AND l.ref2 = ANY ($3) ORDER BY l.id";

fn search_local(
    relation: Option<&str>,
    tbl: Option<Regclass>,
    ids: Option<Vec<Option<String>>>,
) -> Vec<Link> {
    const FUNC: &str = "sync_search_links";
    let relation = refs::relation(relation, FUNC);
    let info = table_info(tbl, FUNC);
    let first = info.system.as_bytes() < EXTERNAL.as_bytes();
    match ids {
        None => search(
            if first {
                LOCAL_FIRST_ALL
            } else {
                LOCAL_SECOND_ALL
            },
            &[TEXT, TEXT],
            &[relation.as_str().into(), info.system.as_str().into()],
        ),
        Some(ids) => {
            let ids: Vec<String> = ids.into_iter().flatten().collect();
            search(
                if first {
                    LOCAL_FIRST_IDS
                } else {
                    LOCAL_SECOND_IDS
                },
                &[TEXT, TEXT, TEXT_ARRAY],
                &[
                    relation.as_str().into(),
                    info.system.as_str().into(),
                    ids.into(),
                ],
            )
        }
    }
}

// The public local form is two SQL functions (below) so that ids may be an array of
// any type (text, bigint, uuid, records) and NULL needs no cast: an `ids text[]`
// overload next to an `ids bigint[]` one makes `ids => NULL` ambiguous.
#[pg_schema]
mod sync {
    use super::*;

    /// Implementation of sync_search_links(relation, tbl[, ids]); ids NULL = all.
    #[pg_extern(stable, parallel_safe)]
    fn search_local_links(
        relation: Option<&str>,
        tbl: Option<Regclass>,
        ids: Option<Vec<Option<String>>>,
    ) -> SetOfIterator<'static, pgrx::composite_type!('static, "sync.link")> {
        SetOfIterator::new(search_local(relation, tbl, ids))
    }

    /// The checked filter of a refs search: systems sorted, refs as text arrays
    /// (NULL = no filter on that system).
    #[pg_extern(immutable, parallel_safe, requires = ["links"])]
    fn refs_filter(
        relation: Option<&str>,
        refs: Option<JsonB>,
    ) -> pgrx::composite_type!('static, "sync.refs_filter") {
        const FUNC: &str = "sync_search_links";
        let relation = refs::relation(relation, FUNC);
        let [(s1, v1), (s2, v2)] = refs::two_systems(&refs, FUNC);
        let f1 = refs::filter(v1, &s1, FUNC);
        let f2 = refs::filter(v2, &s2, FUNC);
        let mut row = built(PgHeapTuple::new_composite_type("sync.refs_filter"));
        for (name, value) in [("relation", relation), ("system1", s1), ("system2", s2)] {
            built(row.set_by_name(name, value));
        }
        built(row.set_by_name("refs1", f1));
        built(row.set_by_name("refs2", f2));
        row
    }
}

extension_sql!(
    r#"
CREATE FUNCTION sync_search_links(relation text, tbl regclass)
RETURNS SETOF sync.link LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT * FROM sync.search_local_links(relation, tbl, NULL) $$;
COMMENT ON FUNCTION sync_search_links(text, regclass) IS 'Every link of rows of table tbl in relation, by link id.';

CREATE FUNCTION sync_search_links(relation text, tbl regclass, ids anycompatiblearray)
RETURNS SETOF sync.link LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT * FROM sync.search_local_links(relation, tbl, ids::text[]) $$;
COMMENT ON FUNCTION sync_search_links(text, regclass, anycompatiblearray) IS 'Links of the rows of table tbl with the given primary keys (an array of any type, compared as text; NULL = every row), by link id.';
"#,
    name = "search_local_links",
    requires = [sync::search_local_links]
);

const REFS_NONE: &str = "SELECT l FROM sync.link l
     WHERE l.relation = $1 AND l.system1 = $2 AND l.system2 = $3 ORDER BY l.id";
const REFS_1: &str = "SELECT l FROM sync.link l
     WHERE l.relation = $1 AND l.system1 = $2 AND l.system2 = $3 AND l.ref1 = ANY ($4)
     ORDER BY l.id";
const REFS_2: &str = "SELECT l FROM sync.link l
     WHERE l.relation = $1 AND l.system1 = $2 AND l.system2 = $3 AND l.ref2 = ANY ($4)
     ORDER BY l.id";
const REFS_BOTH: &str = "SELECT l FROM sync.link l
     WHERE l.relation = $1 AND l.system1 = $2 AND l.system2 = $3
       AND l.ref1 = ANY ($4) AND l.ref2 = ANY ($5) ORDER BY l.id";

fn search_refs(relation: &str, refs: &Option<JsonB>, func: &str) -> Vec<Link> {
    let [(s1, v1), (s2, v2)] = refs::two_systems(refs, func);
    let f1 = refs::filter(v1, &s1, func);
    let f2 = refs::filter(v2, &s2, func);
    let mut args: Vec<DatumWithOid> = vec![relation.into(), s1.as_str().into(), s2.as_str().into()];
    let sql = match (f1, f2) {
        (None, None) => REFS_NONE,
        (Some(f1), None) => {
            args.push(f1.into());
            REFS_1
        }
        (None, Some(f2)) => {
            args.push(f2.into());
            REFS_2
        }
        (Some(f1), Some(f2)) => {
            args.push(f1.into());
            args.push(f2.into());
            REFS_BOTH
        }
    };
    let types = [TEXT, TEXT, TEXT, TEXT_ARRAY, TEXT_ARRAY];
    search(sql, &types[..args.len()], &args)
}

// sync_search_links(relation, refs) is an SQL function (below) that PostgreSQL inlines
// into the calling query: with refs known when the query is planned, refs_filter runs
// once at planning and the search is the very plan of a hand-written SELECT; with refs
// as a parameter, it runs once per call and the refs still drive index scans.
extension_sql!(
    r#"
CREATE FUNCTION sync_search_links(relation text, refs jsonb)
RETURNS SETOF sync.link LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    WITH p AS MATERIALIZED (SELECT sync.refs_filter(relation, refs) AS f)
    SELECT l.*
    FROM p CROSS JOIN LATERAL (
        SELECT * FROM sync.link l
        WHERE (p.f).refs1 IS NOT NULL
          AND l.relation = (p.f).relation AND l.system1 = (p.f).system1
          AND l.ref1 = ANY ((p.f).refs1) AND l.system2 = (p.f).system2
          AND ((p.f).refs2 IS NULL OR l.ref2 = ANY ((p.f).refs2))
        UNION ALL
        SELECT * FROM sync.link l
        WHERE (p.f).refs1 IS NULL AND (p.f).refs2 IS NOT NULL
          AND l.relation = (p.f).relation AND l.system2 = (p.f).system2
          AND l.ref2 = ANY ((p.f).refs2) AND l.system1 = (p.f).system1
        UNION ALL
        SELECT * FROM sync.link l
        WHERE (p.f).refs1 IS NULL AND (p.f).refs2 IS NULL
          AND l.relation = (p.f).relation AND l.system1 = (p.f).system1
          AND l.system2 = (p.f).system2
    ) l
    ORDER BY l.id
$$;
COMMENT ON FUNCTION sync_search_links(text, jsonb) IS 'Links between the two systems named in refs; each ref is a scalar, an array or null (no filter); by link id.';
"#,
    name = "search_refs_links",
    requires = [sync::refs_filter]
);

// ---------------------------------------------------------------------------------
// sync_get_link
// ---------------------------------------------------------------------------------

/// A composite value we build ourselves: failing is a bug, not bad input.
fn built<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| {
        raise(
            ERRCODE_INTERNAL_ERROR,
            format!("pg_sync: building a value failed: {e}"),
            "This is a bug in pg_sync; please report it.",
        )
    })
}

fn at_most_one(mut links: Vec<Link>, func: &str, what: String) -> Option<Link> {
    if links.len() > 1 {
        raise(
            ERRCODE_CARDINALITY_VIOLATION,
            format!("{func}: {what} has several links, expected at most one"),
            "Use sync_search_links to get all of them.",
        )
    }
    links.pop()
}

const EXTERNAL_REF: &str = "SELECT l FROM sync.link l
     WHERE l.relation = $1
       AND ((l.system1 = '__external__' AND l.ref1 = $2)
         OR (l.system2 = '__external__' AND l.ref2 = $2))
     ORDER BY l.id LIMIT 2";

/// The local link of an external ref, or NULL; an error if there are several.
#[pg_extern(name = "sync_get_link", stable, parallel_safe)]
fn sync_get_link_external(
    relation: Option<&str>,
    external: Option<&str>,
) -> Option<pgrx::composite_type!('static, "sync.link")> {
    const FUNC: &str = "sync_get_link";
    let relation = refs::relation(relation, FUNC);
    let external = refs::reference(external, FUNC, "external");
    let links = search(
        EXTERNAL_REF,
        &[TEXT, TEXT],
        &[relation.as_str().into(), external.as_str().into()],
    );
    at_most_one(
        links,
        FUNC,
        format!("external ref \"{external}\" in relation \"{relation}\""),
    )
}

/// The link matching refs, or NULL; an error if there are several.
#[pg_extern(name = "sync_get_link", stable, parallel_safe)]
fn sync_get_link_refs(
    relation: Option<&str>,
    refs: Option<JsonB>,
) -> Option<pgrx::composite_type!('static, "sync.link")> {
    const FUNC: &str = "sync_get_link";
    let relation = refs::relation(relation, FUNC);
    let links = search_refs(&relation, &refs, FUNC);
    let what = format!(
        "refs {} in relation \"{relation}\"",
        refs.as_ref().map(|r| r.0.to_string()).unwrap_or_default()
    );
    at_most_one(links, FUNC, what)
}

// ---------------------------------------------------------------------------------
// sync_update_links, sync_unlink
// ---------------------------------------------------------------------------------

/// Set sync_date of the given links; returns how many were updated.
#[pg_extern(volatile, parallel_unsafe)]
fn sync_update_links(
    link_ids: Option<Vec<Option<i64>>>,
    sync_date: default!(Option<TimestampWithTimeZone>, "now()"),
) -> i64 {
    let ids = refs::link_ids(link_ids, "sync_update_links");
    let date = sync_date.unwrap_or_else(now);
    Spi::connect_mut(|client| {
        plans::run(
            client,
            "UPDATE sync.link SET sync_date = $2 WHERE id = ANY ($1)",
            &[pg_sys::INT8ARRAYOID, pg_sys::TIMESTAMPTZOID],
            &[ids.into(), date.into()],
        )
        .len() as i64
    })
}

/// Delete the given links; returns how many were deleted.
#[pg_extern(volatile, parallel_unsafe)]
fn sync_unlink(link_ids: Option<Vec<Option<i64>>>) -> i64 {
    let ids = refs::link_ids(link_ids, "sync_unlink");
    Spi::connect_mut(|client| {
        plans::run(
            client,
            "DELETE FROM sync.link WHERE id = ANY ($1)",
            &[pg_sys::INT8ARRAYOID],
            &[ids.into()],
        )
        .len() as i64
    })
}
