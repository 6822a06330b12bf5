// Links between local rows and external records: sync_set_link, sync_search_links,
// sync_get_link, sync_update_links and sync_unlink (DESIGN.md section 3).
//
// Race safety: before looking at existing links, sync_set_link takes transaction
// advisory locks on both (relation, system, ref) keys, in a fixed order, so two
// sessions linking the same record serialise and the second sees the first's link.
use std::cell::RefCell;
use std::collections::HashSet;

use pgrx::datum::DatumWithOid;
use pgrx::heap_tuple::PgHeapTuple;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::{pg_sys, JsonB};
use serde_json::Value;

use crate::error::*;
use crate::tables::{parse_record_literal, table_info, Regclass, TableInfo};

/// System name of the external side of a local link.
pub const EXTERNAL: &str = "__external__";
/// First key of the advisory locks that serialise link writes ('SYLK').
const LINK_LOCK_CLASS: u32 = 0x5359_4C4B;

type Link = PgHeapTuple<'static, pgrx::AllocatedByRust>;

/// One side of a link.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Side {
    system: String,
    reference: String,
}

// ---------------------------------------------------------------------------------
// Prepared statements, kept for the life of the backend.
// ---------------------------------------------------------------------------------

const SQL_FIND: &str = "SELECT l FROM sync.link l
     WHERE l.relation = $1 AND l.system1 = $2 AND l.ref1 = $3
     UNION ALL
     SELECT l FROM sync.link l
     WHERE l.relation = $1 AND l.system2 = $4 AND l.ref2 = $5
       AND NOT (l.system1 = $2 AND l.ref1 = $3)
     LIMIT 3";
const SQL_INSERT: &str =
    "INSERT INTO sync.link AS l (relation, system1, ref1, system2, ref2, many2many, sync_date)
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING l";
const SQL_REFRESH: &str = "UPDATE sync.link AS l SET sync_date = $2 WHERE l.id = $1 RETURNING l";

thread_local! {
    static PLANS: RefCell<Vec<(&'static str, OwnedPreparedStatement)>> = const { RefCell::new(Vec::new()) };
    static CLEANUP_READY: RefCell<HashSet<(String, String)>> = RefCell::new(HashSet::new());
}

/// Run `sql` through a backend-wide cached plan (parsed and planned once).
fn run_cached<'conn>(
    client: &mut SpiClient<'conn>,
    sql: &'static str,
    types: &[pg_sys::Oid],
    args: &[DatumWithOid],
) -> pgrx::spi::SpiTupleTable<'conn> {
    let cached = PLANS.with(|p| p.borrow().iter().position(|(k, _)| std::ptr::eq(*k, sql)));
    let idx = match cached {
        Some(i) => i,
        None => {
            let oids: Vec<pgrx::PgOid> = types.iter().map(|o| pgrx::PgOid::from(*o)).collect();
            let plan = client
                .prepare_mut(sql, &oids)
                .or_raise("preparing a link query")
                .keep();
            PLANS.with(|p| {
                let mut p = p.borrow_mut();
                p.push((sql, plan));
                p.len() - 1
            })
        }
    };
    PLANS.with(|p| {
        let p = p.borrow();
        client
            .update(&p[idx].1, None, args)
            .or_raise("a link query")
    })
}

fn rows_to_links(table: pgrx::spi::SpiTupleTable<'_>) -> Vec<Link> {
    let mut out = Vec::with_capacity(table.len());
    for row in table {
        if let Some(link) = row.get::<Link>(1).or_raise("reading a link") {
            out.push(link);
        }
    }
    out
}

fn link_text(link: &Link, attr: &str) -> String {
    link.get_by_name::<String>(attr)
        .ok()
        .flatten()
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------
// Input validation
// ---------------------------------------------------------------------------------

fn require_relation(relation: Option<&str>, func: &str) -> String {
    match relation {
        Some(r) if !r.trim().is_empty() => r.to_string(),
        _ => raise(
            ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{func}: relation must be a non-empty text"),
            "Name the kind of link, e.g. 'partner'.",
        ),
    }
}

fn require_ref(value: Option<&str>, func: &str, what: &str) -> String {
    match value {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => raise(
            ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{func}: {what} must be a non-empty value"),
            "Pass the reference of the record to link.",
        ),
    }
}

/// A JSON scalar as a reference text; objects, booleans and null are refused.
fn scalar_ref(value: &Value, system: &str, func: &str) -> String {
    match value {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        other => raise(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{func}: the ref of system \"{system}\" must be a non-empty string or a number, got {other}"),
            "Write refs like {\"github\": \"12\", \"trello\": \"abc\"}.",
        ),
    }
}

