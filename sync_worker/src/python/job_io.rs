// What a run of task code takes and gives back: the claimed job (and a webhook's
// request) going in; its outcome, log lines (and the webhook's response) coming out.
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// What the runtime needs to know about a claimed job.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub job_id: i64,
    pub project_id: i64,
    pub project_version: i64,
    pub task_id: Option<i64>,
    pub trigger_kind: Option<String>,
    pub trigger_name: Option<String>,
    pub handler: String,
    pub args: Value,
    pub user_name: String,
    pub lang: Option<String>,
    /// The try running now: 1 for the first (Python sees it as job attempts).
    pub try_no: i32,
    pub max_retries: i32,
    pub started_at: DateTime<Utc>,
    pub soft_time_limit: Duration,
    /// The project's run_as role and why it may not be used (checked when the job was
    /// locked, not when the project was cached: a role can gain rights at any time).
    pub run_as: Option<String>,
    pub run_as_problem: Option<String>,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The handler returned; `warning` when it logged a warning.
    Done {
        result: Option<Value>,
        warning: bool,
    },
    /// RetryableJobError (also when wrapped by other exceptions): schedule another try.
    Retry { message: String },
    /// Any other error, or an error logged: message and traceback.
    Failed { message: String },
    /// Stopped by sync_cancel_job while running (what the code raised, if anything).
    Cancelled { message: String },
}

/// A line for sync.log, written by the executor outside the job's transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// debug, info, warning or error.
    pub level: String,
    /// message, data_out or data_in.
    pub kind: String,
    pub recipient: Option<String>,
    pub message: String,
    pub at: DateTime<Utc>,
}

impl LogLine {
    /// A line as pg_sync.job hands it over: `at` in seconds since the epoch.
    pub fn from_python(
        level: String,
        kind: String,
        recipient: Option<String>,
        message: String,
        at: f64,
    ) -> LogLine {
        LogLine {
            level,
            kind,
            recipient,
            message,
            at: DateTime::from_timestamp_micros((at * 1e6) as i64).unwrap_or_else(Utc::now),
        }
    }

    /// The line as sync.log's checks accept it: one bad line must not fail the statement
    /// that writes a whole batch, so unknown values fall back and NUL bytes go.
    pub fn normalized(self) -> LogLine {
        let level = match self.level.as_str() {
            "debug" | "info" | "warning" | "error" => self.level,
            _ => "info".into(),
        };
        let kind = match self.kind.as_str() {
            "message" | "data_out" | "data_in" => self.kind,
            _ => "message".into(),
        };
        LogLine {
            level,
            kind,
            recipient: self.recipient.map(|r| r.replace('\0', "")),
            message: self.message.replace('\0', ""),
            at: self.at,
        }
    }

    /// The line with the project's secret values masked.
    pub fn masked(self, mask: &crate::mask::Masker) -> LogLine {
        LogLine {
            message: mask.string(self.message),
            recipient: self.recipient.map(|r| mask.string(r)),
            ..self
        }
    }
}

/// A webhook request as handle_webhook(httprequest) sees it (body already parsed).
#[derive(Debug, Clone, Default)]
pub struct WebhookRequest {
    pub method: String,
    pub path: String,
    /// The full URL (base_url + path + query) as the sender used it.
    pub url: String,
    pub query: String,
    pub args: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub remote_addr: String,
    pub body: Vec<u8>,
    pub json: Option<Value>,
    pub form: Vec<(String, String)>,
    /// (field name, file name, content type, content)
    pub files: Vec<(String, String, String, Vec<u8>)>,
    /// The trigger's content_type: json or form.
    pub content_type: String,
}

/// What a webhook handler answered.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}
