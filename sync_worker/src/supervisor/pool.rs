// The executor pools: one for job executors, one for webhook executors, each a row of
// slots (an executor process and its respawn state); which of them may take work now.
use super::dispatch::depth;
use super::executor_handle::ExecutorProc;
use tokio::time::Instant;

/// What the executors of a pool run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Jobs,
    Webhooks,
}

/// Where an executor sits: its pool, and its slot within that pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotId {
    pub kind: Kind,
    pub slot: usize,
}

/// What a pool reads of an executor handle to choose and count (a trait so that this
/// is tested without processes).
pub trait Handle {
    /// It may be sent work now.
    fn accepts_work(&self) -> bool;
    /// It said Ready at some point.
    fn said_ready(&self) -> bool;
    /// Batches sent to it (of jobs or of webhook calls) and not answered yet.
    fn batches_out(&self) -> usize;
    /// Average seconds per job (0: not measured yet).
    fn job_secs(&self) -> f64;
    /// It is running a claim of due jobs (the batch it started: one queued behind
    /// another does not count) and has not said yet what it claimed.
    fn claiming(&self) -> bool;
}

impl Handle for ExecutorProc {
    fn accepts_work(&self) -> bool {
        ExecutorProc::accepts_work(self)
    }
    fn said_ready(&self) -> bool {
        ExecutorProc::said_ready(self)
    }
    fn batches_out(&self) -> usize {
        self.inflight.len() + self.hook_batches.len()
    }
    fn job_secs(&self) -> f64 {
        self.job_secs
    }
    fn claiming(&self) -> bool {
        self.inflight.front().is_some_and(|b| b.claim_unanswered())
    }
}

pub struct Slot<P = ExecutorProc> {
    pub proc: Option<P>,
    pub generation: u64,
    pub respawn_at: Option<Instant>,
    pub failures: u32,
}

impl<P> Default for Slot<P> {
    fn default() -> Self {
        Slot {
            proc: None,
            generation: 0,
            respawn_at: None,
            failures: 0,
        }
    }
}

pub struct Pool<P = ExecutorProc> {
    pub kind: Kind,
    /// The number of its first executor: executors are numbered across both pools
    /// (log lines, `--index`, the executor's application_name).
    first: usize,
    pub slots: Vec<Slot<P>>,
}

impl<P: Handle> Pool<P> {
    pub fn new(kind: Kind, first: usize, size: usize) -> Self {
        Pool {
            kind,
            first,
            slots: (0..size).map(|_| Slot::default()).collect(),
        }
    }

    /// The executor's number (what it is called in log lines and on its command line).
    pub fn number(&self, slot: usize) -> usize {
        self.first + slot
    }

    pub fn ids(&self) -> impl Iterator<Item = SlotId> + '_ {
        (0..self.slots.len()).map(|slot| SlotId {
            kind: self.kind,
            slot,
        })
    }

    /// The slots whose executors may be sent a batch now, in order: a job executor
    /// while it has fewer batches than its depth (two when its jobs are quick); a
    /// webhook executor when it has none.
    pub fn wanting(&self) -> Vec<usize> {
        let room = |p: &P| match self.kind {
            Kind::Jobs => depth(p.job_secs()),
            Kind::Webhooks => 1,
        };
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.proc
                    .as_ref()
                    .is_some_and(|p| p.accepts_work() && p.batches_out() < room(p))
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Of the slots `wanting`, the one with the fewest batches in hand (the first such):
    /// an idle executor starts a claimed job sooner than one with a batch to finish.
    pub fn least_busy(&self, wanting: &[usize]) -> Option<usize> {
        wanting.iter().copied().min_by_key(|&i| {
            self.slots[i]
                .proc
                .as_ref()
                .map_or(usize::MAX, |p| p.batches_out())
        })
    }

    /// An executor of the pool is running a claim it has not answered yet.
    pub fn claiming(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.proc.as_ref().is_some_and(|p| p.claiming()))
    }

    /// Executors that said Ready (whatever happened since).
    pub fn ready_count(&self) -> usize {
        self.count(|p| p.said_ready())
    }

    /// Executors with a batch in hand.
    pub fn busy_count(&self) -> usize {
        self.count(|p| p.batches_out() > 0)
    }

    fn count(&self, f: impl Fn(&P) -> bool) -> usize {
        self.slots
            .iter()
            .filter(|s| s.proc.as_ref().is_some_and(&f))
            .count()
    }

    /// No executor process left.
    pub fn all_exited(&self) -> bool {
        self.slots.iter().all(|s| s.proc.is_none())
    }

    /// The earliest respawn scheduled.
    pub fn next_respawn(&self) -> Option<Instant> {
        self.slots.iter().filter_map(|s| s.respawn_at).min()
    }

    /// Empty slots whose respawn is due at `now`.
    pub fn respawn_due(&self, now: Instant) -> Vec<SlotId> {
        self.ids()
            .filter(|id| {
                let s = &self.slots[id.slot];
                s.proc.is_none() && s.respawn_at.is_some_and(|at| at <= now)
            })
            .collect()
    }
}

