// Dispatching: which executors want work, how big their batches are, sending them
// claims of due jobs (each batch claims in its own transaction) or jobs to run alone.
use super::*;

impl Supervisor {
    /// The queue may hold due jobs: claim.
    pub(super) fn wake(&mut self) {
        self.wanted = true;
        self.wakes += 1;
    }

    /// The batch size of job executor `slot`.
    fn desired(&self, slot: usize) -> usize {
        let job_secs = self.pools.jobs.slots[slot]
            .proc
            .as_ref()
            .map_or(0.0, |p| p.job_secs);
        batch_size(self.cfg.batch_size, !self.cfg.throttle.is_zero(), job_secs)
    }

    pub(super) async fn fill(&mut self) {
        loop {
            let wanting = self.pools.jobs.wanting();
            if wanting.is_empty() {
                return;
            }
            if !self.ready.is_empty() {
                self.distribute(&wanting);
                continue;
            }
            if !self.wanted {
                return;
            }
            // One claim at a time: a claim answered in full means more jobs may be due,
            // and the next claim goes out then. Claims sent to every idle executor at
            // once for one new job each cost a search that found nothing, on the cores
            // the job needs. A claim queued behind an executor's running batch does not
            // hold the others up (the executor may be busy for a while).
            if self.pools.jobs.claiming() {
                return;
            }
            let Some(i) = self.pools.jobs.least_busy(&wanting) else {
                return;
            };
            let Some((worker, auth)) = self.queue.as_ref().map(|q| (q.worker, q.auth.clone()))
            else {
                return;
            };
            let n = self.desired(i);
            self.send_batch(i, worker, &auth, Vec::new(), Some(n));
            // The doorbell is cleared while the claim runs, not before it: off the path
            // from a job's commit to its start. A transaction that finds it still rung
            // (and so does not notify) may commit jobs the claim cannot see: when it was
            // rung, claims run again shortly (recheck_at), as they would for a
            // transaction committing just after a clear.
            let Some(q) = &self.queue else {
                return;
            };
            match timeout(STATEMENT_TIMEOUT, clear_doorbell(&q.client)).await {
                Ok(Ok(was_rung)) => {
                    if was_rung {
                        self.recheck_at = Some(Instant::now() + DOORBELL_RECHECK);
                    }
                }
                Ok(Err(e)) => {
                    if pg::is_connection_error(&e) {
                        self.queue_lost(&pg::describe(&e));
                    } else {
                        tracing::error!("clearing the doorbell failed: {}", pg::describe(&e));
                        self.wanted = false;
                    }
                }
                Err(_) => self.queue_lost("clearing the doorbell timed out"),
            }
            return;
        }
    }

    /// Send job executor `i` a new batch: `jobs`, or a claim of up to `due` due jobs.
    fn send_batch(
        &mut self,
        i: usize,
        worker: i32,
        auth: &WorkerAuth,
        jobs: Vec<i64>,
        due: Option<usize>,
    ) {
        let batch = self.next_batch;
        self.next_batch += 1;
        if let Some(p) = self.pools.jobs.slots[i].proc.as_mut() {
            p.dispatch(
                Inflight {
                    batch,
                    worker,
                    jobs,
                    due,
                    claimed: Vec::new(),
                    answered: false,
                    wakes: self.wakes,
                },
                auth,
            );
        }
    }

    /// A batch of executor `id` claimed `jobs` of the `asked` it could: fewer means the
    /// queue has no more due jobs for now.
    pub(super) fn on_claimed(
        &mut self,
        id: SlotId,
        batch: u64,
        jobs: Vec<(i64, i64)>,
        asked: usize,
    ) {
        let Some(p) = self.pools.slot_mut(id).proc.as_mut() else {
            return;
        };
        let Some(b) = p.inflight.iter_mut().find(|b| b.batch == batch) else {
            return;
        };
        b.jobs = jobs.iter().map(|&(j, _)| j).collect();
        if b.says_queue_empty(jobs.len(), asked, self.wakes) {
            self.wanted = false;
        }
        b.claimed = jobs;
        b.answered = true;
    }

    /// Share the jobs to run one by one out to the job executors that want work.
    fn distribute(&mut self, wanting: &[usize]) {
        let Some((worker, auth)) = self.queue.as_ref().map(|q| (q.worker, q.auth.clone())) else {
            self.ready.clear();
            return;
        };
        let sizes: Vec<usize> = wanting.iter().map(|&i| self.desired(i)).collect();
        for (&i, jobs) in wanting.iter().zip(share_out(&mut self.ready, &sizes)) {
            self.send_batch(i, worker, &auth, jobs, None);
        }
    }

    /// Jobs of a batch that must run again, one per transaction (its commit failed, or
    /// its executor died unexplained): to the front of the ready queue, unless stopping
    /// or no longer ours (they are pending: any batch may claim them).
    pub(super) fn requeue(&mut self, worker: i32, ids: Vec<i64>) {
        if ids.is_empty() || self.stopping.is_some() {
            return;
        }
        if self.queue.as_ref().is_some_and(|q| q.worker == worker) {
            for id in ids.into_iter().rev() {
                self.ready.push_front((id, true));
            }
        }
    }

