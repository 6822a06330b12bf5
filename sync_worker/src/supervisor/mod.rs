// The supervisor: registers the worker, claims jobs (woken by NOTIFY, polling as a
// fallback), hands batches to its executor processes and webhook calls to its webhook
// executors, kills a job at its hard time limit, respawns dead executors, reconnects,
// reloads its settings on SIGHUP and stops gracefully on SIGTERM/SIGINT.
//
// Everything runs on one thread (a current-thread runtime): executors are spawned from
// it, so PR_SET_PDEATHSIG (tied to the spawning thread) fires only when the process dies.
mod connection;
mod dispatch;
pub mod executor_handle;
mod pool;
pub mod reload;
pub mod signals;
mod slots;
mod status;
mod stop;
mod webhooks;

use crate::config::Config;
use crate::executor::protocol::{
    FromExecutor, Login, ToExecutor, WebhookCall, WebhookReply, WorkerAuth,
};
use crate::executor::status_page::monotonic_ns;
use crate::http;
use crate::pg::{self, Backoff, Note};
use crate::queue::doorbell::clear_doorbell;
use crate::queue::registry::{self, RegisterError};
use crate::queue::{rescuer, scheduler as cron};
use crate::shared::{Shared, State, SupervisorCommand};
use crate::startup::{DbFacts, Listeners};
use crate::supervisor::executor_handle::{Event, ExecutorProc, Inflight, Life};
use crate::supervisor::pool::{Kind, Pools, Slot, SlotId};
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
    pools: Pools,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    /// Jobs to run again one per transaction (pending: the batch that failed with them
    /// rolled back), not sent to an executor yet; `true` = alone in its transaction.
    ready: VecDeque<(i64, bool)>,
    /// The queue may hold due jobs (a notification, a poll tick, a full claim).
    wanted: bool,
    /// How many times `wanted` was set (Supervisor::wake): a claim that comes back short
    /// settles only the wakes before it was sent.
    wakes: u64,
    next_batch: u64,
    /// Set on the first stop signal: the end of the grace period.
    stopping: Option<Instant>,
    forced: bool,
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
    /// READY=1, WATCHDOG=1 and STOPPING=1 for systemd.
    systemd: crate::systemd::Notifier,
    /// Executors started before a SIGHUP changed their settings, to stop once idle:
    /// (slot, generation).
    retiring: Vec<(SlotId, u64)>,
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
                // Waits (up to 1 s) for the backend to end: its row locks go with it, so
                // the interrupted job below is counted at once.
                .execute("SELECT pg_terminate_backend($1, 1000)", &[&pid])
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
    let hangups = signals::hangups().map_err(WorkerError::Signals)?;
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
    let pools = Pools::new(cfg.executors, cfg.webhook_executors);
    let mut sup = Supervisor {
        cfg,
        login: facts.executor.clone(),
        queue: None,
        last_worker: None,
        reconnect_at: Instant::now(),
        backoff: Backoff::default(),
        worker_tx,
        pools,
        events_tx,
        events_rx,
        ready: VecDeque::new(),
        wanted: true,
        wakes: 0,
        next_batch: 1,
        stopping: None,
        forced: false,
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
        systemd: crate::systemd::Notifier::from_env(),
        retiring: Vec::new(),
    };
    sup.main_loop(signals, hangups).await
}

impl Supervisor {
    async fn main_loop(
        &mut self,
        mut signals: watch::Receiver<u32>,
        mut hangups: tokio::signal::unix::Signal,
    ) -> Result<(), WorkerError> {
        tracing::info!(
            "sync_worker {} starting {} executor(s) for jobs and {} for webhooks",
            crate::version::LONG,
            self.cfg.executors,
            self.cfg.webhook_executors
        );
        for id in self.pools.ids() {
            self.spawn(id);
        }
        let mut poll = tokio::time::interval(self.cfg.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watchdog = tokio::time::interval(WATCHDOG);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.stopping.is_some() {
                if self.pools.all_exited() {
                    self.finish().await;
                    return Ok(());
                }
            } else {
                if self.queue.is_none() && Instant::now() >= self.reconnect_at {
                    self.connect().await?;
                }
                self.stop_retired();
                self.respawn_due();
                self.fill().await;
                self.fill_hooks();
            }
            self.publish_status();
            let reconnect_at = self.reconnect_at;
            let waiting_db = self.queue.is_none() && self.stopping.is_none();
            let deadline = self.stopping.filter(|_| !self.forced);
            let respawn_at = self.pools.next_respawn();
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
                                _ => self.wake(),
                            }
                        }
                    }
                    None => self.queue_lost("the connection closed"),
                },
                _ = poll.tick() => self.wake(),
                _ = sleep_until(recheck_at.unwrap_or_else(Instant::now)), if recheck_at.is_some() => {
                    self.recheck_at = None;
                    self.wake();
                }
                _ = watchdog.tick() => {
                    self.watchdog();
                    self.publish_running();
                }
                Some(()) = hangups.recv() => self.reload(),
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