/// The two (system, value) pairs of a refs object, sorted by system name.
fn two_systems<'a>(refs: &'a Option<JsonB>, func: &str) -> [(String, &'a Value); 2] {
    let Some(JsonB(value)) = refs else {
        raise(
            ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{func}: refs must not be NULL"),
            "Write refs like {\"github\": \"12\", \"trello\": \"abc\"}.",
        )
    };
    let Value::Object(map) = value else {
        raise(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{func}: refs must be a JSON object naming two systems, got {value}"),
            "Write refs like {\"github\": \"12\", \"trello\": \"abc\"}.",
        )
    };
    if map.len() != 2 {
        raise(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "{func}: refs must name exactly two systems, got {}",
                map.len()
            ),
            "A link joins two records; write refs like {\"github\": \"12\", \"trello\": \"abc\"}.",
        )
    }
    let mut pairs: Vec<(String, &Value)> = map.iter().map(|(k, v)| (k.clone(), v)).collect();
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (system, _) in &pairs {
        if system.is_empty() {
            raise(
                ERRCODE_INVALID_PARAMETER_VALUE,
                format!("{func}: system names must not be empty"),
                "Name each system, e.g. \"github\".",
            )
        }
    }
    let second = pairs.pop().expect("two entries");
    let first = pairs.pop().expect("two entries");
    [first, second]
}

/// A ref filter for searches: NULL = no filter, a scalar or an array of scalars.
fn ref_filter(value: &Value, system: &str, func: &str) -> Option<Vec<String>> {
    match value {
        Value::Null => None,
        Value::Array(items) => Some(items.iter().map(|v| scalar_ref(v, system, func)).collect()),
        v => Some(vec![scalar_ref(v, system, func)]),
    }
}

// ---------------------------------------------------------------------------------
// Locking
// ---------------------------------------------------------------------------------