    pub(super) async fn count_claims(&mut self, ids: &[(i64, i64)]) {
        if self.names_read_at.elapsed() > PROJECT_NAMES_TTL {
            self.project_names.clear();
            self.names_read_at = Instant::now();
        }
        let mut missing: Vec<i64> = ids
            .iter()
            .map(|&(_, p)| p)
            .filter(|p| !self.project_names.contains_key(p))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if let (false, Some(q)) = (missing.is_empty(), &self.queue) {
            let rows = q
                .client
                .query(
                    "SELECT id, name FROM sync.project WHERE id = ANY ($1)",
                    &[&missing],
                )
                .await;
            for row in rows.into_iter().flatten() {
                self.project_names.insert(row.get(0), row.get(1));
            }
        }
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for (_, p) in ids {
            let name = self.project_names.get(p).map_or("?", String::as_str);
            *counts.entry(name).or_default() += 1;
        }
        for (project, n) in counts {
            self.state
                .metrics
                .claimed
                .get_or_create(&crate::metrics::ProjectLabel {
                    project: project.to_string(),
                })
                .inc_by(n);
        }
    }
}

/// Batches an executor may have sent and not finished: two when its jobs are quick
/// (the next batch is ready the moment one commits), else one.
pub(super) fn depth(job_secs: f64) -> usize {
    if job_secs < PREFETCH_BELOW.as_secs_f64() {
        2
    } else {
        1
    }
}

/// Jobs per batch for an executor whose jobs took `job_secs` each (0: not known yet):
/// about BATCH_TARGET of work, at most `max`; one with a throttle (each job commits
/// before the executor's pause, see executor/job_batch.rs).
fn batch_size(max: usize, throttled: bool, job_secs: f64) -> usize {
    if throttled {
        return 1;
    }
    if job_secs > 0.0 {
        ((BATCH_TARGET.as_secs_f64() / job_secs) as usize).clamp(1, max)
    } else {
        // Speed unknown: a small batch first (bounded prefetch; a crash then costs
        // little), sized from the measured speed after it.
        max.min(COLD_BATCH)
    }
}

/// Share the front of `ready` out to executors with batch sizes `sizes`, in order:
/// each gets an even share of what is left, at least one job and at most its size; a
/// job marked solo (`true`) goes alone. Executors past the end of the queue get
/// nothing (the result may be shorter than `sizes`).
fn share_out(ready: &mut VecDeque<(i64, bool)>, sizes: &[usize]) -> Vec<Vec<i64>> {
    let mut out = Vec::with_capacity(sizes.len());
    for (k, &size) in sizes.iter().enumerate() {
        if ready.is_empty() {
            break;
        }
        let share = ready.len().div_ceil(sizes.len() - k).clamp(1, size.max(1));
        let mut jobs = Vec::with_capacity(share);
        while jobs.len() < share {
            match ready.front() {
                Some(&(id, solo)) => {
                    if solo && !jobs.is_empty() {
                        break;
                    }
                    jobs.push(id);
                    ready.pop_front();
                    if solo {
                        break;
                    }
                }
                None => break,
            }
        }
        out.push(jobs);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(ids: &[(i64, bool)]) -> VecDeque<(i64, bool)> {
        ids.iter().copied().collect()
    }

    #[test]
    fn ready_jobs_are_shared_evenly_within_batch_sizes() {
        let mut ready = queue(&(1..=10).map(|i| (i, false)).collect::<Vec<_>>());
        let got = share_out(&mut ready, &[100, 100, 100]);
        assert_eq!(got, vec![vec![1, 2, 3, 4], vec![5, 6, 7], vec![8, 9, 10]]);
        assert!(ready.is_empty());

        let mut ready = queue(&(1..=10).map(|i| (i, false)).collect::<Vec<_>>());
        let got = share_out(&mut ready, &[2, 3]);
        assert_eq!(got, vec![vec![1, 2], vec![3, 4, 5]]);
        assert_eq!(ready.len(), 5, "the rest waits for the next free executor");
    }

    #[test]
    fn a_solo_job_goes_alone_and_in_order() {
        let mut ready = queue(&[(1, false), (2, true), (3, false), (4, false)]);
        let got = share_out(&mut ready, &[10, 10, 10]);
        assert_eq!(got, vec![vec![1], vec![2], vec![3, 4]]);
    }

    #[test]
    fn few_jobs_leave_later_executors_without_a_batch() {
        let mut ready = queue(&[(7, false)]);
        assert_eq!(share_out(&mut ready, &[5, 5, 5]), vec![vec![7]]);
        assert!(share_out(&mut ready, &[5]).is_empty());
    }

    #[test]
    fn batch_sizes_follow_the_measured_speed() {
        assert_eq!(batch_size(500, false, 0.0), COLD_BATCH);
        assert_eq!(batch_size(10, false, 0.0), 10);
        assert_eq!(batch_size(500, false, 0.001), 50, "50 ms of 1 ms jobs");
        assert_eq!(
            batch_size(500, false, 0.00001),
            500,
            "capped at the maximum"
        );
        assert_eq!(batch_size(500, false, 10.0), 1, "slow jobs go one by one");
        assert_eq!(
            batch_size(500, true, 0.001),
            1,
            "a throttle sends one at a time"
        );
        assert_eq!(depth(0.0001), 2);
        assert_eq!(depth(1.0), 1);
    }
}