/// Both pools; webhook executors are numbered after the job executors.
pub struct Pools<P = ExecutorProc> {
    pub jobs: Pool<P>,
    pub webhooks: Pool<P>,
}

impl<P: Handle> Pools<P> {
    pub fn new(jobs: usize, webhooks: usize) -> Self {
        Pools {
            jobs: Pool::new(Kind::Jobs, 0, jobs),
            webhooks: Pool::new(Kind::Webhooks, jobs, webhooks),
        }
    }

    pub fn get(&self, kind: Kind) -> &Pool<P> {
        match kind {
            Kind::Jobs => &self.jobs,
            Kind::Webhooks => &self.webhooks,
        }
    }

    pub fn get_mut(&mut self, kind: Kind) -> &mut Pool<P> {
        match kind {
            Kind::Jobs => &mut self.jobs,
            Kind::Webhooks => &mut self.webhooks,
        }
    }

    pub fn slot(&self, id: SlotId) -> &Slot<P> {
        &self.get(id.kind).slots[id.slot]
    }

    pub fn slot_mut(&mut self, id: SlotId) -> &mut Slot<P> {
        &mut self.get_mut(id.kind).slots[id.slot]
    }

    /// The executor's number (log lines, `--index`).
    pub fn number(&self, id: SlotId) -> usize {
        self.get(id.kind).number(id.slot)
    }

