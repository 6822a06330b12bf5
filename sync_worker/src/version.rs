// The worker's version and the git commit it was built from (set by build.rs), and the
// extension versions it works with.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_COMMIT: &str = env!("SYNC_WORKER_GIT_COMMIT");
/// `sync_worker --version`.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SYNC_WORKER_GIT_COMMIT"),
    ")"
);

/// Whether this worker can serve a database whose pg_sync extension is at `ext`: same
/// major and minor version (patch releases change no table the worker uses).
pub fn compatible(ext: &str) -> bool {
    fn major_minor(v: &str) -> Option<(u32, u32)> {
        let mut parts = v.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some((major, minor))
    }
    match (major_minor(ext), major_minor(VERSION)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn compatibility_is_by_major_and_minor() {
        assert!(super::compatible(super::VERSION));
        assert!(!super::compatible("99.0.0"));
        assert!(!super::compatible("garbage"));
    }
}
