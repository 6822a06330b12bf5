// SPI plans kept for the life of the backend (parsed and planned once, keyed by their
// SQL text) and statements run under the latest snapshot instead of the transaction's.
//
// Keyed by text rather than by table oid: PostgreSQL's plan cache already replans a
// kept plan when a table it uses changes, and a renamed table simply gets a new text.
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiTupleTable};
use pgrx::PgOid;

use crate::error::*;

thread_local! {
    static PLANS: RefCell<HashMap<String, OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

fn ensure_plan(client: &SpiClient<'_>, sql: &str, types: &[pg_sys::Oid], writes: bool) {
    if PLANS.with(|p| p.borrow().contains_key(sql)) {
        return;
    }
    let oids: Vec<PgOid> = types.iter().map(|o| PgOid::from(*o)).collect();
    let plan = if writes {
        client.prepare_mut(sql, &oids)
    } else {
        client.prepare(sql, &oids)
    }
    .or_raise("preparing a query")
    .keep();
    PLANS.with(|p| p.borrow_mut().insert(sql.to_string(), plan));
}

/// Run the writing statement `sql` (or one that must see the latest commits) through
/// a kept plan. SPI takes a fresh snapshot for it, so in READ COMMITTED it sees what
/// others committed while we waited for a lock.
pub fn run<'conn>(
    client: &mut SpiClient<'conn>,
    sql: &str,
    types: &[pg_sys::Oid],
    args: &[DatumWithOid],
) -> SpiTupleTable<'conn> {
    ensure_plan(client, sql, types, true);
    PLANS.with(|p| {
        let plans = p.borrow();
        let plan = plans.get(sql).expect("prepared above");
        client.update(plan, None, args).or_raise("a query")
    })
}

/// Run the read-only statement `sql` through a kept plan, on the calling statement's
/// snapshot. It never assigns a transaction id, so it works in read-only
/// transactions, on standbys and in parallel workers.
pub fn query<'conn>(
    client: &SpiClient<'conn>,
    sql: &str,
    types: &[pg_sys::Oid],
    args: &[DatumWithOid],
) -> SpiTupleTable<'conn> {
    ensure_plan(client, sql, types, false);
    PLANS.with(|p| {
        let plans = p.borrow();
        let plan = plans.get(sql).expect("prepared above");
        client.select(plan, None, args).or_raise("a query")
    })
}

/// Run the writing statement `sql` under a snapshot taken now, not the transaction's
/// (the way PostgreSQL's foreign key actions find rows that concurrent transactions
/// committed); returns the number of rows processed. Must be called inside an SPI
/// connection.
pub fn execute_latest(sql: &str, args: &[DatumWithOid]) -> u64 {
    let csql = CString::new(sql).expect("our SQL has no NUL");
    let mut types: Vec<pg_sys::Oid> = args.iter().map(|a| a.oid()).collect();
    let mut values: Vec<pg_sys::Datum> = args
        .iter()
        .map(|a| {
            a.datum()
                .map(|d| d.sans_lifetime())
                .unwrap_or(pg_sys::Datum::from(0))
        })
        .collect();
    let nulls: Vec<std::ffi::c_char> = args
        .iter()
        .map(|a| if a.datum().is_some() { b' ' } else { b'n' } as std::ffi::c_char)
        .collect();
    // SAFETY: the caller holds an SPI connection (Spi::connect); the plan is prepared,
    // run and freed here; argument arrays outlive the call.
    unsafe {
        let plan = pg_sys::SPI_prepare(csql.as_ptr(), types.len() as i32, types.as_mut_ptr());
        if plan.is_null() {
            let code = pg_sys::SPI_result;
            raise(
                ERRCODE_INTERNAL_ERROR,
                format!("pg_sync: preparing a query failed ({code})"),
                "This is a bug in pg_sync; please report it.",
            )
        }
        let snapshot = pg_sys::GetLatestSnapshot();
        let rc = pg_sys::SPI_execute_snapshot(
            plan,
            values.as_mut_ptr(),
            nulls.as_ptr(),
            snapshot,
            std::ptr::null_mut(),
            false,
            true,
            0,
        );
        if rc < 0 {
            raise(
                ERRCODE_INTERNAL_ERROR,
                format!("pg_sync: a query failed ({rc})"),
                "This is a bug in pg_sync; please report it.",
            )
        }
        let processed = pg_sys::SPI_processed;
        pg_sys::SPI_freeplan(plan);
        processed
    }
}
