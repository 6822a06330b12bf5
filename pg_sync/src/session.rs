// Who is calling, and running code with a pinned search_path: the two facts about the
// session that SECURITY DEFINER functions and owner-run lookups must get right.
use std::ffi::{CStr, CString};

use pgrx::pg_sys;
use pgrx::prelude::*;

/// The role that called: the one `SET ROLE` chose, or the login. Unlike `current_user`
/// it is not changed by SECURITY DEFINER functions, so functions that record who queued
/// a job (buttons, sync_add_job, timed schedules) can name the caller and not their owner.
pub fn caller_name() -> String {
    // SAFETY: GetOuterUserId reads backend state; GetUserNameFromId with noerr=true
    // returns NULL (not an error) for a dropped role, and a palloc'd string otherwise.
    unsafe {
        let name = pg_sys::GetUserNameFromId(pg_sys::GetOuterUserId(), true);
        if name.is_null() {
            return String::new();
        }
        CStr::from_ptr(name).to_string_lossy().into_owned()
    }
}

#[pg_schema]
mod sync {
    use super::*;

    /// The calling role (see caller_name): what pg_sync records as a job's user.
    #[pg_extern(stable, parallel_safe)]
    fn caller() -> String {
        caller_name()
    }
}

/// Run `f` with `search_path` set to `pg_catalog, pg_temp`, as a SECURITY DEFINER
/// function with that SET clause would: code that runs with another role's rights must
/// not resolve names (operators, types, functions) through the caller's search_path. An
/// error inside `f` aborts the (sub)transaction, which undoes the setting too.
pub fn with_pinned_search_path<R>(f: impl FnOnce() -> R) -> R {
    let (name, value) = (
        CString::new("search_path").expect("no NUL"),
        CString::new("pg_catalog, pg_temp").expect("no NUL"),
    );
    // SAFETY: the same calls fmgr_security_definer makes for a function's SET clause:
    // a new GUC nest level, a SAVE-action setting in it, and AtEOXact_GUC to pop it.
    let nest = unsafe {
        let nest = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            pg_sys::PGERROR as i32,
            false,
        );
        nest
    };
    let out = f();
    // SAFETY: pops the nest level pushed above (true: keep no changes made inside).
    unsafe { pg_sys::AtEOXact_GUC(true, nest) };
    out
}
