// Log lines of running jobs, written as they happen: a thread with its own connection
// inserts them in small batches (sync.job_log), outside the jobs' batch transactions.
//
// Why a thread and a connection of its own: task code holds the executor's thread (and
// its connection's transaction) for as long as it runs, and its lines must show in
// sync.log while it runs, and stay when its transaction rolls back or its executor is
// killed. The thread of a job executor opens its connection at once (`warm`), so that a
// first line does not wait for a login; an executor that only answers webhooks holds none. Lines it could not write are handed back (`take`)
// and go in with the batch's outcome.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::pg::{self, Login};
use crate::python::LogLine;
use crate::queue::registry::WorkerAuth;

/// How long a line waits for others before the thread writes: well under the 200 ms in
/// which a line must show, and enough to write a busy job's lines a few at a time.
const GATHER: Duration = Duration::from_millis(50);
/// Most lines in one statement.
const MOST: usize = 1000;
/// After a failed connection, no new attempt before this (lines go with the batch then).
const RETRY_AFTER: Duration = Duration::from_secs(5);

const WRITE_SQL: &str = "SELECT sync.job_log($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// One line of a running job, masked and normalized.
pub(crate) struct Streamed {
    pub job: i64,
    /// The start of the job's try (its batch has not committed it yet).
    pub started: DateTime<Utc>,
    pub line: LogLine,
}

enum Msg {
    /// Connect now if not connected (a batch of jobs is starting).
    Warm,
    Line(WorkerAuth, Streamed),
    /// Hand back what is not written yet (after any write under way has ended).
    Take(mpsc::SyncSender<Vec<Streamed>>),
}

/// What the executor may read without a round trip to the thread: on a busy machine
/// waking it and waiting for its answer costs a scheduler tick, once per batch.
#[derive(Default)]
struct Shared {
    /// Lines sent and neither written nor handed back yet.
    unwritten: AtomicUsize,
    connected: AtomicBool,
}

/// The executor's end of the log thread.
pub(crate) struct LogStream {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

impl LogStream {
    /// Start the thread; it logs in as `login` when the first line arrives.
    pub fn start(login: Login, name: String) -> std::io::Result<LogStream> {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let writer = Writer::new(login, name, shared.clone());
        std::thread::Builder::new()
            .name("job-log".into())
            .spawn(move || writer.run(rx))?;
        Ok(LogStream { tx, shared })
    }

    /// Have the connection ready for lines to come (nothing when it is).
    pub fn warm(&self) {
        if !self.shared.connected.load(Ordering::Acquire) {
            let _ = self.tx.send(Msg::Warm);
        }
    }

    /// A sink for the lines of job `job` (its try started at `started`) of worker `auth`
    /// (already masked).
    pub fn sender(
        &self,
        auth: &WorkerAuth,
        job: i64,
        started: DateTime<Utc>,
    ) -> impl FnMut(LogLine) + 'static {
        let tx = self.tx.clone();
        let shared = self.shared.clone();
        let auth = auth.clone();
        move |line| {
            shared.unwritten.fetch_add(1, Ordering::AcqRel);
            // A dead thread (it cannot be, short of a panic) loses nothing that matters
            // more than the job: its lines are then simply not written as they happen.
            let _ = tx.send(Msg::Line(auth.clone(), Streamed { job, started, line }));
        }
    }

    /// The lines not written yet, to go in with the batch's outcome: once this returns,
    /// every earlier line is either in sync.log or here.
    pub fn take(&self) -> Vec<Streamed> {
        // Lines are counted before they are sent, on this thread: none counted means
        // every line it sent is in sync.log already.
        if self.shared.unwritten.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        let (reply, answer) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Take(reply)).is_err() {
            return Vec::new();
        }
        answer.recv().unwrap_or_default()
    }
}

struct Writer {
    login: Login,
    name: String,
    rt: Option<tokio::runtime::Runtime>,
    client: Option<Client>,
    /// No connection attempt before this.
    quiet_until: Option<Instant>,
    lines: Vec<(WorkerAuth, Streamed)>,
    shared: Arc<Shared>,
}

