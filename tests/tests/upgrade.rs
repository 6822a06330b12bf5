// Upgrades: install the previous release (its install script is kept in
// pg_sync/sql/released/), fill it, run ALTER EXTENSION pg_sync UPDATE, and compare the
// catalog with a fresh install of this version, line by line.
use pg_sync_tests::catalog::{difference, picture};
use pg_sync_tests::*;

const PREVIOUS: &str = "0.1.0";

/// A new database with pg_sync at `version` (no CREATE EXTENSION of the default).
async fn database_at(version: &str) -> (TestDb, Client) {
    let db = TestDb::new().await;
    let c = db.connect().await;
    exec(&c, "DROP EXTENSION pg_sync CASCADE").await;
    exec(&c, &format!("CREATE EXTENSION pg_sync VERSION '{version}'")).await;
    (db, c)
}

#[tokio::test]
async fn an_upgraded_database_has_the_catalog_of_a_fresh_install() {
    let fresh = TestDb::new().await;
    let f = fresh.connect().await;
    let current: String = scalar(
        &f,
        "SELECT extversion FROM pg_extension WHERE extname = 'pg_sync'",
    )
    .await;
    assert_ne!(
        current, PREVIOUS,
        "bump the version in Cargo.toml before changing the schema"
    );
    let (_db, c) = database_at(PREVIOUS).await;
    exec(&c, "ALTER EXTENSION pg_sync UPDATE").await;
    let version: String = scalar(
        &c,
        "SELECT extversion FROM pg_extension WHERE extname = 'pg_sync'",
    )
    .await;
    assert_eq!(version, current);
    let (only_upgraded, only_fresh) = difference(&picture(&c).await, &picture(&f).await);
    assert!(
        only_upgraded.is_empty() && only_fresh.is_empty(),
        "the upgrade script and the install script disagree\n--- only after the upgrade:\n{}\n--- only in a fresh install:\n{}",
        only_upgraded.join("\n"),
        only_fresh.join("\n")
    );
}
