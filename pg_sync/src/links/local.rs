// Local rows as one side of a link: checking that the row exists (and keeping it from
// being deleted until we commit), its key in canonical text form, and installing the
// triggers that delete links together with their rows (see cleanup.rs).
//
// Like a foreign key check, the row is looked up as the table's owner: the caller
// needs SELECT on the table, not UPDATE (which FOR KEY SHARE would otherwise demand),
// and row-level security does not hide rows from a link.
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::error::*;
use crate::plans;
use crate::tables::{parse_record_literal, TableInfo};

/// Names of the triggers installed on linked tables (removed with the extension).
pub const CLEANUP_TRIGGER: &str = "pg_sync_link_cleanup";
pub const TRUNCATE_TRIGGER: &str = "pg_sync_link_truncate";

/// Run `f` as the table's owner the way PostgreSQL runs foreign key checks: with the
/// owner's user id and a pinned search_path (names in the SQL are qualified, operators
/// too). An error inside `f` aborts the (sub)transaction, which restores both.
fn as_owner<R>(owner: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    as_role(owner, || crate::session::with_pinned_search_path(f))
}

fn as_role<R>(role: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    let mut user = pg_sys::InvalidOid;
    let mut context = 0;
    // SAFETY: plain reads and writes of the backend's current user id, as ri_triggers.c does.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            role,
            context
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                | pg_sys::SECURITY_NOFORCE_RLS as i32,
        );
    }
    let out = f();
    // SAFETY: restoring what we saved above.
    unsafe { pg_sys::SetUserIdAndSecContext(user, context) };
    out
}

/// Raise unless the current user may read the table (or at least its key columns).
pub fn check_can_read(info: &TableInfo, func: &str) {
    // SAFETY: ACL checks read catalogs through the syscache; the table exists (its
    // info was just loaded or validated by relcache invalidation).
    let allowed = unsafe {
        let user = pg_sys::GetUserId();
        pg_sys::pg_class_aclcheck(info.oid, user, pg_sys::ACL_SELECT as pg_sys::AclMode)
            == pg_sys::AclResult::ACLCHECK_OK
            || info.pk_attnums.iter().all(|att| {
                pg_sys::pg_attribute_aclcheck(
                    info.oid,
                    *att,
                    user,
                    pg_sys::ACL_SELECT as pg_sys::AclMode,
                ) == pg_sys::AclResult::ACLCHECK_OK
            })
    };
    if !allowed {
        raise(
            ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!(
                "{func}: permission denied for table {}: linking its rows needs SELECT on it",
                info.system
            ),
            format!("GRANT SELECT ON {} TO <role>;", info.quoted),
        )
    }
    if matches!(
        info.schema.as_str(),
        "pg_catalog" | "information_schema" | "sync"
    ) || info.schema.starts_with("pg_toast")
    {
        raise(
            ERRCODE_WRONG_OBJECT_TYPE,
            format!(
                "{func}: {} is a system or pg_sync table; its rows cannot be linked",
                info.system
            ),
            "Link rows of your application's tables.",
        )
    }
}

/// Check that the row with key `id` exists, lock it against a concurrent delete (so
/// the delete's cleanup sees our link) and return its key as links store it.
pub fn row_ref(info: &TableInfo, id: &str, func: &str) -> String {
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
        .zip(&info.pk_eq)
        .enumerate()
        .map(|(i, ((col, ty), eq))| format!("t.{col} {eq} ${}::{ty}", i + 1))
        .collect();
    let sql = format!(
        "SELECT {} FROM {} t WHERE {} FOR KEY SHARE OF t",
        info.key_text_expr("t"),
        info.quoted,
        conds.join(" AND ")
    );
    let types = vec![pg_sys::TEXTOID; values.len()];
    let args: Vec<DatumWithOid> = values.iter().map(|v| v.as_deref().into()).collect();
    let found: Option<String> = as_owner(info.owner, || {
        Spi::connect_mut(|client| {
            plans::run(client, &sql, &types, &args)
                .first()
                .get_one::<String>()
                .ok()
                .flatten()
        })
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

/// Make sure the table carries the triggers that delete links with their rows. Reads
/// the relcache (transactional, so a rolled-back install is seen as missing); created
/// as the table's owner the first time a row of the table is linked.
pub fn ensure_cleanup(info: &TableInfo) {
    if has_cleanup_triggers(info.oid) {
        return;
    }
    let statements = [
        format!(
            "CREATE OR REPLACE TRIGGER {CLEANUP_TRIGGER} AFTER DELETE ON {}
             REFERENCING OLD TABLE AS pg_sync_old_rows
             FOR EACH STATEMENT EXECUTE FUNCTION sync.link_cleanup()",
            info.quoted
        ),
        format!(
            "CREATE OR REPLACE TRIGGER {TRUNCATE_TRIGGER} AFTER TRUNCATE ON {}
             FOR EACH STATEMENT EXECUTE FUNCTION sync.link_cleanup()",
            info.quoted
        ),
    ];
    as_owner(info.owner, || {
        Spi::connect_mut(|client| {
            for sql in &statements {
                client
                    .update(sql.as_str(), None, &[])
                    .or_raise("installing the link cleanup triggers");
            }
        })
    });
}

fn has_cleanup_triggers(oid: pg_sys::Oid) -> bool {
    // SAFETY: the caller has just locked the table (FOR KEY SHARE), so the relcache
    // entry is valid while we read its trigger names; the reference is released below.
    unsafe {
        let rel = pg_sys::RelationIdGetRelation(oid);
        if rel.is_null() {
            return false;
        }
        let mut seen = 0;
        let trigdesc = (*rel).trigdesc;
        if !trigdesc.is_null() {
            for i in 0..(*trigdesc).numtriggers as usize {
                let t = &*(*trigdesc).triggers.add(i);
                let name = std::ffi::CStr::from_ptr(t.tgname).to_bytes();
                if name == CLEANUP_TRIGGER.as_bytes() || name == TRUNCATE_TRIGGER.as_bytes() {
                    seen += 1;
                }
            }
        }
        pg_sys::RelationClose(rel);
        seen == 2
    }
}
