// Stopping: signals (graceful, then at once), killing executors, recording what they
// were running and deregistering the worker.
use super::*;

impl Supervisor {
    pub(super) fn on_signal(&mut self, n: u32) {
        if self.stopping.is_none() {
            self.stopping = Some(Instant::now() + self.cfg.grace_period);
            self.systemd.stopping();
            // Jobs waiting to run alone are pending: other workers run them.
            self.ready.clear();
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

    /// All executors are gone: record what they were running when killed, sign off.
    /// Nothing needs giving back: a claim is a lock of its batch's transaction.
    pub(super) async fn finish(&mut self) {
        if self.queue.is_none() && (!self.cleanups.is_empty() || self.last_worker.is_some()) {
            let _ = timeout(Duration::from_secs(5), self.connect()).await;
        }
        let Some(q) = &self.queue else {
            return;
        };
        for cleanup in std::mem::take(&mut self.cleanups) {
            cleanup.run(q.client.clone()).await;
        }
        if let Some(id) = self.last_worker {
            let _ = registry::stopped(&q.client, id).await;
        }
        tracing::info!("stopped after completing {} job(s)", self.completed);
    }
}
