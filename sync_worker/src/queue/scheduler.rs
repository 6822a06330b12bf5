// The scheduler: every second, enqueue due cron runs (and timed db-trigger events when
// that part of pg_sync is installed) from the database clock; see sync.enqueue_scheduled.
// Once a minute it also measures the clock drift between this host and the database.
use crate::pg::Reconnect;
use crate::shared::Shared;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

const EVERY: Duration = Duration::from_secs(1);
const DRIFT_EVERY: Duration = Duration::from_secs(60);

pub async fn run(state: Shared, mut stop: watch::Receiver<u32>) {
    let mut conn = Reconnect::new(&state.cfg.database_url, "sync_worker scheduler");
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drift_at = Instant::now() + DRIFT_EVERY;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(client) = conn.client().await else {
            state.set_scheduler(|s| s.last_error = Some("the database is unreachable".into()));
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
                state.set_scheduler(|s| {
                    s.last_run_at = Some(chrono::Utc::now());
                    s.last_enqueued = n;
                    s.last_error = None;
                });
            }
            Err(e) => {
                state.set_scheduler(|s| s.last_error = Some(crate::pg::describe(&e)));
                conn.failed(&e);
                continue;
            }
        }
        if Instant::now() >= drift_at {
            drift_at = Instant::now() + DRIFT_EVERY;
            if let Some(client) = conn.client().await {
                match crate::startup::measure_drift(client).await {
                    Ok(ms) => {
                        crate::startup::report_drift(ms, state.cfg.max_time_drift);
                        state.set_scheduler(|s| {
                            s.drift_ms = Some(ms);
                            s.drift_measured_at = Some(chrono::Utc::now());
                        });
                    }
                    Err(e) => conn.failed(&e),
                }
            }
        }
    }
}
