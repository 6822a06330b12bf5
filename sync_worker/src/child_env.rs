// What a child process that runs or compiles code written by people (an executor, the
// code check) keeps of the worker's environment: what Python needs, never credentials.

/// Environment variables an executor keeps: what Python, its locale and TLS need, and
/// logging (the Python directories come as arguments). Everything else (DATABASE_URL,
/// PG*, SYNC_WORKER_* with credentials) stays with the supervisor.
pub fn inherited(name: &std::ffi::OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    matches!(
        name,
        "PATH"
            | "HOME"
            | "LANG"
            | "LANGUAGE"
            | "TZ"
            | "TMPDIR"
            | "RUST_LOG"
            | "RUST_BACKTRACE"
            | "SSL_CERT_FILE"
            | "SSL_CERT_DIR"
            | "REQUESTS_CA_BUNDLE"
            | "HTTP_PROXY"
            | "HTTPS_PROXY"
            | "NO_PROXY"
            | "http_proxy"
            | "https_proxy"
            | "no_proxy"
            | "SYNC_WORKER_FETCH_ALLOW"
            | "SYNC_WORKER_LOG_LEVEL"
            | "SYNC_WORKER_DATABASE_CA_FILE"
    ) || name.starts_with("LC_")
        || name.starts_with("PYTHON")
}
