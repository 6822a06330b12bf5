// Smoke test: the extension installs, its schema and roles exist.
use pg_sync_tests::*;

#[tokio::test]
async fn extension_creates_schema_and_roles() {
    let db = TestDb::new().await;
    let c = db.connect().await;
    let n: i64 = scalar(&c, "SELECT count(*) FROM pg_roles WHERE rolname IN ('sync_user','sync_developer','sync_admin')").await;
    assert_eq!(n, 3);
    let v: String = scalar(
        &c,
        "SELECT extversion FROM pg_extension WHERE extname = 'pg_sync'",
    )
    .await;
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
}
