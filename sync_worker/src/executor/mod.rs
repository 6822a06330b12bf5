// The executor process (`sync_worker executor`, started by the supervisor): one Python
// interpreter and one database connection; runs the batches it is sent, one at a time.
//
// It dies with its supervisor (PR_SET_PDEATHSIG, and end of stdin). A thread reads the
// supervisor's messages so that Stop and Recall are seen while a job is running.
pub mod job_batch;
pub mod job_try;
pub mod log_rows;
pub mod log_stream;
pub mod protocol;
pub mod status_page;
pub mod webhook_batch;

use crate::config::parse_duration;
use crate::executor::job_batch::BatchStatements;
use crate::executor::log_stream::LogStream;
use crate::executor::protocol::{
    read_frame, write_frame, BatchReport, FromExecutor, Login, Pick, ToExecutor, WebhookCall,
    WebhookReply, WorkerAuth,
};
use crate::executor::status_page::StatusPage;
use crate::pg;
use crate::python::{ProjectSource, Runtime, RuntimeOptions};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio_postgres::Client;

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("cannot set up the executor's pipes: {0}")]
    Pipes(std::io::Error),
    #[error("cannot start the thread that writes log lines: {0}")]
    LogThread(std::io::Error),
    #[error("the supervisor (pid {0}) is gone")]
    Orphan(u32),
    #[error("cannot map the status page: {0}")]
    Status(std::io::Error),
    #[error("the supervisor did not send the database login first")]
    NoLogin,
    #[error("cannot set the memory limit: {0}")]
    MemoryLimit(std::io::Error),
    #[error("refusing to run task code: {0}. The executors' login must be sync_executor or a login that is only a member of it (executor_database_url).")]
    UnsafeLogin(String),
    #[error("cannot start the async runtime: {0}")]
    Tokio(std::io::Error),
    #[error(transparent)]
    Python(#[from] crate::python::RuntimeError),
    #[error("lost the supervisor's pipe: {0}")]
    Pipe(std::io::Error),
}

/// What the executor process keeps between batches.
pub struct Executor {
    pub rt: tokio::runtime::Runtime,
    pub runtime: Runtime,
    pub status: StatusPage,
    /// The connection of the batch transactions (and of the jobs' SQL), logged in as
    /// sync_executor.
    pub job: Client,
    /// The batch statements prepared on `job` (new with every connection).
    pub statements: BatchStatements,
    /// Where project data comes from (the supervisor).
    pub projects: Box<dyn ProjectSource>,
    /// Jobs sync_cancel_job asked to stop, and by whom.
    pub cancels: std::sync::Arc<Cancels>,
    pub soft_time_limit: Duration,
    /// hard limit minus soft limit: added to a task's own time_limit.
    pub hard_margin: Duration,
    pub stop: std::sync::Arc<AtomicBool>,
    /// Minimum time per job (the setting throttle).
    pub throttle: Duration,
    /// Writes the running jobs' log lines as they happen.
    pub log_stream: LogStream,
}

/// Cancel requests that reached this executor (ToExecutor::Cancel), by job id.
#[derive(Default)]
pub struct Cancels {
    by: std::sync::Mutex<std::collections::HashMap<i64, String>>,
}

impl Cancels {
    pub fn add(&self, job: i64, by: String) {
        self.by
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job, by);
    }

    /// Who asked to cancel `job`, taking the request.
    pub fn take(&self, job: i64) -> Option<String> {
        self.by
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&job)
    }
}

enum Work {
    /// (batch, auth, which jobs it claims)
    Jobs(u64, WorkerAuth, Pick),
    /// (batch, auth, the worker's login, calls)
    Webhooks(u64, WorkerAuth, String, Vec<WebhookCall>),
}

struct Inbox {
    batches: VecDeque<Work>,
    /// Answers to NeedProject, until the runtime takes them.
    projects: HashMap<i64, Result<Value, String>>,
    stop: bool,
}

type Shared = Arc<(Mutex<Inbox>, Condvar)>;
type Out = Arc<Mutex<File>>;