fn lock_key(relation: &str, side: &Side) -> u32 {
    // FNV-1a: stable across backends and releases, which is all a lock key needs.
    let mut h: u32 = 0x811c_9dc5;
    for part in [
        relation.as_bytes(),
        &[0],
        side.system.as_bytes(),
        &[0],
        side.reference.as_bytes(),
    ] {
        for b in part {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// Take an exclusive transaction-level advisory lock (LINK_LOCK_CLASS, key); returns
/// true when another session held it and we had to wait.
fn advisory_xact_lock(key: u32) -> bool {
    // SAFETY: this fills a LOCKTAG exactly like SET_LOCKTAG_ADVISORY (the int4-pair
    // form of pg_advisory_xact_lock) and takes it in the current transaction.
    unsafe {
        let mut tag: pg_sys::LOCKTAG = std::mem::zeroed();
        tag.locktag_field1 = pg_sys::MyDatabaseId.to_u32();
        tag.locktag_field2 = LINK_LOCK_CLASS;
        tag.locktag_field3 = key;
        tag.locktag_field4 = 2;
        tag.locktag_type = pg_sys::LockTagType::LOCKTAG_ADVISORY as u8;
        tag.locktag_lockmethodid = pg_sys::USER_LOCKMETHOD as u8;
        let mode = pg_sys::ExclusiveLock as pg_sys::LOCKMODE;
        let got = pg_sys::LockAcquire(&tag, mode, false, true);
        if got != pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL {
            return false;
        }
        pg_sys::LockAcquire(&tag, mode, false, false);
        true
    }
}

fn lock_sides(relation: &str, a: &Side, b: &Side) {
    let mut keys = [lock_key(relation, a), lock_key(relation, b)];
    keys.sort_unstable();
    let mut waited = advisory_xact_lock(keys[0]);
    if keys[1] != keys[0] {
        waited |= advisory_xact_lock(keys[1]);
    }
    // SAFETY: reading the backend's isolation level global.
    let isolation = unsafe { pg_sys::XactIsoLevel };
    if waited && isolation >= pg_sys::XACT_REPEATABLE_READ as i32 {
        // Our snapshot predates the other session's link: we cannot see it, so we
        // cannot decide safely.
        raise(
            ERRCODE_T_R_SERIALIZATION_FAILURE,
            format!("could not set link in relation \"{relation}\": a concurrent transaction changed links of the same record"),
            "Retry the transaction.",
        )
    }
}

// ---------------------------------------------------------------------------------
// The core of sync_set_link
// ---------------------------------------------------------------------------------

fn describe(s: &Side) -> String {
    format!("{}:{}", s.system, s.reference)
}

fn set_link_sides(
    relation: &str,
    mut a: Side,
    mut b: Side,
    sync_date: TimestampWithTimeZone,
    allow_many2many: bool,
    func: &str,
) -> Link {
    if a.system == b.system {
        raise(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{func}: both records belong to system \"{}\"", a.system),
            "A link joins records of two different systems.",
        )
    }
    if a.system.as_bytes() > b.system.as_bytes() {
        std::mem::swap(&mut a, &mut b);
    }
    lock_sides(relation, &a, &b);
    Spi::connect_mut(|client| {
        let text = pg_sys::TEXTOID;
        let existing = rows_to_links(run_cached(
            client,
            SQL_FIND,
            &[text, text, text, text, text],
            &[
                relation.into(),
                a.system.as_str().into(),
                a.reference.as_str().into(),
                b.system.as_str().into(),
                b.reference.as_str().into(),
            ],
        ));
        for link in &existing {
            let same = link_text(link, "system1") == a.system
                && link_text(link, "ref1") == a.reference
                && link_text(link, "system2") == b.system
                && link_text(link, "ref2") == b.reference;
            if same {
                let id: i64 = link.get_by_name("id").ok().flatten().unwrap_or_default();
                return rows_to_links(run_cached(
                    client,
                    SQL_REFRESH,
                    &[pg_sys::INT8OID, pg_sys::TIMESTAMPTZOID],
                    &[id.into(), sync_date.into()],
                ))
                .pop()
                .expect("refreshed link");
            }
        }
        if !allow_many2many {
            if let Some(link) = existing.first() {
                let mine = if link_text(link, "system1") == a.system
                    && link_text(link, "ref1") == a.reference
                {
                    &a
                } else {
                    &b
                };
                let other = Side {
                    system: if mine == &a {
                        link_text(link, "system2")
                    } else {
                        link_text(link, "system1")
                    },
                    reference: if mine == &a {
                        link_text(link, "ref2")
                    } else {
                        link_text(link, "ref1")
                    },
                };
                raise(
                    ERRCODE_UNIQUE_VIOLATION,
                    format!(
                        "{func}: {} is already linked to {} in relation \"{relation}\"",
                        describe(mine),
                        describe(&other)
                    ),
                    "Unlink the old link first (sync_unlink), or pass allow_many2many => true if a record may have several links.",
                )
            }
        }
        rows_to_links(run_cached(
            client,
            SQL_INSERT,
            &[
                text,
                text,
                text,
                text,
                text,
                pg_sys::BOOLOID,
                pg_sys::TIMESTAMPTZOID,
            ],
            &[
                relation.into(),
                a.system.as_str().into(),
                a.reference.as_str().into(),
                b.system.as_str().into(),
                b.reference.as_str().into(),
                allow_many2many.into(),
                sync_date.into(),
            ],
        ))
        .pop()
        .expect("inserted link")
    })
}

// ---------------------------------------------------------------------------------
// Local rows
// ---------------------------------------------------------------------------------

/// Check that the row exists, lock it against a concurrent delete (whose cleanup
/// trigger then sees our link) and return its key in canonical text form.
fn local_row_ref(info: &TableInfo, id: &str, func: &str) -> String {
    let values: Vec<Option<String>> = if info.pk.len() == 1 {
        vec![Some(id.to_string())]
    } else {
        match parse_record_literal(id) {
            Some(v) if v.len() == info.pk.len() && v.iter().all(Option::is_some) => v,
            _ => raise(
                ERRCODE_INVALID_TEXT_REPRESENTATION,
                format!(
                    "{func}: \"{id}\" is not a key of {}: its primary key has {} columns",
                    info.system,
                    info.pk.len()
                ),
                "Pass a composite key in its record text form, e.g. '(1,abc)' (what ROW(a, b)::text gives).",
            ),
        }
    };
    let conds: Vec<String> = info
        .pk
        .iter()
        .enumerate()
        .map(|(i, (col, ty))| format!("t.{col} = ${}::{ty}", i + 1))
        .collect();
    let sql = format!(
        "SELECT {} FROM {} t WHERE {} FOR KEY SHARE",
        info.key_text_expr("t"),
        info.quoted,
        conds.join(" AND ")
    );
    let args: Vec<DatumWithOid> = values.iter().map(|v| v.as_deref().into()).collect();
    let found: Option<String> = Spi::connect_mut(|client| {
        let table = client.update(sql.as_str(), Some(1), &args);
        match table {
            Ok(t) => t.first().get_one::<String>().ok().flatten(),
            Err(_) => None,
        }
    });
    match found {
        Some(canonical) => canonical,
        None => raise(
            ERRCODE_FOREIGN_KEY_VIOLATION,
            format!("{func}: {} has no row with key {id}", info.system),
            "Link existing rows only: insert the row first, or check the id.",
        ),
    }
}

/// Make sure links of this table's rows go away with the rows (see README: links
/// of deleted rows). Done once per backend and (relation, table).
fn ensure_cleanup(relation: &str, info: &TableInfo, oid: Regclass) {
    let key = (relation.to_string(), info.system.clone());
    if CLEANUP_READY.with(|c| c.borrow().contains(&key)) {
        return;
    }
    Spi::connect_mut(|client| {
        client
            .update(
                "SELECT sync.install_link_cleanup($1, $2)",
                None,
                &[oid.into(), relation.into()],
            )
            .or_raise("installing the link cleanup trigger");
    });
    CLEANUP_READY.with(|c| c.borrow_mut().insert(key));
}

fn set_local_link(
    relation: Option<&str>,
    tbl: Option<Regclass>,
    id: Option<String>,
    external: Option<&str>,
    sync_date: Option<TimestampWithTimeZone>,
    allow_many2many: Option<bool>,
) -> Link {
    const FUNC: &str = "sync_set_link";
    let relation = require_relation(relation, FUNC);
    let info = table_info(tbl, FUNC);
    let id = require_ref(id.as_deref(), FUNC, "id");
    let external = require_ref(external, FUNC, "external");
    let local = Side {
        system: info.system.clone(),
        reference: local_row_ref(&info, &id, FUNC),
    };
    ensure_cleanup(&relation, &info, tbl.expect("checked by table_info"));
    let remote = Side {
        system: EXTERNAL.to_string(),
        reference: external,
    };
    set_link_sides(
        &relation,
        local,
        remote,
        sync_date.unwrap_or_else(now),
        allow_many2many.unwrap_or(false),
        FUNC,
    )
}

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
// SQL functions
// ---------------------------------------------------------------------------------

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
    let relation = require_relation(relation, FUNC);
    let [(s1, v1), (s2, v2)] = two_systems(&refs, FUNC);
    let a = Side {
        reference: scalar_ref(v1, &s1, FUNC),
        system: s1,
    };
    let b = Side {
        reference: scalar_ref(v2, &s2, FUNC),
        system: s2,
    };
    set_link_sides(
        &relation,
        a,
        b,
        sync_date.unwrap_or_else(now),
        allow_many2many.unwrap_or(false),
        FUNC,
    )
}

fn search(sql: &str, args: &[DatumWithOid]) -> Vec<Link> {
    Spi::connect(|client| rows_to_links(client.select(sql, None, args).or_raise("searching links")))
}

/// Local side is system1 when its name sorts before '__external__'.
fn local_is_first(system: &str) -> bool {
    system.as_bytes() < EXTERNAL.as_bytes()
}

/// Links of rows of a local table (ids NULL = every link of that table in the relation).
#[pg_extern(name = "sync_search_links", stable, parallel_safe)]
fn sync_search_links_local(
    relation: Option<&str>,
    tbl: Option<Regclass>,
    ids: default!(Option<Vec<Option<String>>>, NULL),
) -> SetOfIterator<'static, pgrx::composite_type!('static, "sync.link")> {
    const FUNC: &str = "sync_search_links";
    let relation = require_relation(relation, FUNC);
    let info = table_info(tbl, FUNC);
    let (mine, other) = if local_is_first(&info.system) {
        ("1", "2")
    } else {
        ("2", "1")
    };
    let base = format!(
        "SELECT l FROM sync.link l WHERE l.relation = $1 AND l.system{mine} = $2 AND l.system{other} = '{EXTERNAL}'"
    );
    let links = match ids {
        None => search(
            &format!("{base} ORDER BY l.id"),
            &[relation.as_str().into(), info.system.as_str().into()],
        ),
        Some(ids) => {
            let ids: Vec<String> = ids.into_iter().flatten().collect();
            search(
                &format!("{base} AND l.ref{mine} = ANY ($3) ORDER BY l.id"),
                &[
                    relation.as_str().into(),
                    info.system.as_str().into(),
                    ids.into(),
                ],
            )
        }
    };
    SetOfIterator::new(links)
}