impl Writer {
    fn new(login: Login, name: String, shared: Arc<Shared>) -> Writer {
        Writer {
            login,
            name,
            shared,
            rt: None,
            client: None,
            quiet_until: None,
            lines: Vec::new(),
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut due: Option<Instant> = None;
        loop {
            let msg = match due {
                Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(Msg::Warm) => {
                    self.connected();
                }
                Ok(Msg::Line(auth, line)) => {
                    self.lines.push((auth, line));
                    due.get_or_insert_with(|| Instant::now() + GATHER);
                    if self.lines.len() >= MOST {
                        self.write();
                        due = (!self.lines.is_empty()).then(|| Instant::now() + GATHER);
                    }
                }
                Ok(Msg::Take(reply)) => {
                    let taken: Vec<Streamed> = self.lines.drain(..).map(|(_, l)| l).collect();
                    self.shared
                        .unwritten
                        .fetch_sub(taken.len(), Ordering::AcqRel);
                    let _ = reply.send(taken);
                    due = None;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.write();
                    // Lines that could not be written wait for `take` (or the next try).
                    due = (!self.lines.is_empty()).then(|| Instant::now() + RETRY_AFTER);
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.write();
                    return;
                }
            }
        }
    }

    /// Write the gathered lines, a statement per worker token (one, unless the worker
    /// registered again); lines that fail stay gathered.
    fn write(&mut self) {
        while !self.lines.is_empty() {
            let auth = self.lines[0].0.clone();
            let n = self
                .lines
                .iter()
                .take(MOST)
                .take_while(|(a, _)| *a == auth)
                .count();
            if !self.write_some(&auth, n) {
                return;
            }
            self.lines.drain(..n);
            self.shared.unwritten.fetch_sub(n, Ordering::AcqRel);
        }
    }

    fn write_some(&mut self, auth: &WorkerAuth, n: usize) -> bool {
        if !self.connected() {
            return false;
        }
        let (Some(rt), Some(client)) = (&self.rt, &self.client) else {
            return false;
        };
        let lines = &self.lines[..n];
        let job: Vec<i64> = lines.iter().map(|(_, s)| s.job).collect();
        let started: Vec<DateTime<Utc>> = lines.iter().map(|(_, s)| s.started).collect();
        let at: Vec<DateTime<Utc>> = lines.iter().map(|(_, s)| s.line.at).collect();
        let level: Vec<&str> = lines.iter().map(|(_, s)| s.line.level.as_str()).collect();
        let kind: Vec<&str> = lines.iter().map(|(_, s)| s.line.kind.as_str()).collect();
        let recipient: Vec<Option<&str>> = lines
            .iter()
            .map(|(_, s)| s.line.recipient.as_deref())
            .collect();
        let message: Vec<&str> = lines.iter().map(|(_, s)| s.line.message.as_str()).collect();
        let written = rt.block_on(client.execute(
            WRITE_SQL,
            &[
                &auth.worker,
                &auth.token,
                &job,
                &started,
                &at,
                &level,
                &kind,
                &recipient,
                &message,
            ],
        ));
        match written {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(
                    "{}: cannot write log lines as they happen ({}); they go in with their jobs' outcome",
                    self.name,
                    pg::describe(&e)
                );
                if pg::is_connection_error(&e) || client.is_closed() {
                    self.client = None;
                    self.shared.connected.store(false, Ordering::Release);
                }
                self.quiet_until = Some(Instant::now() + RETRY_AFTER);
                false
            }
        }
    }

    fn connected(&mut self) -> bool {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return true;
        }
        if self.quiet_until.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        if self.rt.is_none() {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => self.rt = Some(rt),
                Err(e) => {
                    tracing::warn!("{}: cannot start the log thread's runtime: {e}", self.name);
                    self.quiet_until = Some(Instant::now() + RETRY_AFTER);
                    return false;
                }
            }
        }
        let Some(rt) = &self.rt else { return false };
        let client = rt.block_on(async {
            let client = pg::connect_login(&self.login, &self.name).await?;
            // A line lost in a database crash is a line, not a job's outcome: no wait for
            // the WAL flush (the next commit of the server flushes it anyway).
            client
                .batch_execute("SET synchronous_commit = off")
                .await
                .map_err(pg::ConnectError::from)?;
            Ok::<_, pg::ConnectError>(client)
        });
        match client {
            Ok(c) => {
                self.client = Some(c);
                self.shared.connected.store(true, Ordering::Release);
                true
            }
            Err(e) => {
                tracing::warn!(
                    "{}: cannot connect to write log lines as they happen ({e}); they go in with their jobs' outcome",
                    self.name
                );
                self.quiet_until = Some(Instant::now() + RETRY_AFTER);
                false
            }
        }
    }
}
