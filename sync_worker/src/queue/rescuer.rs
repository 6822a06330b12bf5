// The rescuer: every few seconds, record the tries that workers which died (their
// advisory lock is gone) were running as cut short, remove expired finished jobs, keep
// sync_executor's run_as memberships in step, and keep this worker's last_seen fresh.
use crate::pg::Reconnect;
use std::time::Duration;
use tokio::sync::watch;

const HEARTBEAT: Duration = Duration::from_secs(10);
/// Expired jobs removed per statement (each its own short transaction)...
const EXPIRED_BATCH: i32 = 1000;
/// ...and at most this many statements per round, so that a large backlog (retention
/// just shortened) is worked off over a few rounds without starving the rescue.
const EXPIRED_ROUNDS: usize = 50;

pub async fn run(
    url: String,
    every: Duration,
    worker: watch::Receiver<Option<i32>>,
    mut stop: watch::Receiver<u32>,
) {
    let mut conn = Reconnect::new(&url, "sync_worker rescuer");
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_beat = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(client) = conn.client().await else {
            continue;
        };
        let rescued = client.query_one("SELECT sync.rescue_jobs()", &[]).await;
        match rescued {
            Ok(row) => {
                let n: i32 = row.get(0);
                if n > 0 {
                    tracing::info!("{n} job(s) were cut short by stopped workers; they run again");
                }
            }
            Err(e) => {
                conn.failed(&e);
                continue;
            }
        }
        let mut removed = 0i64;
        for _ in 0..EXPIRED_ROUNDS {
            match client
                .query_one("SELECT sync.remove_expired_jobs($1)", &[&EXPIRED_BATCH])
                .await
            {
                Ok(row) => {
                    let n: i32 = row.get(0);
                    removed += i64::from(n);
                    if n == 0 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!("removing expired jobs failed: {}", crate::pg::describe(&e));
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::info!("removed {removed} expired finished job(s) and their log lines");
        }
        // A run_as role that became dangerous (granted superuser, say) loses its
        // executor membership within one interval; new run_as roles are granted.
        match client
            .query_one("SELECT sync.executor_sync_roles()", &[])
            .await
        {
            Ok(row) => {
                let n: i32 = row.get(0);
                if n > 0 {
                    tracing::info!("updated {n} run_as membership(s) of sync_executor");
                }
            }
            Err(e) => {
                conn.failed(&e);
                continue;
            }
        }
        let id = *worker.borrow();
        if let Some(id) = id.filter(|_| last_beat.elapsed() >= HEARTBEAT) {
            last_beat = tokio::time::Instant::now();
            if let Some(client) = conn.client().await {
                if let Err(e) = client
                    .execute(
                        "UPDATE sync.worker SET last_seen = now() WHERE id = $1",
                        &[&id],
                    )
                    .await
                {
                    conn.failed(&e);
                }
            }
        }
    }
}
