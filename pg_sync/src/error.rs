// Raising PostgreSQL errors with a real SQLSTATE, a message and a hint.
// Every user-facing failure of the extension goes through `raise`.
use pgrx::pg_sys::elog::PgLogLevel;
use pgrx::pg_sys::errcodes::PgSqlErrorCode;
use pgrx::pg_sys::panic::ErrorReport;

pub use PgSqlErrorCode::*;

/// Abort the current statement with `code`, `message` and a hint on what to do.
#[track_caller]
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>, hint: impl Into<String>) -> ! {
    let hint = hint.into();
    let mut report = ErrorReport::new(code, message.into(), "pg_sync");
    if !hint.is_empty() {
        report = report.set_hint(hint);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}

/// SPI failures are internal: they mean a query of ours is wrong, not the input.
pub trait OrRaise<T> {
    fn or_raise(self, what: &str) -> T;
}

impl<T> OrRaise<T> for Result<T, pgrx::spi::SpiError> {
    #[track_caller]
    fn or_raise(self, what: &str) -> T {
        match self {
            Ok(v) => v,
            Err(e) => raise(
                ERRCODE_INTERNAL_ERROR,
                format!("pg_sync: {what} failed: {e}"),
                "This is a bug in pg_sync; please report it with the statement that caused it.",
            ),
        }
    }
}
