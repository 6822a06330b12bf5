// The supervisor's side of its executor processes: start one (from /proc/self/exe),
// send it messages, turn what it says (and its exit) into events for the main loop.
use crate::config::Config;
use crate::executor::protocol::{
    read_frame_async, write_frame_async, FromExecutor, Login, Pick, ToExecutor, WorkerAuth,
};
use crate::executor::status_page::StatusPage;
use crate::supervisor::pool::{Kind, SlotId};
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::time::Instant;
use tokio::sync::mpsc;

/// A batch sent to an executor and not reported yet.
#[derive(Debug, Clone)]
pub struct Inflight {
    pub batch: u64,
    pub worker: i32,
    /// Its jobs: those it was sent, or, for a claim of due jobs, those it said it
    /// claimed (none until then).
    pub jobs: Vec<i64>,
    /// A claim of up to this many due jobs (None: the jobs above).
    pub due: Option<usize>,
    /// (job, project) of the jobs it said it claimed, for the claims metric.
    pub claimed: Vec<(i64, i64)>,
    /// For a claim: the executor said what it claimed (FromExecutor::Claimed).
    pub answered: bool,
    /// The supervisor's wake count when it was sent.
    pub wakes: u64,
}

impl Inflight {
    /// A claim of due jobs whose executor has not said yet what it claimed.
    pub fn claim_unanswered(&self) -> bool {
        self.due.is_some() && !self.answered
    }

    /// A claim that got `got` jobs says the queue had no more due jobs (as of its
    /// snapshot) when it got fewer than it asked for, unless the supervisor was woken
    /// since it was sent (`wakes` now): a notification of jobs committed later still
    /// wants a claim.
    pub fn says_queue_empty(&self, got: usize, asked: usize, wakes: u64) -> bool {
        self.due.is_some() && got < asked && self.wakes == wakes
    }
}

/// What an executor did, tagged with its slot and generation (a respawned executor
/// gets a new generation so late events of the old one are ignored).
#[derive(Debug)]
pub enum Event {
    Message(SlotId, u64, FromExecutor),
    Closed(SlotId, u64),
    /// A project's data, read for the executor (slot, generation) that asked.
    Project(SlotId, u64, i64, Result<serde_json::Value, String>),
}

/// An executor process's life, as the supervisor sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Life {
    /// Started; has not said Ready yet.
    Starting,
    /// Said Ready: may be sent work.
    Ready,
    /// Said Bye: finishing what it has, then exiting on its own (a clean exit).
    Leaving,
    /// Killed by the supervisor: for a job (that job and why: it is blamed), or, with
    /// None, to stop the worker.
    Killed(Option<(i64, String)>),
}

pub struct ExecutorProc {
    pub generation: u64,
    pub child: tokio::process::Child,
    pub pid: u32,
    tx: mpsc::UnboundedSender<ToExecutor>,
    pub status: StatusPage,
    /// PostgreSQL backend of its job connection, once it said Ready.
    pub backend_pid: Option<i32>,
    /// Where it is in its life (one state, not loose flags).
    pub life: Life,
    pub inflight: VecDeque<Inflight>,
    /// Average seconds per job, for batch sizing and prefetching.
    pub job_secs: f64,
    /// A Recall was sent for its queued batch.
    pub recalled: bool,
    pub started: Instant,
    /// Webhook executors: batches of calls sent and not answered yet.
    pub hook_batches: VecDeque<(u64, Vec<u64>)>,
    /// A job sync_cancel_job asked to stop (sent a Cancel) and since when: killed if
    /// it is still running after CANCEL_GRACE.
    pub cancelling: Option<(i64, Instant)>,
}

impl ExecutorProc {
    /// Running, said Ready, and neither stopping nor being killed: it may be sent work
    /// (job batches or webhook calls, whichever kind it runs).
    pub fn accepts_work(&self) -> bool {
        self.life == Life::Ready
    }

    /// It said Ready at some point (whatever happened since).
    pub fn said_ready(&self) -> bool {
        self.backend_pid.is_some()
    }

    pub fn is_killed(&self) -> bool {
        matches!(self.life, Life::Killed(_))
    }

    /// Killed by the supervisor to stop the worker, blaming no job.
    pub fn killed_to_stop(&self) -> bool {
        self.life == Life::Killed(None)
    }

    /// The job it was killed for, and why.
    pub fn killed_for(&self) -> Option<(i64, String)> {
        match &self.life {
            Life::Killed(Some(b)) => Some(b.clone()),
            _ => None,
        }
    }

    /// Kill it because of `job` (hard time limit, a cancel it ignored): that job is
    /// blamed when it exits.
    pub fn kill_for(&mut self, job: i64, why: String) {
        self.life = Life::Killed(Some((job, why)));
        self.kill();
    }

    /// Kill it to stop the worker; a job it was already killed for stays blamed.
    pub fn kill_to_stop(&mut self) {
        if !self.is_killed() {
            self.life = Life::Killed(None);
        }
        self.kill();
    }

