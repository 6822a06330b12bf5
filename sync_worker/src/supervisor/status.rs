// What the supervisor publishes: the jobs its executors run (sync.job_started, for
// counting tries of a dead worker) and the status snapshot the HTTP servers read.
use super::*;

impl Supervisor {
    /// Publish the jobs whose handlers run now (sync.worker_running) when they changed:
    /// if this worker dies, the rescue counts a try for these jobs and only these.
    pub(super) fn publish_running(&mut self) {
        use std::sync::atomic::Ordering::SeqCst;
        let Some(q) = &self.queue else {
            return;
        };
        match self.publishing.load(SeqCst) {
            1 => return,
            2 => self.published_running.1.clear(),
            _ => {}
        }
        let mut running: Vec<i64> = self
            .pools
            .jobs
            .slots
            .iter()
            .filter_map(|s| s.proc.as_ref()?.status.current().map(|c| c.job))
            .collect();
        running.sort_unstable();
        let now = (q.worker, running);
        if now == self.published_running && self.publishing.load(SeqCst) == 0 {
            return;
        }
        self.published_running = now.clone();
        self.publishing.store(1, SeqCst);
        let flag = self.publishing.clone();
        let client = q.client.clone();
        tokio::spawn(async move {
            let (worker, jobs) = now;
            let r = client
                .execute("SELECT sync.worker_running($1, $2)", &[&worker, &jobs])
                .await;
            if let Err(e) = &r {
                tracing::debug!("publishing running jobs failed: {}", pg::describe(e));
            }
            flag.store(if r.is_ok() { 0 } else { 2 }, SeqCst);
        });
    }

    pub(super) fn publish_status(&mut self) {
        let state = if self.stopping.is_some() {
            "stopping"
        } else if self.queue.is_some() {
            "running"
        } else if self.last_worker.is_some() {
            "reconnecting"
        } else {
            "starting"
        };
        self.state.loop_turned();
        self.systemd.alive();
        if let (Some(q), None) = (&self.queue, self.stopping) {
            self.systemd.ready(q.worker);
        }
        self.state.set_status(|st| {
            st.worker_id = self.queue.as_ref().map(|q| q.worker);
            st.state = state;
            st.executors = self.cfg.executors;
            st.executors_ready = self.pools.jobs.ready_count();
            st.executors_busy = self.pools.jobs.busy_count();
            st.webhook_executors = self.cfg.webhook_executors;
            st.webhook_executors_ready = self.pools.webhooks.ready_count();
            st.jobs_ready = self.ready.len();
            st.jobs_completed = self.completed;
            st.webhook_calls_waiting = self.hook_queue.len();
        });
    }
}
