// Executor slots: spawning and respawning executor processes, their events and exits
// (whom to blame for a death), project loading, cancel requests and the watchdog.
use super::*;

impl Supervisor {
    pub(super) fn spawn(&mut self, id: SlotId) {
        let i = self.pools.number(id);
        let slot = self.pools.slot_mut(id);
        slot.generation += 1;
        slot.respawn_at = None;
        // The executor does not inherit the PG* variables: its login carries what they
        // and the password file say.
        let login = self.login.resolved().unwrap_or_else(|e| {
            tracing::warn!("executor {i}: cannot resolve its database URL: {e}");
            self.login.clone()
        });
        match ExecutorProc::spawn(
            &self.cfg,
            &login,
            id,
            i,
            slot.generation,
            self.events_tx.clone(),
        ) {
            Ok(p) => slot.proc = Some(p),
            Err(e) => {
                slot.failures += 1;
                let delay = respawn_delay(slot.failures);
                tracing::error!(
                    "cannot start executor {i}: {e}; retrying in {:.1} s",
                    delay.as_secs_f64()
                );
                slot.respawn_at = Some(Instant::now() + delay);
            }
        }
    }

    pub(super) fn respawn_due(&mut self) {
        let due = self.pools.respawn_due(Instant::now());
        for id in due {
            self.spawn(id);
        }
    }