/// Same, with bigint ids.
#[pg_extern(name = "sync_search_links", stable, parallel_safe)]
fn sync_search_links_local_bigint(
    relation: Option<&str>,
    tbl: Option<Regclass>,
    ids: Option<Vec<Option<i64>>>,
) -> SetOfIterator<'static, pgrx::composite_type!('static, "sync.link")> {
    let ids = ids.map(|v| v.into_iter().map(|i| i.map(|i| i.to_string())).collect());
    sync_search_links_local(relation, tbl, ids)
}

fn search_refs(relation: &str, refs: &Option<JsonB>, func: &str) -> Vec<Link> {
    let [(s1, v1), (s2, v2)] = two_systems(refs, func);
    let f1 = ref_filter(v1, &s1, func);
    let f2 = ref_filter(v2, &s2, func);
    let mut sql = String::from(
        "SELECT l FROM sync.link l WHERE l.relation = $1 AND l.system1 = $2 AND l.system2 = $3",
    );
    let mut args: Vec<DatumWithOid> = vec![relation.into(), s1.as_str().into(), s2.as_str().into()];
    if let Some(f1) = f1 {
        args.push(f1.into());
        sql.push_str(&format!(" AND l.ref1 = ANY (${})", args.len()));
    }
    if let Some(f2) = f2 {
        args.push(f2.into());
        sql.push_str(&format!(" AND l.ref2 = ANY (${})", args.len()));
    }
    sql.push_str(" ORDER BY l.id");
    search(&sql, &args)
}

