// What the supervisor shares with its HTTP servers and background duties: settings,
// metrics, a status snapshot, the clock drift, and the command channel to the supervisor.
use crate::config::Config;
use crate::metrics::Metrics;
use crate::webhook_call::{WebhookCall, WebhookReply};
use chrono::{DateTime, Utc};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Asked of the supervisor by the HTTP servers.
pub enum SupervisorCommand {
    /// Claim now (POST /service/processjobs).
    ProcessJobs,
    /// Run a webhook handler and answer on the channel.
    Webhook(Box<WebhookCall>, oneshot::Sender<WebhookReply>),
}

/// The supervisor's state as the admin API shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WorkerStatus {
    /// sync.worker id of the current connection (None while disconnected).
    pub worker_id: Option<i32>,
    /// starting, running, reconnecting or stopping.
    pub state: &'static str,
    pub executors: usize,
    pub executors_ready: usize,
    pub executors_busy: usize,
    pub webhook_executors: usize,
    pub webhook_executors_ready: usize,
    /// Claimed, not yet handed to an executor.
    pub jobs_ready: usize,
    pub jobs_completed: u64,
    pub webhook_calls_waiting: usize,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SchedulerStatus {
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_enqueued: i32,
    pub last_error: Option<String>,
    pub drift_ms: Option<f64>,
    pub drift_measured_at: Option<DateTime<Utc>>,
}

pub struct State {
    pub cfg: Config,
    pub metrics: Metrics,
    pub started_at: DateTime<Utc>,
    pub hostname: String,
    pub status: Mutex<WorkerStatus>,
    pub scheduler: Mutex<SchedulerStatus>,
    pub commands: mpsc::UnboundedSender<SupervisorCommand>,
    /// Where the HTTP servers listen (None = off).
    pub webhook_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    next_call: AtomicU64,
    /// When the supervisor loop last turned (ms after `origin`): /health/live.
    origin: std::time::Instant,
    turned_ms: AtomicU64,
}

pub type Shared = Arc<State>;

impl State {
    /// The supervisor loop turned (it does at least every 100 ms while healthy).
    pub fn loop_turned(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.turned_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since the supervisor loop last turned.
    pub fn since_loop_turned(&self) -> std::time::Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        std::time::Duration::from_millis(now.saturating_sub(self.turned_ms.load(Ordering::Relaxed)))
    }

    pub fn new(
        cfg: Config,
        commands: mpsc::UnboundedSender<SupervisorCommand>,
        webhook_addr: Option<SocketAddr>,
        admin_addr: Option<SocketAddr>,
    ) -> Shared {
        Arc::new(State {
            webhook_addr,
            admin_addr,
            next_call: AtomicU64::new(1),
            origin: std::time::Instant::now(),
            turned_ms: AtomicU64::new(0),
            cfg,
            metrics: Metrics::default(),
            started_at: Utc::now(),
            hostname: hostname(),
            status: Mutex::new(WorkerStatus {
                state: "starting",
                ..Default::default()
            }),
            scheduler: Mutex::new(SchedulerStatus::default()),
            commands,
        })
    }

    /// A new webhook call id.
    pub fn call_id(&self) -> u64 {
        self.next_call.fetch_add(1, Ordering::Relaxed)
    }

    pub fn status(&self) -> WorkerStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_status(&self, update: impl FnOnce(&mut WorkerStatus)) {
        update(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn scheduler(&self) -> SchedulerStatus {
        self.scheduler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_scheduler(&self, update: impl FnOnce(&mut SchedulerStatus)) {
        update(&mut self.scheduler.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// This host's name, as the worker reports it (status page, sync.worker).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
