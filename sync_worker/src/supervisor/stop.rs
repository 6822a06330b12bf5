// Stopping: signals (graceful, then at once), killing executors, giving claimed jobs
// back and deregistering the worker.
use super::*;

impl Supervisor {
    pub(super) fn on_signal(&mut self, n: u32) {
        if self.stopping.is_none() {
            self.stopping = Some(Instant::now() + self.cfg.grace_period);
            self.systemd.stopping();
            let worker = self.queue.as_ref().map(|q| q.worker);
            let ready: Vec<i64> = self.ready.drain(..).map(|(id, _)| id).collect();
            if let Some(w) = worker {
                self.release.extend(ready.into_iter().map(|id| (w, id)));
            }
            for call in std::mem::take(&mut self.hook_queue) {
                self.answer(WebhookReply::error(
                    call.id,
                    503,
                    "the worker is stopping; send the request again",
                ));
            }
            for slot in self.pools.slots_mut() {
                slot.respawn_at = None;
                if let Some(p) = slot.proc.as_mut() {
                    match p.life {
                        Life::Ready | Life::Leaving => p.send(ToExecutor::Stop),
                        Life::Starting => p.kill_to_stop(),
                        Life::Killed(_) => {}
                    }
                }
            }
        }
        if n >= 2 || self.cfg.grace_period.is_zero() {
            self.force_stop();
        }
    }

    pub(super) fn force_stop(&mut self) {
        self.forced = true;
        for p in self.pools.procs_mut() {
            p.kill_to_stop();
        }
    }

    /// All executors are gone: give back what was claimed and not run, sign off.
    pub(super) async fn finish(&mut self) {
        if self.queue.is_none() && (!self.release.is_empty() || self.last_worker.is_some()) {
            let _ = timeout(Duration::from_secs(5), self.connect()).await;
        }
        let Some(q) = &self.queue else {
            if !self.release.is_empty() {
                tracing::warn!(
                    "could not give back {} claimed job(s): other workers will run them once they notice this one stopped",
                    self.release.len()
                );
            }
            return;
        };
        for cleanup in std::mem::take(&mut self.cleanups) {
            cleanup.run(q.client.clone()).await;
        }
        let mut release = std::mem::take(&mut self.release);
        release.sort_unstable();
        let mut given = 0;
        for chunk in release.chunk_by(|a, b| a.0 == b.0) {
            let worker = chunk[0].0;
            let ids: Vec<i64> = chunk.iter().map(|&(_, id)| id).collect();
            match q
                .client
                .query_one("SELECT sync.release_jobs($1, $2)", &[&ids, &worker])
                .await
            {
                Ok(row) => given += row.get::<_, i32>(0),
                Err(e) => tracing::warn!("could not give back jobs: {}", pg::describe(&e)),
            }
        }
        if given > 0 {
            tracing::info!("gave back {given} job(s) that had not finished");
        }
        if let Some(id) = self.last_worker {
            let _ = registry::stopped(&q.client, id).await;
        }
        tracing::info!("stopped after completing {} job(s)", self.completed);
    }
}
