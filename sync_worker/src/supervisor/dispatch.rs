// Claiming and dispatching: which executors want work, how big their batches are,
// claiming for them (sync.claim_jobs) and sharing the ready jobs out; requeueing.
use super::*;

impl Supervisor {
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
            let Some(q) = &self.queue else {
                return;
            };
            let total: usize = wanting.iter().map(|&i| self.desired(i)).sum();
            let worker = q.worker;
            match timeout(STATEMENT_TIMEOUT, claim(&q.client, total, worker)).await {
                Ok(Ok(claimed)) => {
                    let ids = claimed.jobs;
                    if ids.len() < total {
                        self.wanted = false;
                        if claimed.was_rung {
                            self.recheck_at = Some(Instant::now() + DOORBELL_RECHECK);
                        }
                    }
                    if ids.is_empty() {
                        return;
                    }
                    self.count_claims(&ids).await;
                    self.ready
                        .extend(ids.into_iter().map(|(id, _)| (id, false)));
                }
                Ok(Err(e)) => {
                    if pg::is_connection_error(&e) {
                        self.queue_lost(&pg::describe(&e));
                    } else {
                        tracing::error!("claiming jobs failed: {}", pg::describe(&e));
                        self.wanted = false;
                    }
                    return;
                }
                Err(_) => {
                    self.queue_lost("claiming jobs timed out");
                    return;
                }
            }
        }
    }

    /// Share the ready jobs between the job executors that want work (slots of the
    /// job pool), evenly, each at most its batch size; a job marked solo goes alone.
    fn distribute(&mut self, wanting: &[usize]) {
        let Some((worker, auth)) = self.queue.as_ref().map(|q| (q.worker, q.auth.clone())) else {
            self.ready.clear();
            return;
        };
        let sizes: Vec<usize> = wanting.iter().map(|&i| self.desired(i)).collect();
        for (&i, jobs) in wanting.iter().zip(share_out(&mut self.ready, &sizes)) {
            let batch = self.next_batch;
            self.next_batch += 1;
            if let Some(p) = self.pools.jobs.slots[i].proc.as_mut() {
                p.dispatch(
                    Inflight {
                        batch,
                        worker,
                        jobs,
                    },
                    &auth,
                );
            }
        }
    }

    /// Jobs of a batch that must run again: back to the front of the ready queue while
    /// they are ours, to the release list when stopping.
    pub(super) fn requeue(&mut self, worker: i32, ids: Vec<i64>, solo: bool) {
        if ids.is_empty() {
            return;
        }
        if self.stopping.is_some() {
            self.release.extend(ids.into_iter().map(|id| (worker, id)));
        } else if self.queue.as_ref().is_some_and(|q| q.worker == worker) {
            for id in ids.into_iter().rev() {
                self.ready.push_front((id, solo));
            }
        }
        // Otherwise they belong to a previous connection: the rescuers handle them.
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
