// Links of deleted rows go with them: the statement-level trigger installed on linked
// tables (DELETE and TRUNCATE) and the helper of the DROP TABLE event trigger
// (sql/links.sql) delete the links of the rows or tables that went away.
//
// The deletes run under the latest snapshot, not the transaction's: a REPEATABLE READ
// transaction deleting a row must also remove a link that a concurrent transaction
// committed after our snapshot was taken (that transaction held the row's KEY SHARE
// lock until it committed, so our DELETE waited for it).
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::error::*;
use crate::plans;
use crate::tables::table_info_quiet;

/// The relations that have links, found by skipping through the relation-first index
/// (one probe per relation), so every delete below can use the link indexes.
const RELATIONS: &str = "WITH RECURSIVE rel(relation) AS (
        (SELECT relation FROM sync.link ORDER BY relation LIMIT 1)
        UNION ALL
        SELECT (SELECT l.relation FROM sync.link l WHERE l.relation > rel.relation
                ORDER BY l.relation LIMIT 1)
        FROM rel WHERE rel.relation IS NOT NULL)";

fn forget_rows_sql(key_expr: &str, side: u8) -> String {
    format!(
        "{RELATIONS},
         gone AS (SELECT DISTINCT {key_expr} AS k FROM pg_sync_old_rows o)
         DELETE FROM sync.link l USING rel, gone
         WHERE l.relation = rel.relation AND l.system{side} = $1 AND l.ref{side} = gone.k"
    )
}

fn forget_systems_sql() -> String {
    format!(
        "{RELATIONS}
         DELETE FROM sync.link l USING rel
         WHERE l.relation = rel.relation AND (l.system1 = ANY ($1) OR l.system2 = ANY ($1))"
    )
}

/// Delete every link of the given systems (tables that were dropped or truncated);
/// returns how many links were deleted.
fn forget_systems(systems: Vec<String>) -> i64 {
    Spi::connect_mut(|_client| {
        plans::execute_latest(&forget_systems_sql(), &[systems.into()]) as i64
    })
}

/// The V1 call-convention records PostgreSQL looks up for `LANGUAGE c` functions.
macro_rules! finfo_v1 {
    ($name:ident) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $name() -> &'static pg_sys::Pg_finfo_record {
            const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    };
}
finfo_v1!(pg_finfo_pg_sync_link_cleanup);
finfo_v1!(pg_finfo_pg_sync_links_on_drop);

/// SQL: `sync.links_on_drop() RETURNS event_trigger`, the sql_drop event trigger
/// pg_sync_links_drop: forgets the links of the rows of every dropped table.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn pg_sync_links_on_drop(
    _fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // pg_event_trigger_dropped_objects() itself refuses to run outside a sql_drop
    // event trigger, which guards against direct calls.
    let systems: Option<Vec<String>> = Spi::connect(|client| {
        client
            .select(
                "SELECT array_agg(DISTINCT o.schema_name || '.' || o.object_name)
                 FROM pg_event_trigger_dropped_objects() o
                 WHERE o.object_type = 'table'",
                None,
                &[],
            )
            .or_raise("listing dropped tables")
            .first()
            .get_one()
            .or_raise("listing dropped tables")
    });
    if let Some(systems) = systems {
        forget_systems(systems);
    }
    pg_sys::Datum::from(0)
}

/// SQL: `sync.link_cleanup() RETURNS trigger`, AFTER DELETE (with the old rows as
/// transition table `pg_sync_old_rows`) or AFTER TRUNCATE, FOR EACH STATEMENT.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn pg_sync_link_cleanup(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: PostgreSQL calls this with a valid fcinfo; from_fcinfo checks that it is
    // a trigger call.
    let trigger = match unsafe { PgTrigger::from_fcinfo(&*fcinfo) } {
        Ok(t) => t,
        Err(e) => raise(
            ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            format!("sync.link_cleanup() must be called as a trigger: {e}"),
            "It is installed by sync_set_link; do not call it directly.",
        ),
    };
    let Ok(relid) = trigger.relid() else {
        return pg_sys::Datum::from(0);
    };
    // A table that lost its primary key has no row keys to match: nothing to do.
    let Some(info) = table_info_quiet(relid) else {
        return pg_sys::Datum::from(0);
    };
    let event = trigger.trigger_data().tg_event;
    let truncate = event & pg_sys::TRIGGER_EVENT_OPMASK == pg_sys::TRIGGER_EVENT_TRUNCATE;
    let delete = event & pg_sys::TRIGGER_EVENT_OPMASK == pg_sys::TRIGGER_EVENT_DELETE;
    if truncate {
        forget_systems(vec![info.system]);
    } else if delete && trigger.old_transition_table_name().ok().flatten().is_some() {
        let key_expr = info.key_text_expr("o");
        Spi::connect_mut(|_client| {
            // SAFETY: we are inside the trigger call and connected to SPI; registering
            // makes the transition table `pg_sync_old_rows` visible to our queries.
            unsafe {
                pg_sys::SPI_register_trigger_data(trigger.trigger_data()
                    as *const pg_sys::TriggerData
                    as *mut pg_sys::TriggerData)
            };
            for side in [1, 2] {
                plans::execute_latest(
                    &forget_rows_sql(&key_expr, side),
                    &[info.system.as_str().into()],
                );
            }
        });
    }
    pg_sys::Datum::from(0)
}