/// What the supervisor tells an executor it starts. Its database login comes first on
/// its pipe (protocol::ToExecutor::Login), never in its environment or command line.
#[derive(clap::Args, Debug, Clone)]
pub struct ExecutorArgs {
    /// File descriptor of the shared status page.
    #[arg(long)]
    pub status_fd: i32,
    /// Pid of the supervisor; the executor exits if it is not its parent.
    #[arg(long)]
    pub parent_pid: u32,
    /// Index of this executor in the pool (for log lines).
    #[arg(long)]
    pub index: usize,
    #[arg(long, value_parser = parse_duration)]
    pub soft_time_limit: Duration,
    #[arg(long, value_parser = parse_duration)]
    pub hard_time_limit: Duration,
    /// Minimum time per job.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub throttle: Duration,
    /// Run webhook calls, not jobs.
    #[arg(long)]
    pub webhooks: bool,
    /// Address-space limit of the process in bytes (0 = none).
    #[arg(long, default_value = "0")]
    pub memory_limit: usize,
    /// Directories searched first for providers (the setting eval_context_path).
    #[arg(long)]
    pub eval_context_path: Option<String>,
    /// Directories added to sys.path (the setting python_path).
    #[arg(long)]
    pub python_path: Option<String>,
}

pub fn main(args: ExecutorArgs) -> Result<(), ExecutorError> {
    let (mut input, output) = take_protocol_fds().map_err(ExecutorError::Pipes)?;
    die_with_parent(args.parent_pid)?;
    ignore_stop_signals();
    limit_memory(args.memory_limit)?;
    let status = StatusPage::map(args.status_fd).map_err(ExecutorError::Status)?;
    let login = match read_frame::<_, ToExecutor>(&mut input) {
        Ok(Some(ToExecutor::Login(login))) => login,
        _ => return Err(ExecutorError::NoLogin),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ExecutorError::Tokio)?;
    let runtime = Runtime::with_options(RuntimeOptions::new(
        args.eval_context_path.as_deref(),
        args.python_path.as_deref(),
        args.memory_limit,
    ))?;

    let out: Out = Arc::new(Mutex::new(output));
    let stop = Arc::new(AtomicBool::new(false));
    let cancels = Arc::new(Cancels::default());
    let shared: Shared = Arc::new((
        Mutex::new(Inbox {
            batches: VecDeque::new(),
            projects: HashMap::new(),
            stop: false,
        }),
        Condvar::new(),
    ));
    {
        let (shared, out, stop, cancels) =
            (shared.clone(), out.clone(), stop.clone(), cancels.clone());
        std::thread::Builder::new()
            .name("supervisor-pipe".into())
            .spawn(move || read_messages(input, shared, out, stop, cancels))
            .map_err(ExecutorError::Pipes)?;
    }

    let name = format!("sync_worker executor {}", args.index);
    let Some(job) = connect(&rt, &login, &name, &stop)? else {
        return finish(&shared, &out);
    };
    let mut ex = Executor {
        rt,
        runtime,
        status,
        job,
        statements: BatchStatements::default(),
        projects: Box::new(FromSupervisor {
            shared: shared.clone(),
            out: out.clone(),
        }),
        cancels,
        soft_time_limit: args.soft_time_limit,
        hard_margin: args.hard_time_limit.saturating_sub(args.soft_time_limit),
        stop: stop.clone(),
        throttle: args.throttle,
        log_stream: LogStream::start(login.clone(), format!("{name} log"))
            .map_err(ExecutorError::LogThread)?,
    };
    if !args.webhooks {
        // Job executors log in for log lines now, so that a first line is not late.
        ex.log_stream.warm();
    }
    send_ready(&ex, &out)?;

    loop {
        let next = {
            let (lock, cvar) = &*shared;
            let mut inbox = lock.lock().unwrap_or_else(|e| e.into_inner());
            while inbox.batches.is_empty() && !inbox.stop {
                inbox = cvar.wait(inbox).unwrap_or_else(|e| e.into_inner());
            }
            if inbox.stop {
                None
            } else {
                inbox.batches.pop_front()
            }
        };
        let Some(work) = next else {
            return finish(&shared, &out);
        };
        if ex.job.is_closed() {
            tracing::warn!(
                "executor {}: database connection lost; reconnecting",
                args.index
            );
            match connect(&ex.rt, &login, &name, &stop)? {
                Some(job) => {
                    ex.job = job;
                    ex.statements = BatchStatements::default();
                    ex.runtime.connection_changed();
                    send_ready(&ex, &out)?;
                }
                None => {
                    send(&out, &give_back(work))?;
                    return finish(&shared, &out);
                }
            }
        }
        match work {
            Work::Jobs(batch, auth, pick) => {
                let asked = match &pick {
                    Pick::Due(n) => *n,
                    other => other.ids().len(),
                };
                let mut pipe_ok = Ok(());
                let report = ex.run_batch(batch, &auth, pick, &mut |jobs| {
                    pipe_ok = send(
                        &out,
                        &FromExecutor::Claimed {
                            batch,
                            jobs: jobs.to_vec(),
                            asked,
                        },
                    );
                });
                pipe_ok?;
                send(&out, &FromExecutor::Report(report))?;
            }
            Work::Webhooks(batch, auth, caller, calls) => {
                let replies = ex.run_webhooks(&auth, &caller, &calls);
                send(&out, &FromExecutor::WebhookReplies { batch, replies })?;
            }
        }
    }
}

