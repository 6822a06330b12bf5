// The supervisor's own database connection: connecting (worker registration, LISTEN)
// and what happens when it is lost (claimed jobs are left to the rescuers).
use super::*;

impl Supervisor {
    pub(super) async fn connect(&mut self) -> Result<(), WorkerError> {
        let attempt = async {
            let (client, notes) =
                pg::connect_listening(&self.cfg.database_url, "sync_worker").await?;
            let (auth, caller) =
                registry::register(&client, self.state.webhook_addr, self.state.admin_addr).await?;
            Ok::<_, RegisterError>(Queue {
                client: Arc::new(client),
                notes,
                worker: auth.worker,
                auth,
                caller,
            })
        };
        match attempt.await {
            Ok(q) => {
                tracing::info!("connected to the database as worker {}", q.worker);
                if let Some(old) = self.last_worker.replace(q.worker) {
                    // A backend of the old connection that the server still thinks alive
                    // would keep the old id's jobs from being rescued: end it.
                    let client = q.client.clone();
                    tokio::spawn(async move {
                        let _ = client
                            .execute(
                                "SELECT pg_terminate_backend(pid) FROM pg_locks
                                 WHERE locktype = 'advisory' AND objsubid = 2
                                   AND classid = sync.worker_lock_class()::oid AND objid = $1::int::oid",
                                &[&old],
                            )
                            .await;
                        let _ = registry::stopped(&client, old).await;
                    });
                }
                let _ = self.worker_tx.send(Some(q.worker));
                self.queue = Some(q);
                self.backoff.reset();
                self.wake();
                Ok(())
            }
            Err(RegisterError::NoExtension) => Err(RegisterError::NoExtension.into()),
            Err(e) => {
                let answered = match &e {
                    RegisterError::Db(e) => e.as_db_error().is_some(),
                    RegisterError::Connect(e) => e.server_answered(),
                    _ => false,
                };
                let delay = self.backoff.next(answered);
                let why = match &e {
                    RegisterError::Db(e) => pg::describe(e),
                    RegisterError::Connect(e) => e.to_string(),
                    other => other.to_string(),
                };
                tracing::warn!(
                    "cannot reach the database: {why}; retrying in {:.1} s",
                    delay.as_secs_f64()
                );
                self.reconnect_at = Instant::now() + delay;
                Ok(())
            }
        }
    }

    pub(super) fn queue_lost(&mut self, why: &str) {
        if self.queue.take().is_some() {
            tracing::warn!("lost the database connection ({why}); reconnecting");
        }
        let _ = self.worker_tx.send(None);
        // Still claimed under the old worker id: the rescuers put them back once the
        // old connection's lock is gone.
        self.ready.clear();
        self.reconnect_at = Instant::now();
    }
}
