// DB triggers: native capture of row events into per-statement
// jobs. The SQL side (installing real triggers from sync.db_trigger) is sql/triggers.sql.
//
// - `capture`: the row and statement trigger functions and their per-statement buffers.
// - `keys`: primary keys and old row images of captured rows, encoded as JSON.
// - `ddl`: expression validation for the installer and the DROP EXTENSION event trigger.
mod capture;
mod ddl;
mod keys;

use pgrx::pg_sys;

/// The V1 call-convention record PostgreSQL looks up as `pg_finfo_<symbol>` for every
/// `LANGUAGE c` function (what PG_FUNCTION_INFO_V1 declares in C).
macro_rules! finfo_v1 {
    ($name:ident) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $name() -> &'static ::pgrx::pg_sys::Pg_finfo_record {
            const V1: ::pgrx::pg_sys::Pg_finfo_record =
                ::pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    };
}
pub(crate) use finfo_v1;

/// The string arguments a trigger was created with (`EXECUTE FUNCTION f('a', 'b')`).
///
/// # Safety
/// `trigger` must be the `Trigger` of the current trigger call.
unsafe fn trigger_args(trigger: &pg_sys::Trigger) -> Vec<&std::ffi::CStr> {
    let n = usize::try_from(trigger.tgnargs).unwrap_or(0);
    (0..n)
        // SAFETY: tgargs holds tgnargs NUL-terminated strings owned by the relcache
        // entry, which outlives the trigger call.
        .map(|i| unsafe { std::ffi::CStr::from_ptr(*trigger.tgargs.add(i)) })
        .collect()
}