/// What to tell the supervisor about work that will not run here: jobs go back to the
/// queue, webhook calls are answered 503 (the sender may try again).
fn give_back(work: Work) -> FromExecutor {
    match work {
        Work::Jobs(batch, _, pick) => FromExecutor::Report(BatchReport {
            batch,
            unstarted: pick.ids(),
            ..Default::default()
        }),
        Work::Webhooks(batch, _, _, calls) => FromExecutor::WebhookReplies {
            batch,
            replies: calls
                .iter()
                .map(|c| {
                    WebhookReply::error(c.id, 503, "the worker is stopping; send the request again")
                })
                .collect(),
        },
    }
}

/// After Stop: give back the batches not started, say goodbye.
fn finish(shared: &Shared, out: &Out) -> Result<(), ExecutorError> {
    let left: Vec<_> = {
        let mut inbox = shared.0.lock().unwrap_or_else(|e| e.into_inner());
        inbox.batches.drain(..).collect()
    };
    for work in left {
        send(out, &give_back(work))?;
    }
    send(out, &FromExecutor::Bye)
}

fn send(out: &Out, msg: &FromExecutor) -> Result<(), ExecutorError> {
    let mut w = out.lock().unwrap_or_else(|e| e.into_inner());
    write_frame(&mut *w, msg).map_err(ExecutorError::Pipe)
}

fn send_ready(ex: &Executor, out: &Out) -> Result<(), ExecutorError> {
    let backend_pid = ex
        .rt
        .block_on(ex.job.query_one("SELECT pg_backend_pid()", &[]))
        .map(|r| r.get::<_, i32>(0))
        .unwrap_or(0);
    send(out, &FromExecutor::Ready { backend_pid })
}

/// Connect, retrying with backoff until it works or a Stop arrives (None). A login
/// that may do more than run task code is refused for good: the executor exits.
fn connect(
    rt: &tokio::runtime::Runtime,
    login: &Login,
    name: &str,
    stop: &AtomicBool,
) -> Result<Option<tokio_postgres::Client>, ExecutorError> {
    let mut backoff = pg::Backoff::default();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        // Every failure is a warning: with connections scarce, an executor that cannot
        // connect leaves the worker short of hands, and the log must say why.
        let (why, delay) = match rt.block_on(pg::connect_login(login, name)) {
            Ok(client) => {
                let problem = rt
                    .block_on(client.query_one("SELECT sync.executor_session_problem()", &[]))
                    .map(|r| r.get::<_, Option<String>>(0));
                match problem {
                    Ok(None) => return Ok(Some(client)),
                    Ok(Some(why)) => return Err(ExecutorError::UnsafeLogin(why)),
                    Err(e) => (
                        format!("cannot check its login: {}", pg::describe(&e)),
                        backoff.next(e.as_db_error().is_some()),
                    ),
                }
            }
            Err(e) => (
                format!(
                    "cannot connect as {}: {e}",
                    login.user.as_deref().unwrap_or("the URL's user")
                ),
                backoff.after(&e),
            ),
        };
        tracing::warn!("{name}: {why}; retrying in {:.1} s", delay.as_secs_f64());
        std::thread::sleep(delay);
    }
}

/// Project data from the supervisor: ask over the pipe, wait for the answer (the pipe
/// thread puts it in the inbox).
struct FromSupervisor {
    shared: Shared,
    out: Out,
}

