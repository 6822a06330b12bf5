// The rescuer: every few seconds, put back the running jobs of workers that died (their
// advisory lock is gone), keep sync_executor's run_as memberships in step, and keep
// this worker's last_seen fresh.
use crate::pg::Reconnect;
use std::time::Duration;
use tokio::sync::watch;

const HEARTBEAT: Duration = Duration::from_secs(10);

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
                    tracing::info!("put back {n} job(s) of stopped workers");
                }
            }
            Err(e) => {
                conn.failed(&e);
                continue;
            }
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