    pub(super) async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Message(id, generation, msg) => {
                let Some(p) = self
                    .pools
                    .slot_mut(id)
                    .proc
                    .as_mut()
                    .filter(|p| p.generation == generation)
                else {
                    return;
                };
                match msg {
                    FromExecutor::Ready { backend_pid } => {
                        if p.life == Life::Starting {
                            p.life = Life::Ready;
                        }
                        p.backend_pid = Some(backend_pid);
                        if self.stopping.is_some() {
                            p.send(ToExecutor::Stop);
                        }
                        self.pools.slot_mut(id).failures = 0;
                    }
                    FromExecutor::Claimed { batch, jobs, asked } => {
                        self.on_claimed(id, batch, jobs, asked);
                    }
                    FromExecutor::Report(r) => {
                        let Some(pos) = p.inflight.iter().position(|b| b.batch == r.batch) else {
                            return;
                        };
                        let Some(b) = p.inflight.remove(pos) else {
                            return;
                        };
                        p.recalled = false;
                        p.observe(r.busy_secs, r.ran);
                        self.completed += r.completed.len() as u64;
                        // Unstarted and lost jobs are pending again, anyone's to claim:
                        // only the others count as claimed (they will be claimed again).
                        if !r.unstarted.is_empty() || !r.lost.is_empty() {
                            self.wake();
                        }
                        let kept: Vec<(i64, i64)> = b
                            .claimed
                            .iter()
                            .filter(|(j, _)| !r.unstarted.contains(j) && !r.lost.contains(j))
                            .copied()
                            .collect();
                        self.count_claims(&kept).await;
                        self.requeue(b.worker, r.split);
                        for o in &r.outcomes {
                            self.state.metrics.job_finished(&o.project, o.state, o.secs);
                        }
                    }
                    FromExecutor::WebhookReplies { batch, replies } => {
                        if let Some(pos) = p.hook_batches.iter().position(|b| b.0 == batch) {
                            p.hook_batches.remove(pos);
                        }
                        for reply in replies {
                            if let Some(call) = self.hook_calls.remove(&reply.id) {
                                let _ = call.reply.send(reply);
                            }
                        }
                    }
                    FromExecutor::Bye => {
                        if !p.is_killed() {
                            p.life = Life::Leaving;
                        }
                    }
                    FromExecutor::NeedProject { project_id } => {
                        self.load_project(id, generation, project_id)
                    }
                }
            }
            Event::Project(id, generation, project_id, data) => {
                if let Some(p) = self
                    .pools
                    .slot(id)
                    .proc
                    .as_ref()
                    .filter(|p| p.generation == generation)
                {
                    p.send(ToExecutor::Project { project_id, data });
                }
            }
            Event::Closed(id, generation) => {
                if self
                    .pools
                    .slot(id)
                    .proc
                    .as_ref()
                    .is_some_and(|p| p.generation == generation)
                {
                    self.on_exit(id).await;
                }
            }
        }
    }

    /// An executor's pipe closed: reap it, decide which job (if any) to blame, put the
    /// others back, and start a new executor.
    pub(super) async fn on_exit(&mut self, id: SlotId) {
        let i = self.pools.number(id);
        let Some(mut p) = self.pools.slot_mut(id).proc.take() else {
            return;
        };
        let status = match timeout(Duration::from_secs(2), p.child.wait()).await {
            Ok(Ok(s)) => Some(s),
            _ => {
                p.kill();
                p.child.wait().await.ok()
            }
        };
        let clean = p.life == Life::Leaving && status.is_some_and(|s| s.success());
        let describe = status.map_or_else(|| "unknown status".to_string(), |s| s.to_string());
        if id.kind == Kind::Webhooks {
            self.on_hook_exit(id, p, clean, &describe);
            return;
        }
        // (job, reason, give up)
        let mut blame: Option<(i64, String, bool)> = None;
        if let Some((job, why)) = p.killed_for() {
            blame = Some((job, why, true));
        } else if !clean && !p.killed_to_stop() {
            tracing::error!("executor {i} (pid {}) died: {describe}", p.pid);
            if let Some(cur) = p.status.current() {
                blame = Some((
                    cur.job,
                    format!("the executor process running it died ({describe})"),
                    false,
                ));
            } else if let Some(b) = p.inflight.front().filter(|b| b.jobs.len() == 1) {
                blame = Some((
                    b.jobs[0],
                    format!("the executor process running it died ({describe})"),
                    false,
                ));
            }
        }
        let unexplained = !clean && !p.killed_to_stop() && blame.is_none();

        let client = self.queue.as_ref().map(|q| q.client.clone());
        let backend = p.backend_pid.filter(|_| !clean);
        let mut interrupt = None;
        for b in std::mem::take(&mut p.inflight) {
            let mut others = Vec::with_capacity(b.jobs.len());
            for job in b.jobs {
                match &blame {
                    Some((culprit, why, give_up)) if *culprit == job => {
                        interrupt = Some((job, b.worker, why.clone(), *give_up));
                    }
                    _ => others.push(job),
                }
            }
            // Jobs of a batch that died unexplained run alone next time, so that a
            // second death points at its job; the others are pending again.
            if unexplained {
                self.requeue(b.worker, others);
            } else {
                self.wake();
            }
        }
        let cleanup = Cleanup {
            backend,
            interrupt,
            webhook_failures: Vec::new(),
        };
        if self.stopping.is_some() {
            // finish() runs these before giving jobs back.
            self.cleanups.push(cleanup);
        } else if let Some(client) = client {
            // Before any new claim (the loop dispatches after this returns): the dead
            // executor's locks are gone already, and a claim that took its job before
            // the interruption is recorded would run it without counting that try.
            cleanup.run(client).await;
        }
        if self.stopping.is_none() {
            let killed = p.killed_for().is_some() || blame.is_some();
            self.pools.slot_mut(id).schedule_respawn(&p, killed);
        }
    }

    /// Read a project (secrets included) for executor `id`, which asked for it: on this
    /// connection, never the executor's. Its run_as role is granted to sync_executor
    /// first, so that the executor can switch to it.
    pub(super) fn load_project(&mut self, id: SlotId, generation: u64, project_id: i64) {
        let events = self.events_tx.clone();
        let Some(client) = self.queue.as_ref().map(|q| q.client.clone()) else {
            let _ = events.send(Event::Project(
                id,
                generation,
                project_id,
                Err("the worker is not connected to the database".into()),
            ));
            return;
        };
        tokio::spawn(async move {
            let data = async {
                client
                    .query_one("SELECT sync.executor_sync_roles()", &[])
                    .await?;
                let row = client
                    .query_opt("SELECT sync.project_runtime($1)", &[&project_id])
                    .await?;
                Ok::<_, tokio_postgres::Error>(row.and_then(|r| r.get::<_, Option<Value>>(0)))
            }
            .await;
            let data = match data {
                Ok(Some(v)) => Ok(v),
                Ok(None) => {
                    Err("the project does not exist (deleted after the job was queued?)".into())
                }
                Err(e) => Err(pg::describe(&e)),
            };
            let _ = events.send(Event::Project(id, generation, project_id, data));
        });
    }

    /// sync_cancel_job asked to stop a running job (payload `{"job": id, "by": role}`):
    /// tell the executor that has it; the watchdog kills it if it goes on.
    pub(super) fn on_cancel(&mut self, payload: &str) {
        let Ok(v) = serde_json::from_str::<Value>(payload) else {
            return;
        };
        let (Some(job), by) = (
            v.get("job").and_then(Value::as_i64),
            v.get("by")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string(),
        ) else {
            return;
        };
        for p in self.pools.procs_mut() {
            if p.inflight.iter().any(|b| b.jobs.contains(&job)) {
                tracing::info!("job {job}: cancelled by {by}; stopping it");
                p.send(ToExecutor::Cancel {
                    job,
                    by: by.clone(),
                });
                p.cancelling = Some((job, std::time::Instant::now()));
            } else if p.inflight.iter().any(|b| b.claim_unanswered()) {
                // A claim it has not answered yet may hold the job (it locked it before
                // the cancel was recorded): the executor skips or stops it if so.
                p.send(ToExecutor::Cancel {
                    job,
                    by: by.clone(),
                });
            }
        }
    }

    /// Hard time limits (kill the executor), cancelled jobs that go on, and taking
    /// queued batches back from an executor stuck on a long job.
    pub(super) fn watchdog(&mut self) {
        let now = monotonic_ns();
        for pool in self.pools.iter_mut() {
            let what = match pool.kind {
                Kind::Jobs => "job",
                Kind::Webhooks => "webhook call",
            };
            for slot in 0..pool.slots.len() {
                let i = pool.number(slot);
                if let Some(p) = pool.slots[slot].proc.as_mut() {
                    watch(p, i, what, now);
                }
            }
        }
    }
}

