// The supervisor: registers the worker, claims jobs (woken by NOTIFY, polling as a
// fallback), hands batches to its executor processes and webhook calls to its webhook
// executors, kills a job at its hard time limit, respawns dead executors, reconnects,
// and stops gracefully on SIGTERM/SIGINT.
//
// Everything runs on one thread (a current-thread runtime): executors are spawned from
// it, so PR_SET_PDEATHSIG (tied to the spawning thread) fires only when the process dies.
pub mod executor_handle;
pub mod shared;
pub mod signals;

use crate::config::Config;
use crate::executor::protocol::{
    FromExecutor, Login, ToExecutor, WebhookCall, WebhookReply, WorkerAuth,
};
use crate::executor::status_page::monotonic_ns;
use crate::http;
use crate::pg::{self, Backoff, Note};
use crate::queue::claim::claim;
use crate::queue::registry::{self, RegisterError};
use crate::queue::{rescuer, scheduler as cron};
use crate::startup::{DbFacts, Listeners};
use crate::supervisor::executor_handle::{Event, ExecutorProc, Inflight};
use crate::supervisor::shared::{Shared, State, SupervisorCommand};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{timeout, Instant};
use tokio_postgres::Client;

/// A batch is sized so that it takes about this long (from the jobs' average time).
const BATCH_TARGET: Duration = Duration::from_millis(50);
/// Jobs per batch for an executor whose job speed is not measured yet.
const COLD_BATCH: usize = 20;
/// Below this average job time an executor gets its next batch before it asks.
const PREFETCH_BELOW: Duration = Duration::from_millis(2);
/// A queued batch is taken back from an executor whose current job runs this long.
const RECALL_AFTER: Duration = Duration::from_millis(200);
const WATCHDOG: Duration = Duration::from_millis(100);
/// Any single supervisor statement taking longer means the connection is unusable.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// After a claim that cleared a rung doorbell and found the queue short, claim once more
/// this much later: a transaction that saw the bell rung (and so sent no NOTIFY) may have
/// been committing during the claim.
const DOORBELL_RECHECK: Duration = Duration::from_millis(20);
/// Most webhook calls in one webhook executor transaction.
const WEBHOOK_BATCH: usize = 64;
/// Project names (for metrics) are read again this often, to follow renames.
const PROJECT_NAMES_TTL: Duration = Duration::from_secs(60);
/// A cancelled job that is still running this long after its executor was told to stop
/// it (its code caught JobCancelled, or it is stuck outside Python) is killed.
const CANCEL_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Register(#[from] RegisterError),
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Http(#[from] http::HttpError),
}

/// A webhook call waiting for, or running in, a webhook executor.
struct PendingCall {
    reply: oneshot::Sender<WebhookReply>,
    token: String,
}

struct Queue {
    client: Arc<Client>,
    notes: mpsc::UnboundedReceiver<Note>,
    worker: i32,
    /// What the batch functions check; handed to executors with each batch.
    auth: WorkerAuth,
    /// The worker's login: the user of webhook jobs.
    caller: String,
}

#[derive(Default)]
struct Slot {
    proc: Option<ExecutorProc>,
    generation: u64,
    respawn_at: Option<Instant>,
    failures: u32,
}

pub struct Supervisor {
    cfg: Config,
    /// How executors log in (sync_executor: no rights of its own).
    login: Login,
    queue: Option<Queue>,
    /// Last worker id, to clean up after a reconnect.
    last_worker: Option<i32>,
    reconnect_at: Instant,
    backoff: Backoff,
    worker_tx: watch::Sender<Option<i32>>,
    slots: Vec<Slot>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    /// Claimed by the current worker id, not sent to an executor yet; `true` = run it
    /// alone in its transaction.
    ready: VecDeque<(i64, bool)>,
    /// The queue may hold due jobs (a notification, a poll tick, a full claim).
    wanted: bool,
    next_batch: u64,
    /// Set on the first stop signal: the end of the grace period.
    stopping: Option<Instant>,
    forced: bool,
    /// Claimed jobs to give back before exiting: (worker, job).
    release: Vec<(i32, i64)>,
    cleanups: Vec<Cleanup>,
    completed: u64,
    state: Shared,
    commands: mpsc::UnboundedReceiver<SupervisorCommand>,
    /// Webhook calls not yet sent to a webhook executor.
    hook_queue: VecDeque<WebhookCall>,
    /// Every webhook call not answered yet, by call id.
    hook_calls: HashMap<u64, PendingCall>,
    project_names: HashMap<i64, String>,
    names_read_at: Instant,
    /// When to claim once more after clearing a rung doorbell.
    recheck_at: Option<Instant>,
    /// What sync.job_started says this worker runs: (worker, jobs), as last published.
    published_running: (i32, Vec<i64>),
    /// 0 idle, 1 a publish is under way, 2 the last one failed (publish again).
    publishing: Arc<std::sync::atomic::AtomicU8>,
}

/// After an executor died: end its backend (its row locks go with it), then record what
/// happened to the job it was running.
struct Cleanup {
    backend: Option<i32>,
    /// (job, worker, reason, give up)
    interrupt: Option<(i64, i32, String, bool)>,
    /// Webhook calls whose transaction died with the executor: (token, worker, reason),
    /// recorded as failed job rows.
    webhook_failures: Vec<(String, i32, String)>,
}

impl Cleanup {
    async fn run(self, client: Arc<Client>) {
        if let Some(pid) = self.backend {
            let _ = client
                .execute("SELECT pg_terminate_backend($1)", &[&pid])
                .await;
        }
        if let Some((job, worker, why, give_up)) = self.interrupt {
            match client
                .query_one(
                    "SELECT sync.interrupt_job($1, $2, $3, $4)",
                    &[&job, &worker, &why, &give_up],
                )
                .await
            {
                Ok(row) => {
                    let state: Option<String> = row.get(0);
                    if let Some(state) = state {
                        tracing::warn!("job {job}: {why}; now {state}");
                    }
                }
                Err(e) => tracing::warn!(
                    "job {job}: could not record that {why}: {}",
                    pg::describe(&e)
                ),
            }
        }
        for (token, worker, why) in self.webhook_failures {
            if let Err(e) = client
                .query_one(
                    "SELECT sync.webhook_call_failed($1, $2, $3)",
                    &[&token, &worker, &why],
                )
                .await
            {
                tracing::warn!(
                    "could not record a failed webhook call ({why}): {}",
                    pg::describe(&e)
                );
            }
        }
    }
}

pub async fn run(cfg: Config, listeners: Listeners, facts: DbFacts) -> Result<(), WorkerError> {
    let signals = signals::listen().map_err(WorkerError::Signals)?;
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let addr = |l: &Option<std::net::TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
    let state = State::new(
        cfg.clone(),
        commands_tx,
        addr(&listeners.webhook),
        addr(&listeners.admin),
    );
    state.set_scheduler(|s| {
        s.drift_ms = Some(facts.drift_ms);
        s.drift_measured_at = Some(chrono::Utc::now());
    });
    http::serve(listeners, state.clone(), signals.clone())?;
    let (worker_tx, worker_rx) = watch::channel(None);
    tokio::spawn(rescuer::run(
        cfg.database_url.clone(),
        cfg.rescue_interval,
        worker_rx,
        signals.clone(),
    ));
    tokio::spawn(cron::run(state.clone(), signals.clone()));
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let slots = (0..cfg.executors + cfg.webhook_executors)
        .map(|_| Slot::default())
        .collect();
    let mut sup = Supervisor {
        cfg,
        login: facts.executor.clone(),
        queue: None,
        last_worker: None,
        reconnect_at: Instant::now(),
        backoff: Backoff::default(),
        worker_tx,
        slots,
        events_tx,
        events_rx,
        ready: VecDeque::new(),
        wanted: true,
        next_batch: 1,
        stopping: None,
        forced: false,
        release: Vec::new(),
        cleanups: Vec::new(),
        completed: 0,
        state,
        commands,
        hook_queue: VecDeque::new(),
        hook_calls: HashMap::new(),
        project_names: HashMap::new(),
        names_read_at: Instant::now(),
        recheck_at: None,
        published_running: (0, Vec::new()),
        publishing: Arc::default(),
    };
    sup.main_loop(signals).await
}

impl Supervisor {
    async fn main_loop(&mut self, mut signals: watch::Receiver<u32>) -> Result<(), WorkerError> {
        tracing::info!(
            "sync_worker {} starting {} executor(s) for jobs and {} for webhooks",
            crate::version::LONG,
            self.cfg.executors,
            self.cfg.webhook_executors
        );
        for i in 0..self.slots.len() {
            self.spawn(i);
        }
        let mut poll = tokio::time::interval(self.cfg.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watchdog = tokio::time::interval(WATCHDOG);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.stopping.is_some() {
                if self.slots.iter().all(|s| s.proc.is_none()) {
                    self.finish().await;
                    return Ok(());
                }
            } else {
                if self.queue.is_none() && Instant::now() >= self.reconnect_at {
                    self.connect().await?;
                }
                self.respawn_due();
                self.fill().await;
                self.fill_hooks();
            }
            self.publish_status();
            let reconnect_at = self.reconnect_at;
            let waiting_db = self.queue.is_none() && self.stopping.is_none();
            let deadline = self.stopping.filter(|_| !self.forced);
            let respawn_at = self.slots.iter().filter_map(|s| s.respawn_at).min();
            let recheck_at = self.recheck_at;
            tokio::select! {
                Some(ev) = self.events_rx.recv() => self.on_event(ev).await,
                Some(cmd) = self.commands.recv() => self.on_command(cmd),
                note = next_note(self.queue.as_mut()) => match note {
                    Some(first) => {
                        let mut notes = vec![first];
                        if let Some(q) = self.queue.as_mut() {
                            while let Ok(n) = q.notes.try_recv() {
                                notes.push(n);
                            }
                        }
                        for n in notes {
                            match n.channel.as_str() {
                                "sync_cancel" => self.on_cancel(&n.payload),
                                _ => self.wanted = true,
                            }
                        }
                    }
                    None => self.queue_lost("the connection closed"),
                },
                _ = poll.tick() => self.wanted = true,
                _ = sleep_until(recheck_at.unwrap_or_else(Instant::now)), if recheck_at.is_some() => {
                    self.recheck_at = None;
                    self.wanted = true;
                }
                _ = watchdog.tick() => {
                    self.watchdog();
                    self.publish_running();
                }
                changed = signals.changed() => {
                    if changed.is_ok() {
                        let n = *signals.borrow();
                        self.on_signal(n);
                    }
                }
                _ = sleep_until(reconnect_at), if waiting_db => {}
                _ = sleep_until(respawn_at.unwrap_or_else(Instant::now)), if respawn_at.is_some() && self.stopping.is_none() => {}
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    tracing::warn!("grace period over: stopping the jobs still running; they go back to the queue");
                    self.force_stop();
                }
            }
        }
    }

    // ----- database connection -------------------------------------------------------

    async fn connect(&mut self) -> Result<(), WorkerError> {
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
                self.wanted = true;
                Ok(())
            }
            Err(RegisterError::NoExtension) => Err(RegisterError::NoExtension.into()),
            Err(e) => {
                let delay = self.backoff.next_delay();
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

    fn queue_lost(&mut self, why: &str) {
        if self.queue.take().is_some() {
            tracing::warn!("lost the database connection ({why}); reconnecting");
        }
        let _ = self.worker_tx.send(None);
        // Still claimed under the old worker id: the rescuers put them back once the
        // old connection's lock is gone.
        self.ready.clear();
        self.reconnect_at = Instant::now();
    }

    // ----- claiming and dispatching ----------------------------------------------------

    fn is_hook(&self, i: usize) -> bool {
        i >= self.cfg.executors
    }

    fn wants_work(&self, i: usize) -> bool {
        if self.is_hook(i) {
            return false;
        }
        let Some(p) = &self.slots[i].proc else {
            return false;
        };
        if !p.ready || p.stopping || p.killed || p.killed_for.is_some() {
            return false;
        }
        let depth = if p.job_secs < PREFETCH_BELOW.as_secs_f64() {
            2
        } else {
            1
        };
        p.inflight.len() < depth
    }

    fn desired(&self, i: usize) -> usize {
        if !self.cfg.throttle.is_zero() {
            // Each job commits before the executor's pause (see executor/job_batch.rs).
            return 1;
        }
        let max = self.cfg.batch_size;
        match &self.slots[i].proc {
            Some(p) if p.job_secs > 0.0 => {
                ((BATCH_TARGET.as_secs_f64() / p.job_secs) as usize).clamp(1, max)
            }
            // Speed unknown: a small batch first (bounded prefetch; a crash then costs
            // little), sized from the measured speed after it.
            _ => max.min(COLD_BATCH),
        }
    }

    async fn fill(&mut self) {
        loop {
            let wanting: Vec<usize> = (0..self.slots.len())
                .filter(|&i| self.wants_work(i))
                .collect();
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

    /// Share the ready jobs between the executors that want work, evenly, each at most
    /// its batch size; a job marked solo goes alone.
    fn distribute(&mut self, wanting: &[usize]) {
        let Some((worker, auth)) = self.queue.as_ref().map(|q| (q.worker, q.auth.clone())) else {
            self.ready.clear();
            return;
        };
        for (k, &i) in wanting.iter().enumerate() {
            if self.ready.is_empty() {
                break;
            }
            let share = self
                .ready
                .len()
                .div_ceil(wanting.len() - k)
                .clamp(1, self.desired(i));
            let mut jobs = Vec::with_capacity(share);
            while jobs.len() < share {
                match self.ready.front() {
                    Some(&(id, solo)) => {
                        if solo && !jobs.is_empty() {
                            break;
                        }
                        jobs.push(id);
                        self.ready.pop_front();
                        if solo {
                            break;
                        }
                    }
                    None => break,
                }
            }
            let batch = self.next_batch;
            self.next_batch += 1;
            if let Some(p) = self.slots[i].proc.as_mut() {
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
    fn requeue(&mut self, worker: i32, ids: Vec<i64>, solo: bool) {
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

    // ----- executors -------------------------------------------------------------------

    fn spawn(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        slot.generation += 1;
        slot.respawn_at = None;
        let webhooks = i >= self.cfg.executors;
        match ExecutorProc::spawn(
            &self.cfg,
            &self.login,
            i,
            webhooks,
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

    fn respawn_due(&mut self) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            let due = self.slots[i].proc.is_none()
                && self.slots[i].respawn_at.is_some_and(|at| at <= now);
            if due {
                self.spawn(i);
            }
        }
    }

    async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Message(i, generation, msg) => {
                let Some(p) = self.slots[i]
                    .proc
                    .as_mut()
                    .filter(|p| p.generation == generation)
                else {
                    return;
                };
                match msg {
                    FromExecutor::Ready { backend_pid } => {
                        p.ready = true;
                        p.backend_pid = Some(backend_pid);
                        if self.stopping.is_some() {
                            p.send(ToExecutor::Stop);
                        }
                        self.slots[i].failures = 0;
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
                        self.requeue(b.worker, r.unstarted, false);
                        self.requeue(b.worker, r.lost, false);
                        self.requeue(b.worker, r.split, true);
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
                    FromExecutor::Bye => p.stopping = true,
                    FromExecutor::NeedProject { project_id } => {
                        self.load_project(i, generation, project_id)
                    }
                }
            }
            Event::Project(i, generation, project_id, data) => {
                if let Some(p) = self.slots[i]
                    .proc
                    .as_ref()
                    .filter(|p| p.generation == generation)
                {
                    p.send(ToExecutor::Project { project_id, data });
                }
            }
            Event::Closed(i, generation) => {
                if self.slots[i]
                    .proc
                    .as_ref()
                    .is_some_and(|p| p.generation == generation)
                {
                    self.on_exit(i).await;
                }
            }
        }
    }

    /// An executor's pipe closed: reap it, decide which job (if any) to blame, put the
    /// others back, and start a new executor.
    async fn on_exit(&mut self, i: usize) {
        let Some(mut p) = self.slots[i].proc.take() else {
            return;
        };
        let status = match timeout(Duration::from_secs(2), p.child.wait()).await {
            Ok(Ok(s)) => Some(s),
            _ => {
                p.kill();
                p.child.wait().await.ok()
            }
        };
        let clean = p.stopping && status.is_some_and(|s| s.success());
        let describe = status.map_or_else(|| "unknown status".to_string(), |s| s.to_string());
        if self.is_hook(i) {
            self.on_hook_exit(i, p, clean, &describe);
            return;
        }
        // (job, reason, give up)
        let mut blame: Option<(i64, String, bool)> = None;
        if let Some((job, why)) = p.killed_for.take() {
            blame = Some((job, why, true));
        } else if !clean && !p.killed {
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
        let unexplained = !clean && !p.killed && blame.is_none();

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
            // second death points at its job.
            self.requeue(b.worker, others, unexplained);
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
            tokio::spawn(cleanup.run(client));
        }
        if self.stopping.is_none() {
            let slot = &mut self.slots[i];
            let healthy = p.ready && p.started.elapsed() > Duration::from_secs(5);
            let delay = if healthy || p.killed_for.is_some() || blame.is_some() {
                Duration::ZERO
            } else {
                slot.failures += 1;
                respawn_delay(slot.failures)
            };
            slot.respawn_at = Some(Instant::now() + delay);
        }
    }

    /// Read a project (secrets included) for executor `i`, which asked for it: on this
    /// connection, never the executor's. Its run_as role is granted to sync_executor
    /// first, so that the executor can switch to it.
    fn load_project(&mut self, i: usize, generation: u64, project_id: i64) {
        let events = self.events_tx.clone();
        let Some(client) = self.queue.as_ref().map(|q| q.client.clone()) else {
            let _ = events.send(Event::Project(
                i,
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
            let _ = events.send(Event::Project(i, generation, project_id, data));
        });
    }

    /// sync_cancel_job asked to stop a running job (payload `{"job": id, "by": role}`):
    /// tell the executor that has it; the watchdog kills it if it goes on.
    fn on_cancel(&mut self, payload: &str) {
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
        for slot in &mut self.slots {
            let Some(p) = slot.proc.as_mut() else {
                continue;
            };
            if p.inflight.iter().any(|b| b.jobs.contains(&job)) {
                tracing::info!("job {job}: cancelled by {by}; stopping it");
                p.send(ToExecutor::Cancel {
                    job,
                    by: by.clone(),
                });
                p.cancelling = Some((job, std::time::Instant::now()));
            }
        }
    }

    /// Hard time limits (kill the executor), cancelled jobs that go on, and taking
    /// queued batches back from an executor stuck on a long job.
    /// Publish the jobs whose handlers run now (sync.worker_running) when they changed:
    /// if this worker dies, the rescue counts a try for these jobs and only these.
    fn publish_running(&mut self) {
        use std::sync::atomic::Ordering::SeqCst;
        let Some(q) = &self.queue else {
            return;
        };
        match self.publishing.load(SeqCst) {
            1 => return,
            2 => self.published_running.1.clear(),
            _ => {}
        }
        let mut running: Vec<i64> = self.slots[..self.cfg.executors]
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

    fn watchdog(&mut self) {
        let now = monotonic_ns();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(p) = slot.proc.as_mut() else {
                continue;
            };
            let Some(cur) = p.status.current() else {
                if let Some((job, _)) = p.cancelling {
                    if !p.inflight.iter().any(|b| b.jobs.contains(&job)) {
                        p.cancelling = None;
                    }
                }
                continue;
            };
            if let Some((job, since)) = p.cancelling {
                if cur.job == job
                    && since.elapsed() > CANCEL_GRACE
                    && p.killed_for.is_none()
                    && !p.killed
                {
                    tracing::warn!(
                        "job {job} goes on after it was cancelled: killing executor {i}"
                    );
                    p.killed_for = Some((job, "the job was cancelled and did not stop".into()));
                    p.kill();
                    continue;
                }
                if !p.inflight.iter().any(|b| b.jobs.contains(&job)) {
                    p.cancelling = None;
                }
            }
            let running = Duration::from_nanos(now.saturating_sub(cur.started_ns));
            if now > cur.deadline_ns && p.killed_for.is_none() && !p.killed {
                tracing::error!(
                    "{} {} ran past its hard time limit ({:.1} s): killing executor {i}",
                    if i >= self.cfg.executors {
                        "webhook call"
                    } else {
                        "job"
                    },
                    cur.job,
                    running.as_secs_f64()
                );
                p.killed_for = Some((
                    cur.job,
                    format!(
                        "hard time limit exceeded: the job was stopped after {:.1} s",
                        running.as_secs_f64()
                    ),
                ));
                p.kill();
            } else if p.inflight.len() > 1 && !p.recalled && running > RECALL_AFTER {
                if let Some(b) = p.inflight.get(1) {
                    p.send(ToExecutor::Recall { batch: b.batch });
                    p.recalled = true;
                }
            }
        }
    }

    // ----- webhooks ----------------------------------------------------------------------

    fn on_command(&mut self, cmd: SupervisorCommand) {
        match cmd {
            SupervisorCommand::ProcessJobs => self.wanted = true,
            SupervisorCommand::Webhook(call, reply) => {
                let refuse = if self.stopping.is_some() {
                    Some("the worker is stopping; send the request again")
                } else if self.queue.is_none() {
                    Some("the database is unreachable; send the request again later")
                } else {
                    None
                };
                let id = call.id;
                self.hook_calls.insert(
                    id,
                    PendingCall {
                        reply,
                        token: call.token.clone(),
                    },
                );
                match refuse {
                    Some(why) => self.answer(WebhookReply::error(id, 503, why)),
                    None => self.hook_queue.push_back(*call),
                }
            }
        }
    }

    fn answer(&mut self, reply: WebhookReply) {
        if let Some(call) = self.hook_calls.remove(&reply.id) {
            let _ = call.reply.send(reply);
        }
    }

    /// Hand waiting webhook calls to idle webhook executors, a batch at a time each.
    fn fill_hooks(&mut self) {
        if self.hook_queue.is_empty() {
            return;
        }
        let Some((auth, caller)) = self
            .queue
            .as_ref()
            .map(|q| (q.auth.clone(), q.caller.clone()))
        else {
            return;
        };
        for i in self.cfg.executors..self.slots.len() {
            if self.hook_queue.is_empty() {
                return;
            }
            let Some(p) = self.slots[i].proc.as_mut() else {
                continue;
            };
            if !p.ready || p.stopping || p.killed || p.killed_for.is_some() {
                continue;
            }
            if !p.hook_batches.is_empty() {
                continue;
            }
            let n = self.hook_queue.len().min(WEBHOOK_BATCH);
            let calls: Vec<WebhookCall> = self.hook_queue.drain(..n).collect();
            let batch = self.next_batch;
            self.next_batch += 1;
            p.hook_batches
                .push_back((batch, calls.iter().map(|c| c.id).collect()));
            p.send(ToExecutor::Webhooks {
                batch,
                auth: auth.clone(),
                caller: caller.clone(),
                calls,
            });
        }
    }

    /// A webhook executor's pipe closed: answer its calls (500), record them as failed
    /// jobs (their transaction died with it), start a new one.
    fn on_hook_exit(&mut self, i: usize, mut p: ExecutorProc, clean: bool, describe: &str) {
        let killed_for = p.killed_for.take();
        if !clean && !p.killed && killed_for.is_none() {
            tracing::error!("webhook executor {i} (pid {}) died: {describe}", p.pid);
        }
        let worker = self.queue.as_ref().map(|q| q.worker);
        let mut failures = Vec::new();
        for (_, calls) in std::mem::take(&mut p.hook_batches) {
            for id in calls {
                let why = match &killed_for {
                    Some((culprit, why)) if *culprit as u64 == id => why.clone(),
                    Some(_) => "the webhook executor running it was stopped because another call of its batch overran its hard time limit".to_string(),
                    None if p.killed => "the worker stopped before the call finished".to_string(),
                    None => format!("the webhook executor running it died ({describe})"),
                };
                if let (Some(call), Some(w)) = (self.hook_calls.get(&id), worker) {
                    failures.push((call.token.clone(), w, why));
                }
                self.answer(WebhookReply::error(id, 500, "the webhook handler failed"));
            }
        }
        let cleanup = Cleanup {
            backend: p.backend_pid.filter(|_| !clean),
            interrupt: None,
            webhook_failures: failures,
        };
        if self.stopping.is_some() {
            self.cleanups.push(cleanup);
        } else {
            if let Some(q) = &self.queue {
                tokio::spawn(cleanup.run(q.client.clone()));
            }
            let slot = &mut self.slots[i];
            let healthy = p.ready && p.started.elapsed() > Duration::from_secs(5);
            let delay = if healthy || killed_for.is_some() {
                Duration::ZERO
            } else {
                slot.failures += 1;
                respawn_delay(slot.failures)
            };
            slot.respawn_at = Some(Instant::now() + delay);
        }
    }

    // ----- metrics and status ----------------------------------------------------------

    /// Count claimed jobs by project name (names cached, read again now and then).
    async fn count_claims(&mut self, ids: &[(i64, i64)]) {
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

    fn publish_status(&self) {
        let jobs = &self.slots[..self.cfg.executors];
        let hooks = &self.slots[self.cfg.executors..];
        let ready = |s: &[Slot]| {
            s.iter()
                .filter(|s| s.proc.as_ref().is_some_and(|p| p.ready))
                .count()
        };
        let state = if self.stopping.is_some() {
            "stopping"
        } else if self.queue.is_some() {
            "running"
        } else if self.last_worker.is_some() {
            "reconnecting"
        } else {
            "starting"
        };
        self.state.set_status(|st| {
            st.worker_id = self.queue.as_ref().map(|q| q.worker);
            st.state = state;
            st.executors = self.cfg.executors;
            st.executors_ready = ready(jobs);
            st.executors_busy = jobs
                .iter()
                .filter(|s| s.proc.as_ref().is_some_and(|p| !p.inflight.is_empty()))
                .count();
            st.webhook_executors = self.cfg.webhook_executors;
            st.webhook_executors_ready = ready(hooks);
            st.jobs_ready = self.ready.len();
            st.jobs_completed = self.completed;
            st.webhook_calls_waiting = self.hook_queue.len();
        });
    }

    // ----- stopping --------------------------------------------------------------------

    fn on_signal(&mut self, n: u32) {
        if self.stopping.is_none() {
            self.stopping = Some(Instant::now() + self.cfg.grace_period);
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
            for slot in &mut self.slots {
                slot.respawn_at = None;
                if let Some(p) = slot.proc.as_mut() {
                    if p.ready {
                        p.send(ToExecutor::Stop);
                    } else {
                        p.killed = true;
                        p.kill();
                    }
                }
            }
        }
        if n >= 2 || self.cfg.grace_period.is_zero() {
            self.force_stop();
        }
    }

    fn force_stop(&mut self) {
        self.forced = true;
        for slot in &mut self.slots {
            if let Some(p) = slot.proc.as_mut() {
                p.killed = true;
                p.kill();
            }
        }
    }

    /// All executors are gone: give back what was claimed and not run, sign off.
    async fn finish(&mut self) {
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

async fn next_note(q: Option<&mut Queue>) -> Option<Note> {
    match q {
        Some(q) => q.notes.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(at).await
}

fn respawn_delay(failures: u32) -> Duration {
    Duration::from_millis(500u64 << failures.min(6)).min(Duration::from_secs(30))
}