/// Longest wait for a project's data; the supervisor answers in milliseconds unless its
/// database connection is down.
const PROJECT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl ProjectSource for FromSupervisor {
    fn project(&mut self, project_id: i64) -> Result<Value, String> {
        send(&self.out, &FromExecutor::NeedProject { project_id })
            .map_err(|e| format!("cannot ask the supervisor: {e}"))?;
        let (lock, cvar) = &*self.shared;
        let deadline = std::time::Instant::now() + PROJECT_WAIT;
        let mut inbox = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(answer) = inbox.projects.remove(&project_id) {
                return answer;
            }
            let now = std::time::Instant::now();
            // Not cut short by Stop: the job at hand may still finish in the grace period.
            if now >= deadline {
                return Err("the supervisor did not send the project's data".into());
            }
            inbox = cvar
                .wait_timeout(inbox, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The supervisor's messages: queue batches, answer Recall for a batch not started,
/// deliver projects, stop cancelled jobs, flag Stop. End of input means the supervisor
/// is gone: exit at once.
fn read_messages(
    mut input: File,
    shared: Shared,
    out: Out,
    stop: Arc<AtomicBool>,
    cancels: Arc<Cancels>,
) {
    loop {
        let msg = match read_frame::<_, ToExecutor>(&mut input) {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => {
                // SAFETY: _exit ends the process without running destructors or atexit
                // handlers, which may be stuck (a job in an endless loop holds the GIL).
                unsafe { libc::_exit(1) }
            }
        };
        let (lock, cvar) = &*shared;
        let mut inbox = lock.lock().unwrap_or_else(|e| e.into_inner());
        match msg {
            ToExecutor::Login(_) => {}
            ToExecutor::Batch { batch, auth, pick } => {
                inbox.batches.push_back(Work::Jobs(batch, auth, pick));
            }
            ToExecutor::Webhooks {
                batch,
                auth,
                caller,
                calls,
            } => {
                inbox
                    .batches
                    .push_back(Work::Webhooks(batch, auth, caller, calls));
            }
            ToExecutor::Project { project_id, data } => {
                inbox.projects.insert(project_id, data);
            }
            ToExecutor::Cancel { job, by } => {
                // Queued here: not started when its turn comes. Running: stopped now
                // (the handler gets JobCancelled; the supervisor kills us if it goes on).
                cancels.add(job, by);
                crate::python::native::request_cancel(job);
            }
            ToExecutor::Recall { batch } => {
                let pos = inbox
                    .batches
                    .iter()
                    .position(|b| matches!(b, Work::Jobs(id, _, _) if *id == batch));
                if let Some(pos) = pos {
                    if let Some(Work::Jobs(batch, _, pick)) = inbox.batches.remove(pos) {
                        drop(inbox);
                        let _ = send(
                            &out,
                            &FromExecutor::Report(BatchReport {
                                batch,
                                unstarted: pick.ids(),
                                ..Default::default()
                            }),
                        );
                        continue;
                    }
                }
            }
            ToExecutor::Stop => {
                inbox.stop = true;
                stop.store(true, Ordering::Relaxed);
            }
        }
        cvar.notify_all();
    }
}

/// Keep the protocol on private copies of stdin/stdout, and point fds 0 and 1 at
/// /dev/null and stderr: whatever task code prints cannot corrupt the protocol.
fn take_protocol_fds() -> std::io::Result<(File, File)> {
    // SAFETY: duplicating descriptors 0 and 1 (open: the supervisor gave us pipes) to
    // new close-on-exec descriptors; results checked.
    let (input, output) = unsafe {
        (
            libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3),
            libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3),
        )
    };
    if input < 0 || output < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let devnull = File::open("/dev/null")?;
    // SAFETY: dup2 onto the standard descriptors from descriptors we hold open.
    let ok = unsafe {
        libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&devnull), 0) >= 0 && libc::dup2(2, 1) >= 0
    };
    if !ok {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: input and output are fresh descriptors owned by nothing else.
    Ok(unsafe { (File::from_raw_fd(input), File::from_raw_fd(output)) })
}

/// SIGTERM, SIGINT and SIGHUP are for the supervisor, which stops executors itself (Stop
/// message, SIGKILL after the grace period, PDEATHSIG) and reloads settings by restarting
/// them. systemd's default KillMode, `systemctl kill --signal=HUP` and Ctrl-C or a hangup
/// in a terminal signal the whole process group: without this, running jobs died at once.
fn ignore_stop_signals() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
}

/// Cap the process's address space: a job that allocates without end gets MemoryError
/// (Python) or kills only this process, never the host's other work.
fn limit_memory(bytes: usize) -> Result<(), ExecutorError> {
    if bytes == 0 {
        return Ok(());
    }
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct we pass; no memory is shared.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } != 0 {
        return Err(ExecutorError::MemoryLimit(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Be killed when the supervisor dies, even in the middle of a job.
fn die_with_parent(parent: u32) -> Result<(), ExecutorError> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number; no memory is involved.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // The parent may have died before the prctl: then we were re-parented.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } as u32 != parent {
        return Err(ExecutorError::Orphan(parent));
    }
    Ok(())
}