/// The watchdog's look at executor `i`, which runs `what` (jobs or webhook calls).
fn watch(p: &mut ExecutorProc, i: usize, what: &str, now: u64) {
    let Some(cur) = p.status.current() else {
        if let Some((job, _)) = p.cancelling {
            if !p.inflight.iter().any(|b| b.jobs.contains(&job)) {
                p.cancelling = None;
            }
        }
        return;
    };
    if let Some((job, since)) = p.cancelling {
        if cur.job == job && since.elapsed() > CANCEL_GRACE && !p.is_killed() {
            tracing::warn!("job {job} goes on after it was cancelled: killing executor {i}");
            p.kill_for(job, "the job was cancelled and did not stop".into());
            return;
        }
        if !p.inflight.iter().any(|b| b.jobs.contains(&job)) {
            p.cancelling = None;
        }
    }
    let running = Duration::from_nanos(now.saturating_sub(cur.started_ns));
    if now > cur.deadline_ns && !p.is_killed() {
        tracing::error!(
            "{what} {} ran past its hard time limit ({:.1} s): killing executor {i}",
            cur.job,
            running.as_secs_f64()
        );
        p.kill_for(
            cur.job,
            format!(
                "hard time limit exceeded: the job was stopped after {:.1} s",
                running.as_secs_f64()
            ),
        );
    } else if p.inflight.len() > 1 && !p.recalled && running > RECALL_AFTER {
        if let Some(b) = p.inflight.get(1) {
            p.send(ToExecutor::Recall { batch: b.batch });
            p.recalled = true;
        }
    }
}

impl Slot {
    /// After its executor exited: at once when it had been healthy or was killed on
    /// purpose (the job was to blame, not the executor); else after a delay that grows
    /// with each failure in a row, so that a broken setup does not spin.
    pub(super) fn schedule_respawn(&mut self, exited: &ExecutorProc, killed: bool) {
        let healthy = exited.said_ready() && exited.started.elapsed() > Duration::from_secs(5);
        let delay = if healthy || killed {
            Duration::ZERO
        } else {
            self.failures += 1;
            respawn_delay(self.failures)
        };
        self.respawn_at = Some(Instant::now() + delay);
    }
}

fn respawn_delay(failures: u32) -> Duration {
    Duration::from_millis(500u64 << failures.min(6)).min(Duration::from_secs(30))
}
