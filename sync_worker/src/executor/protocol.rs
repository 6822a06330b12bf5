// Messages between the supervisor and its executor processes, over the executor's
// stdin/stdout: each frame is a 4-byte little-endian length followed by that much JSON.
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use crate::pg::Login;
pub use crate::queue::registry::WorkerAuth;
pub use crate::webhook_call::{WebhookCall, WebhookReply, WebhookTrigger};

/// Largest frame accepted (a batch of ids, a report): anything bigger is a bug.
const MAX_FRAME: usize = 64 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToExecutor {
    /// First message: how to log in.
    Login(Login),
    /// Claim jobs for worker `auth.worker` and run them in one transaction.
    Batch {
        batch: u64,
        auth: WorkerAuth,
        pick: Pick,
    },
    /// Give this batch back unstarted if it has not started yet.
    Recall { batch: u64 },
    /// Finish the job at hand, give back what has not started, and exit.
    Stop,
    /// Webhook executors only: run these calls' handlers now (for worker `auth.worker`,
    /// whose id their job rows carry; `caller` is the worker's login, their user) and
    /// answer each.
    Webhooks {
        batch: u64,
        auth: WorkerAuth,
        caller: String,
        calls: Vec<WebhookCall>,
    },
    /// The answer to NeedProject: a project's code layers, secrets and values to mask
    /// (sync.project_runtime), or why it cannot be loaded.
    Project {
        project_id: i64,
        data: Result<serde_json::Value, String>,
    },
    /// sync_cancel_job(`job`) by `by`: stop the job if it is running or queued here.
    Cancel { job: i64, by: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromExecutor {
    /// Connected and ready; `backend_pid` is the PostgreSQL backend of its job
    /// connection (the supervisor terminates it if it has to kill the executor).
    Ready {
        backend_pid: i32,
    },
    /// A batch has claimed these (job, project) of the `asked` it could have, and is
    /// about to run them.
    Claimed {
        batch: u64,
        jobs: Vec<(i64, i64)>,
        asked: usize,
    },
    Report(BatchReport),
    /// The answers to a Webhooks batch, sent once its transaction committed.
    WebhookReplies {
        batch: u64,
        replies: Vec<WebhookReply>,
    },
    /// Exiting after a Stop.
    Bye,
    /// The executor needs this project's data (answered with ToExecutor::Project): it is
    /// read on the supervisor's connection, which may read secrets; the executor's may not.
    NeedProject {
        project_id: i64,
    },
}

/// Which jobs a batch claims (sync.batch_lock): the claim is its transaction's row lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Pick {
    /// Up to this many due pending jobs, highest priority first.
    Due(usize),
    /// These jobs, if still pending (run one by one to find a culprit).
    Ids(Vec<i64>),
    /// This job whatever its state (`sync_worker run-job`).
    AnyState(i64),
}

impl Pick {
    /// The ids it names (none for Due).
    pub fn ids(&self) -> Vec<i64> {
        match self {
            Pick::Due(_) => Vec::new(),
            Pick::Ids(ids) => ids.clone(),
            Pick::AnyState(id) => vec![*id],
        }
    }
}

/// How one job try ended, for the metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobOutcome {
    pub project: String,
    pub state: crate::job_state::TryEnd,
    pub secs: f64,
}

/// What became of a batch.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BatchReport {
    pub batch: u64,
    /// Committed: done, failed, cancelled, or pending again for a retry.
    pub completed: Vec<i64>,
    /// Not started (the batch ran out of its time slice, was recalled or stopped):
    /// pending and unlocked again, anyone's to claim.
    pub unstarted: Vec<i64>,
    /// The connection was lost before the commit was confirmed: pending again unless
    /// the commit went through.
    pub lost: Vec<i64>,
    /// The batch's commit failed with an SQL error (e.g. a deferred constraint of some
    /// job): to be run again one per transaction to find the culprit.
    pub split: Vec<i64>,
    /// Seconds spent in handlers, and how many jobs ran, for batch sizing.
    pub busy_secs: f64,
    pub ran: u32,
    /// One per committed job, for the metrics.
    pub outcomes: Vec<JobOutcome>,
}