/// Links between two systems; each ref may be a scalar, an array or null (no filter).
#[pg_extern(name = "sync_search_links", stable, parallel_safe)]
fn sync_search_links_refs(
    relation: Option<&str>,
    refs: Option<JsonB>,
) -> SetOfIterator<'static, pgrx::composite_type!('static, "sync.link")> {
    const FUNC: &str = "sync_search_links";
    let relation = require_relation(relation, FUNC);
    SetOfIterator::new(search_refs(&relation, &refs, FUNC))
}

fn at_most_one(mut links: Vec<Link>, func: &str, what: String) -> Option<Link> {
    if links.len() > 1 {
        raise(
            ERRCODE_CARDINALITY_VIOLATION,
            format!(
                "{func}: {what} has {} links, expected at most one",
                links.len()
            ),
            "Use sync_search_links to get all of them.",
        )
    }
    links.pop()
}

/// The link of an external ref (local links), or NULL; an error if there are several.
#[pg_extern(name = "sync_get_link", stable, parallel_safe)]
fn sync_get_link_external(
    relation: Option<&str>,
    external: Option<&str>,
) -> Option<pgrx::composite_type!('static, "sync.link")> {
    const FUNC: &str = "sync_get_link";
    let relation = require_relation(relation, FUNC);
    let external = require_ref(external, FUNC, "external");
    let links = search(
        &format!(
            "SELECT l FROM sync.link l WHERE l.relation = $1 AND l.system1 = '{EXTERNAL}' AND l.ref1 = $2
             UNION ALL
             SELECT l FROM sync.link l WHERE l.relation = $1 AND l.system2 = '{EXTERNAL}' AND l.ref2 = $2
             LIMIT 2"
        ),
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
    let relation = require_relation(relation, FUNC);
    let links = search_refs(&relation, &refs, FUNC);
    let what = format!(
        "refs {} in relation \"{relation}\"",
        refs.as_ref().map(|r| r.0.to_string()).unwrap_or_default()
    );
    at_most_one(links, FUNC, what)
}

fn require_ids(ids: Option<Vec<Option<i64>>>, func: &str) -> Vec<i64> {
    match ids {
        Some(v) => v.into_iter().flatten().collect(),
        None => raise(
            ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{func}: link_ids must not be NULL"),
            "Pass an array of link ids, e.g. ARRAY[1, 2].",
        ),
    }
}

/// Set sync_date of the given links; returns how many were updated.
#[pg_extern(volatile, parallel_unsafe)]
fn sync_update_links(
    link_ids: Option<Vec<Option<i64>>>,
    sync_date: default!(Option<TimestampWithTimeZone>, "now()"),
) -> i64 {
    let ids = require_ids(link_ids, "sync_update_links");
    let date = sync_date.unwrap_or_else(now);
    Spi::connect_mut(|client| {
        client
            .update(
                "UPDATE sync.link SET sync_date = $2 WHERE id = ANY ($1)",
                None,
                &[ids.into(), date.into()],
            )
            .or_raise("updating links")
            .len() as i64
    })
}

/// Delete the given links; returns how many were deleted.
#[pg_extern(volatile, parallel_unsafe)]
fn sync_unlink(link_ids: Option<Vec<Option<i64>>>) -> i64 {
    let ids = require_ids(link_ids, "sync_unlink");
    Spi::connect_mut(|client| {
        client
            .update(
                "DELETE FROM sync.link WHERE id = ANY ($1)",
                None,
                &[ids.into()],
            )
            .or_raise("deleting links")
            .len() as i64
    })
}
