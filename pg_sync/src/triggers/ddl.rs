// Support for installing db triggers: checking that apply_on / before_update are one
// SQL expression, and the event trigger that clears our triggers off user tables before
// DROP EXTENSION pg_sync.
use std::ffi::{CStr, CString};

use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

use super::finfo_v1;
use crate::error::*;

// Raise unless `expr` is exactly one SQL expression. The installer splices the
// expression into CREATE TRIGGER ... WHEN (...) text run with elevated rights, so a
// value such as `true) EXECUTE FUNCTION f(); DROP TABLE x; --` must never get there.
// SQL: `sync.dbt_check_expression(expr text, what text, trigger_name text)`, STRICT.
finfo_v1!(pg_finfo_pg_sync_dbt_check_expression);
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn pg_sync_dbt_check_expression(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: the SQL declaration is STRICT with three text arguments.
    let (expr, what, name) = unsafe {
        (
            pgrx::fcinfo::pg_getarg::<&str>(fcinfo, 0).unwrap_or_default(),
            pgrx::fcinfo::pg_getarg::<&str>(fcinfo, 1).unwrap_or_default(),
            pgrx::fcinfo::pg_getarg::<&str>(fcinfo, 2).unwrap_or_default(),
        )
    };
    check_expression(expr, what, name);
    pg_sys::Datum::from(0)
}

fn check_expression(expr: &str, what: &str, trigger_name: &str) {
    let hint = "Write one boolean SQL expression, e.g. NEW.state = 'done'.";
    let fail = |why: &str| -> ! {
        raise(
            ERRCODE_SYNTAX_ERROR,
            format!("db trigger \"{trigger_name}\": {what} is not a single SQL expression: {why}"),
            hint,
        )
    };
    // Same layout as in the installer: the expression on its own lines, so a `--`
    // comment cannot swallow the closing parenthesis in one place and not the other.
    let Ok(sql) = CString::new(format!("SELECT (\n{expr}\n)")) else {
        fail("it contains a NUL character")
    };
    let parsed = PgTryBuilder::new(|| {
        // SAFETY: raw_parser reads a NUL-terminated string and returns a List in the
        // current memory context, or raises a syntax error.
        unsafe { pg_sys::raw_parser(sql.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT) }
    })
    .catch_others(|e| match e {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => fail(r.message()),
        CaughtError::RustPanic { ereport, .. } => fail(ereport.message()),
    })
    .execute();
    // SAFETY: raw_parser returned a valid List of RawStmt nodes; every pointer we
    // follow is checked for NULL and its node tag before use.
    let single = unsafe {
        let list = parsed;
        if list.is_null() || (*list).length != 1 {
            fail("it holds several statements")
        }
        let raw = (*(*list).elements).ptr_value as *const pg_sys::RawStmt;
        let stmt = (*raw).stmt;
        if stmt.is_null() || (*stmt).type_ != pg_sys::NodeTag::T_SelectStmt {
            fail("it is not an expression")
        }
        let sel = &*(stmt as *const pg_sys::SelectStmt);
        let plain = sel.distinctClause.is_null()
            && sel.intoClause.is_null()
            && sel.fromClause.is_null()
            && sel.whereClause.is_null()
            && sel.groupClause.is_null()
            && sel.havingClause.is_null()
            && sel.windowClause.is_null()
            && sel.valuesLists.is_null()
            && sel.sortClause.is_null()
            && sel.limitOffset.is_null()
            && sel.limitCount.is_null()
            && sel.lockingClause.is_null()
            && sel.withClause.is_null()
            && sel.op == pg_sys::SetOperation::SETOP_NONE
            && !sel.targetList.is_null()
            && (*sel.targetList).length == 1;
        plain && {
            let target = (*(*sel.targetList).elements).ptr_value as *const pg_sys::ResTarget;
            (*target).name.is_null() && (*target).indirection.is_null()
        }
    };
    if !single {
        fail("unbalanced parentheses or extra clauses")
    }
}

// ---------------------------------------------------------------------------------
// ddl_command_start on DROP EXTENSION: if pg_sync is among the extensions dropped,
// drop every trigger pg_sync put on user tables (db triggers and link cleanup), which
// would otherwise block the DROP (they call pg_sync functions). Reading the parse tree
// tells us which extensions are dropped, so dropping another extension touches
// nothing. If the DROP fails later, the transaction rollback restores the triggers.
// ---------------------------------------------------------------------------------

finfo_v1!(pg_finfo_pg_sync_dbt_on_drop_extension);
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn pg_sync_dbt_on_drop_extension(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: fcinfo comes from PostgreSQL; context, parse tree and list are checked
    // for NULL and node tags before being read.
    let drops_us = unsafe {
        let ctx = (*fcinfo).context;
        if ctx.is_null() || (*ctx).type_ != pg_sys::NodeTag::T_EventTriggerData {
            raise(
                ERRCODE_E_R_I_E_EVENT_TRIGGER_PROTOCOL_VIOLATED,
                "sync.dbt_on_drop_extension() must only be called as an event trigger",
                "",
            )
        }
        let data = &*(ctx as *const pg_sys::EventTriggerData);
        let tree = data.parsetree;
        let mut found = false;
        if !tree.is_null() && (*tree).type_ == pg_sys::NodeTag::T_DropStmt {
            let stmt = &*(tree as *const pg_sys::DropStmt);
            if stmt.removeType == pg_sys::ObjectType::OBJECT_EXTENSION && !stmt.objects.is_null() {
                let list = &*stmt.objects;
                for i in 0..usize::try_from(list.length).unwrap_or(0) {
                    let node = (*list.elements.add(i)).ptr_value as *const pg_sys::Node;
                    if !node.is_null() && (*node).type_ == pg_sys::NodeTag::T_String {
                        let s = &*(node as *const pg_sys::String);
                        if !s.sval.is_null() && CStr::from_ptr(s.sval).to_bytes() == b"pg_sync" {
                            found = true;
                        }
                    }
                }
            }
        }
        found
    };
    if drops_us {
        Spi::run("SELECT sync.dbt_drop_all_triggers()").or_raise("removing pg_sync triggers");
    }
    pg_sys::Datum::from(0)
}
