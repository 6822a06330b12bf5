// The core of sync_set_link: the many2many rule and re-setting an identical link,
// kept true under concurrency.
//
// Race safety comes from the unique indexes of sync.link: link_side1 (identical
// links) and link_one1 / link_one2 (one link without many2many per record and side).
// We look for existing links first (for a clear error, and to refresh an identical
// link), then INSERT ... ON CONFLICT DO NOTHING. If another session is inserting a
// conflicting link, the insert waits for it; once it commits, nothing is inserted and
// we look again with a fresh snapshot, now seeing its link. Under REPEATABLE READ or
// SERIALIZABLE the conflicting row is invisible to our snapshot and PostgreSQL raises
// a serialization failure (40001) instead. No lock is held per linked key, so one
// transaction may link any number of records.
//
// The indexes are per side: a record whose system sits on side 1 of some links of a
// relation and on side 2 of others (linked both to a system that sorts before and to
// one that sorts after it) is checked by the lookup only, not under races. Local links
// (always against '__external__') and relations between one pair of systems are not
// concerned. A racing many2many link against a plain one ends as if the plain one came
// first, which the rule allows.
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::{Link, EXTERNAL};
use crate::error::*;
use crate::plans;

/// One side of a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Side {
    pub system: String,
    pub reference: String,
}

impl Side {
    pub fn external(reference: String) -> Side {
        Side {
            system: EXTERNAL.to_string(),
            reference,
        }
    }
}

// $1 relation, ($2, $3) side 1, ($4, $5) side 2. A record's links are those having it
// on either side, whatever the other system. One plain index probe per branch: the
// plan stays right even while statistics say the table is empty (a first big
// transaction of links), where an OR of the four would scan the whole relation.
const SAME: &str = "SELECT l FROM sync.link l
     WHERE l.relation = $1 AND l.system1 = $2 AND l.ref1 = $3 AND l.system2 = $4 AND l.ref2 = $5";

fn find_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let branch = |s: u8, r: u8, side: u8| {
            format!(
                "(SELECT l FROM sync.link l
                  WHERE l.relation = $1 AND l.system{side} = ${s} AND l.ref{side} = ${r} LIMIT 1)"
            )
        };
        // The identical link first, so that it wins over other links of the records.
        format!(
            "SELECT x.l, (x.l).system1 = $2 AND (x.l).ref1 = $3 AND (x.l).system2 = $4 AND (x.l).ref2 = $5
             FROM ({SAME} UNION ALL {} UNION ALL {} UNION ALL {} UNION ALL {}) x LIMIT 1",
            branch(2, 3, 1),
            branch(2, 3, 2),
            branch(4, 5, 1),
            branch(4, 5, 2)
        )
    })
}
fn find_same_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| format!("SELECT x.l, true FROM ({SAME}) x"))
}
const INSERT: &str =
    "INSERT INTO sync.link AS l (relation, system1, ref1, system2, ref2, many2many, sync_date)
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING l";
const REFRESH: &str = "UPDATE sync.link AS l SET sync_date = $2 WHERE l.id = $1 RETURNING l";

const TEXT5: [pg_sys::Oid; 5] = [pg_sys::TEXTOID; 5];

fn text_of(link: &Link, attr: &str) -> String {
    link.get_by_name::<String>(attr)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// `system:ref` of the side of `link` that is not `mine`.
fn other_side(link: &Link, mine: &Side) -> String {
    let (s1, r1) = (text_of(link, "system1"), text_of(link, "ref1"));
    let (s2, r2) = (text_of(link, "system2"), text_of(link, "ref2"));
    if s1 == mine.system && r1 == mine.reference {
        format!("{s2}:{r2}")
    } else {
        format!("{s1}:{r1}")
    }
}

fn touches(link: &Link, side: &Side) -> bool {
    (text_of(link, "system1") == side.system && text_of(link, "ref1") == side.reference)
        || (text_of(link, "system2") == side.system && text_of(link, "ref2") == side.reference)
}

/// Link `a` and `b` in `relation`, or refresh the identical link; see the module
/// comment for the rules.
pub fn set_link(
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
    let key = || -> [DatumWithOid; 5] {
        [
            relation.into(),
            a.system.as_str().into(),
            a.reference.as_str().into(),
            b.system.as_str().into(),
            b.reference.as_str().into(),
        ]
    };
    let find = if allow_many2many {
        find_same_sql()
    } else {
        find_sql()
    };
    // A conflict on insert means a concurrent link committed since we looked: look
    // again (READ COMMITTED takes a fresh snapshot per statement).
    for _ in 0..5 {
        let outcome = Spi::connect_mut(|client| {
            let mut found = None;
            for row in plans::run(client, find, &TEXT5, &key()) {
                let link: Option<Link> = row.get(1).or_raise("reading a link");
                let same: Option<bool> = row.get(2).or_raise("reading a link");
                found = link.map(|l| (l, same.unwrap_or(false)));
            }
            match found {
                Some((link, true)) => {
                    let id: i64 = link.get_by_name("id").ok().flatten().unwrap_or_default();
                    return Some(first_link(plans::run(
                        client,
                        REFRESH,
                        &[pg_sys::INT8OID, pg_sys::TIMESTAMPTZOID],
                        &[id.into(), sync_date.into()],
                    )));
                }
                Some((link, false)) => {
                    let mine = if touches(&link, &a) { &a } else { &b };
                    raise(
                        ERRCODE_UNIQUE_VIOLATION,
                        format!(
                            "{func}: {}:{} is already linked to {} in relation \"{relation}\"",
                            mine.system,
                            mine.reference,
                            other_side(&link, mine)
                        ),
                        "Unlink the old link first (sync_unlink), or pass allow_many2many => true if a record may have several links.",
                    )
                }
                None => {}
            }
            let mut args: Vec<DatumWithOid> = key().into();
            args.push(allow_many2many.into());
            args.push(sync_date.into());
            let inserted = plans::run(client, INSERT, &INSERT_TYPES, &args);
            if inserted.is_empty() {
                None
            } else {
                Some(first_link(inserted))
            }
        });
        if let Some(link) = outcome {
            return link;
        }
    }
    raise(
        ERRCODE_T_R_SERIALIZATION_FAILURE,
        format!("{func}: the links of {}:{} or {}:{} in relation \"{relation}\" keep changing concurrently", a.system, a.reference, b.system, b.reference),
        "Retry the transaction.",
    )
}

const INSERT_TYPES: [pg_sys::Oid; 7] = [
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::BOOLOID,
    pg_sys::TIMESTAMPTZOID,
];

fn first_link(table: pgrx::spi::SpiTupleTable<'_>) -> Link {
    for row in table {
        if let Some(link) = row.get::<Link>(1).or_raise("reading a link") {
            return link;
        }
    }
    raise(
        ERRCODE_INTERNAL_ERROR,
        "pg_sync: a link write returned no row",
        "This is a bug in pg_sync; please report it.",
    )
}