    /// Start the executor of slot `id`, called executor `index`; a webhook executor
    /// runs webhook calls with the webhook time limits instead of jobs.
    pub fn spawn(
        cfg: &Config,
        login: &Login,
        id: SlotId,
        index: usize,
        generation: u64,
        events: mpsc::UnboundedSender<Event>,
    ) -> std::io::Result<ExecutorProc> {
        let (status, fd) = StatusPage::create()?;
        let webhooks = id.kind == Kind::Webhooks;
        let (soft, hard) = if webhooks {
            (cfg.webhook_time_limit, cfg.webhook_hard_limit())
        } else {
            (cfg.soft_time_limit, cfg.hard_time_limit)
        };
        let mut cmd = tokio::process::Command::new("/proc/self/exe");
        cmd.arg("executor")
            .arg("--status-fd")
            .arg(fd.as_raw_fd().to_string())
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .arg("--index")
            .arg(index.to_string())
            .arg("--soft-time-limit")
            .arg(format!("{}s", soft.as_secs_f64()))
            .arg("--hard-time-limit")
            .arg(format!("{}s", hard.as_secs_f64()))
            .arg("--throttle")
            .arg(format!("{}s", cfg.throttle.as_secs_f64()))
            .arg("--memory-limit")
            .arg(cfg.executor_memory_limit.to_string())
            // Task code runs in this process: it inherits only what Python and TLS need,
            // never the worker's credentials (database URLs, PGPASSWORD, admin token).
            .env_clear()
            .envs(std::env::vars_os().filter(|(k, _)| crate::child_env::inherited(k)))
            .env(
                "SYNC_WORKER_LOG_FORMAT",
                match cfg.log_format {
                    crate::config::LogFormat::Json => "json",
                    crate::config::LogFormat::Text => "text",
                },
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if webhooks {
            cmd.arg("--webhooks");
        }
        if let Some(level) = &cfg.log_level {
            cmd.env("SYNC_WORKER_LOG_LEVEL", level);
        }
        if let Some(path) = &cfg.eval_context_path {
            cmd.arg("--eval-context-path").arg(path);
        }
        if let Some(path) = &cfg.python_path {
            cmd.arg("--python-path").arg(path);
        }
        if let Some(ca) = &cfg.database_ca_file {
            cmd.env("SYNC_WORKER_DATABASE_CA_FILE", ca);
        }
        let mut child = cmd.spawn()?;
        // The child has its copy; ours would leak into the next executor.
        drop(fd);
        let pid = child.id().unwrap_or(0);
        let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("executor pipes missing"));
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<ToExecutor>();
        // The login goes first, before anything else reaches the pipe.
        let _ = tx.send(ToExecutor::Login(login.clone()));
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if write_frame_async(&mut stdin, &msg).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            loop {
                match read_frame_async::<_, FromExecutor>(&mut stdout).await {
                    Ok(Some(msg)) => {
                        if events.send(Event::Message(id, generation, msg)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!("executor {index}: bad message: {e}");
                        break;
                    }
                }
            }
            let _ = events.send(Event::Closed(id, generation));
        });
        Ok(ExecutorProc {
            generation,
            child,
            pid,
            tx,
            status,
            backend_pid: None,
            life: Life::Starting,
            inflight: VecDeque::new(),
            job_secs: 0.0,
            recalled: false,
            started: Instant::now(),
            hook_batches: VecDeque::new(),
            cancelling: None,
        })
    }

    pub fn send(&self, msg: ToExecutor) {
        let _ = self.tx.send(msg);
    }

    pub fn dispatch(&mut self, batch: Inflight, auth: &WorkerAuth) {
        let pick = match batch.due {
            Some(n) => Pick::Due(n),
            None => Pick::Ids(batch.jobs.clone()),
        };
        self.send(ToExecutor::Batch {
            batch: batch.batch,
            auth: auth.clone(),
            pick,
        });
        self.inflight.push_back(batch);
    }

    pub fn kill(&mut self) {
        let _ = self.child.start_kill();
    }

    /// Fold a batch's per-job time into the running average.
    pub fn observe(&mut self, busy_secs: f64, ran: u32) {
        if ran == 0 {
            return;
        }
        let per_job = busy_secs / ran as f64;
        self.job_secs = if self.job_secs == 0.0 {
            per_job
        } else {
            0.7 * self.job_secs + 0.3 * per_job
        };
    }
}

#[cfg(test)]
mod tests {
    use super::Inflight;
    use crate::child_env::inherited;

    #[test]
    fn a_short_claim_stops_claims_only_without_a_wake_since_it_was_sent() {
        let claim = Inflight {
            batch: 1,
            worker: 1,
            jobs: Vec::new(),
            due: Some(20),
            claimed: Vec::new(),
            answered: false,
            wakes: 7,
        };
        assert!(claim.claim_unanswered());
        assert!(claim.says_queue_empty(3, 20, 7));
        assert!(
            !claim.says_queue_empty(20, 20, 7),
            "a full claim: more may be due"
        );
        assert!(
            !claim.says_queue_empty(3, 20, 8),
            "woken since: claim again"
        );
        let given = Inflight {
            due: None,
            jobs: vec![5],
            ..claim
        };
        assert!(!given.claim_unanswered());
        assert!(
            !given.says_queue_empty(0, 1, 7),
            "jobs given by id say nothing of the queue"
        );
    }

    #[test]
    fn executors_inherit_no_credentials() {
        for name in ["PATH", "LC_ALL", "PYTHONPATH", "SSL_CERT_FILE"] {
            assert!(inherited(name.as_ref()), "{name}");
        }
        for name in [
            "DATABASE_URL",
            "PGPASSWORD",
            "PGPASSFILE",
            "SYNC_WORKER_DATABASE_URL",
            "SYNC_WORKER_ADMIN_TOKEN",
            "SYNC_WORKER_EXECUTOR_DATABASE_URL",
            "SYNC_WORKER_CONFIG",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            assert!(!inherited(name.as_ref()), "{name}");
        }
    }
}