    /// Job pool first, then webhook pool.
    pub fn iter(&self) -> impl Iterator<Item = &Pool<P>> {
        [&self.jobs, &self.webhooks].into_iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Pool<P>> {
        [&mut self.jobs, &mut self.webhooks].into_iter()
    }

    /// Every slot of both pools, job executors first.
    pub fn ids(&self) -> Vec<SlotId> {
        self.iter().flat_map(Pool::ids).collect()
    }

    pub fn slots_mut(&mut self) -> impl Iterator<Item = &mut Slot<P>> {
        self.iter_mut().flat_map(|pool| pool.slots.iter_mut())
    }

    /// Every executor handle, job executors first.
    pub fn procs_mut(&mut self) -> impl Iterator<Item = &mut P> {
        self.slots_mut().filter_map(|s| s.proc.as_mut())
    }

    /// No executor process left in either pool.
    pub fn all_exited(&self) -> bool {
        self.iter().all(Pool::all_exited)
    }

    /// The earliest respawn scheduled in either pool.
    pub fn next_respawn(&self) -> Option<Instant> {
        self.iter().filter_map(Pool::next_respawn).min()
    }

    /// Empty slots of either pool whose respawn is due at `now`.
    pub fn respawn_due(&self, now: Instant) -> Vec<SlotId> {
        self.iter().flat_map(|pool| pool.respawn_due(now)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An executor handle without a process.
    #[derive(Default)]
    struct Fake {
        accepts: bool,
        ready: bool,
        batches: usize,
        job_secs: f64,
        claiming: bool,
    }

    impl Handle for Fake {
        fn accepts_work(&self) -> bool {
            self.accepts
        }
        fn said_ready(&self) -> bool {
            self.ready
        }
        fn batches_out(&self) -> usize {
            self.batches
        }
        fn job_secs(&self) -> f64 {
            self.job_secs
        }
        fn claiming(&self) -> bool {
            self.claiming
        }
    }

    fn ready(batches: usize, job_secs: f64) -> Option<Fake> {
        Some(Fake {
            accepts: true,
            ready: true,
            batches,
            job_secs,
            claiming: false,
        })
    }

    fn fill(pool: &mut Pool<Fake>, procs: Vec<Option<Fake>>) {
        for (slot, p) in pool.slots.iter_mut().zip(procs) {
            slot.proc = p;
        }
    }

    #[test]
    fn webhook_executors_follow_the_job_executors_in_numbering() {
        let pools: Pools<Fake> = Pools::new(3, 2);
        let ids = pools.ids();
        assert_eq!(ids.len(), 5);
        let numbers: Vec<usize> = ids.iter().map(|&id| pools.number(id)).collect();
        assert_eq!(numbers, vec![0, 1, 2, 3, 4]);
        assert!(ids[..3].iter().all(|id| id.kind == Kind::Jobs));
        assert_eq!(
            ids[3],
            SlotId {
                kind: Kind::Webhooks,
                slot: 0
            }
        );
        assert_eq!(pools.get(Kind::Webhooks).kind, Kind::Webhooks);
    }

    #[test]
    fn job_executors_want_work_up_to_their_depth() {
        let mut pool = Pool::new(Kind::Jobs, 0, 6);
        fill(
            &mut pool,
            vec![
                None,
                ready(0, 0.0),
                ready(1, 0.0001), // quick jobs: a second batch is prefetched
                ready(1, 1.0),    // slow jobs: one at a time
                Some(Fake {
                    accepts: false, // starting, leaving or killed
                    ready: true,
                    ..Fake::default()
                }),
                ready(2, 0.0001),
            ],
        );
        assert_eq!(pool.wanting(), vec![1, 2]);
        assert_eq!(pool.least_busy(&[2, 1]), Some(1));
        assert_eq!(pool.least_busy(&[]), None);
        assert!(!pool.claiming());
        pool.slots[2]
            .proc
            .as_mut()
            .expect("slot 2 is filled")
            .claiming = true;
        assert!(pool.claiming());
    }

    #[test]
    fn webhook_executors_take_one_batch_at_a_time() {
        let mut pool = Pool::new(Kind::Webhooks, 4, 4);
        fill(
            &mut pool,
            vec![ready(0, 0.0001), ready(1, 0.0001), None, ready(0, 0.0)],
        );
        assert_eq!(pool.wanting(), vec![0, 3]);
        assert_eq!(pool.number(3), 7);
    }

    #[test]
    fn ready_and_busy_executors_are_counted() {
        let mut pool = Pool::new(Kind::Jobs, 0, 4);
        fill(
            &mut pool,
            vec![
                ready(1, 0.0),
                ready(0, 0.0),
                Some(Fake::default()), // started, not Ready yet
                None,
            ],
        );
        assert_eq!(pool.ready_count(), 2);
        assert_eq!(pool.busy_count(), 1);
        assert!(!pool.all_exited());
        fill(&mut pool, vec![None, None, None, None]);
        assert!(pool.all_exited());
        assert_eq!(pool.ready_count(), 0);
    }

    #[test]
    fn only_empty_slots_with_a_due_respawn_are_respawned() {
        let now = Instant::now();
        let mut pool = Pool::new(Kind::Jobs, 0, 4);
        pool.slots[0].respawn_at = Some(now - Duration::from_millis(1));
        pool.slots[1].respawn_at = Some(now + Duration::from_secs(1));
        pool.slots[2].respawn_at = Some(now);
        pool.slots[2].proc = ready(0, 0.0);
        let first = SlotId {
            kind: Kind::Jobs,
            slot: 0,
        };
        assert_eq!(pool.respawn_due(now), vec![first]);
        assert_eq!(pool.next_respawn(), Some(now - Duration::from_millis(1)));
        assert_eq!(Pool::<Fake>::new(Kind::Jobs, 0, 2).next_respawn(), None);

        let mut pools: Pools<Fake> = Pools::new(1, 2);
        pools.webhooks.slots[1].respawn_at = Some(now);
        pools.jobs.slots[0].respawn_at = Some(now + Duration::from_secs(1));
        assert_eq!(
            pools.respawn_due(now),
            vec![SlotId {
                kind: Kind::Webhooks,
                slot: 1
            }]
        );
        assert_eq!(pools.next_respawn(), Some(now));
        assert!(pools.all_exited());
        pools.webhooks.slots[0].proc = Some(Fake::default());
        assert!(!pools.all_exited());
    }
}