/// A message as one frame: its length (4 bytes, little-endian), then its JSON.
fn encode<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let mut buf = Vec::with_capacity(body.len() + 4);
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(&body);
    Ok(buf)
}

/// The body length a frame header announces, refused past MAX_FRAME.
fn body_len(header: [u8; 4]) -> io::Result<usize> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    Ok(len)
}

/// Whether reading a frame's header met the clean end of the stream.
fn at_end(header: io::Result<()>) -> io::Result<bool> {
    match header {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(true),
        Err(e) => Err(e),
    }
}

fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> io::Result<Option<T>> {
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    w.write_all(&encode(msg)?)?;
    w.flush()
}

/// `Ok(None)` at a clean end of stream.
pub fn read_frame<R: Read, T: for<'de> Deserialize<'de>>(r: &mut R) -> io::Result<Option<T>> {
    let mut header = [0u8; 4];
    if at_end(r.read_exact(&mut header))? {
        return Ok(None);
    }
    let mut body = vec![0u8; body_len(header)?];
    r.read_exact(&mut body)?;
    decode(&body)
}

pub async fn write_frame_async<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> io::Result<()> {
    w.write_all(&encode(msg)?).await?;
    w.flush().await
}

pub async fn read_frame_async<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
) -> io::Result<Option<T>> {
    let mut header = [0u8; 4];
    if at_end(r.read_exact(&mut header).await.map(|_| ()))? {
        return Ok(None);
    }
    let mut body = vec![0u8; body_len(header)?];
    r.read_exact(&mut body).await?;
    decode(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let msgs = vec![
            ToExecutor::Login(Login {
                url: "postgres://h/db".into(),
                user: Some("sync_executor".into()),
                password: None,
            }),
            ToExecutor::Batch {
                batch: 7,
                auth: WorkerAuth {
                    worker: 3,
                    token: "secret".into(),
                },
                pick: Pick::Ids(vec![1, 2, 3]),
            },
            ToExecutor::Batch {
                batch: 9,
                auth: WorkerAuth {
                    worker: 3,
                    token: "secret".into(),
                },
                pick: Pick::Due(500),
            },
            ToExecutor::Recall { batch: 7 },
            ToExecutor::Stop,
            ToExecutor::Project {
                project_id: 4,
                data: Err("gone".into()),
            },
            ToExecutor::Cancel {
                job: 5,
                by: "alice".into(),
            },
            ToExecutor::Webhooks {
                batch: 8,
                auth: WorkerAuth {
                    worker: 3,
                    token: "secret".into(),
                },
                caller: "postgres".into(),
                calls: vec![WebhookCall {
                    id: 1,
                    token: "t".into(),
                    trigger: WebhookTrigger {
                        id: 1,
                        name: "hook".into(),
                        project_id: 2,
                        project_version: 3,
                        task_id: 4,
                        content_type: "json".into(),
                        project: "p".into(),
                        task: "t".into(),
                        time_limit: None,
                        base_url: "https://x".into(),
                    },
                    refused: Some((401, "bad signature".into())),
                    method: "POST".into(),
                    path: "/sync/webhook/t".into(),
                    query: "a=1".into(),
                    headers: vec![("content-type".into(), "application/json".into())],
                    remote_addr: "127.0.0.1:5555".into(),
                    body: vec![0, 159, 146, 150, b'{'],
                }],
            },
        ];
        let mut buf = Vec::new();
        for m in &msgs {
            write_frame(&mut buf, m).unwrap();
        }
        let mut r = &buf[..];
        for m in &msgs {
            let got: ToExecutor = read_frame(&mut r).unwrap().unwrap();
            assert_eq!(&got, m);
        }
        assert!(read_frame::<_, ToExecutor>(&mut r).unwrap().is_none());
    }
}
