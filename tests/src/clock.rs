// The scheduling clock in tests: moving sync.clock() to a given instant, and reading
// timestamps back as UTC text so that expected values do not depend on the session.
use crate::exec;
use tokio_postgres::Client;

/// Move the scheduling clock so that it reads `at` now (and runs on from there). The
/// offset is in seconds: days would move by wall-clock days in sessions of a DST zone.
pub async fn set_clock_to(c: &Client, at: &str) {
    exec(
        c,
        &format!(
            "INSERT INTO sync.setting (key, value)
             VALUES ('clock_offset', make_interval(secs => extract(epoch FROM timestamptz '{at}' - now()))::text)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
        ),
    )
    .await;
}

/// The first column of every row of `sql`, as text, with the session in UTC.
pub async fn utc_texts(c: &Client, sql: &str) -> Vec<String> {
    exec(c, "SET TIME ZONE 'UTC'").await;
    c.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The first column of the first row of `sql`, as text, with the session in UTC.
pub async fn utc_text(c: &Client, sql: &str) -> String {
    utc_texts(c, sql).await.remove(0)
}
