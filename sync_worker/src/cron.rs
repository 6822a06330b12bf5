// The scheduler: every second, enqueue due cron runs (and timed db-trigger events when
// that part of pg_sync is installed) from the database clock; see sync.enqueue_scheduled.
use crate::pg::Reconnect;
use std::time::Duration;
use tokio::sync::watch;

const EVERY: Duration = Duration::from_secs(1);

pub async fn run(url: String, mut stop: watch::Receiver<u32>) {
    let mut conn = Reconnect::new(&url, "sync_worker scheduler");
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(client) = conn.client().await else {
            continue;
        };
        match client
            .query_one("SELECT sync.enqueue_scheduled()", &[])
            .await
        {
            Ok(row) => {
                let n: i32 = row.get(0);
                if n > 0 {
                    tracing::debug!("enqueued {n} scheduled job(s)");
                }
            }
            Err(e) => conn.failed(&e),
        }
    }
}
