// A batch's log lines, column by column, as sync.batch_finish takes them: every line of
// every job goes in with the batch's completion, in one statement.
use crate::mask::Masker;
use crate::python::{JobSpec, LogLine};
use chrono::{DateTime, Utc};

/// Rows for sync.log, column by column.
#[derive(Default)]
pub(crate) struct LogRows {
    pub(crate) at: Vec<DateTime<Utc>>,
    pub(crate) project: Vec<i64>,
    pub(crate) task: Vec<Option<i64>>,
    pub(crate) trigger: Vec<Option<String>>,
    pub(crate) job: Vec<i64>,
    pub(crate) job_started: Vec<DateTime<Utc>>,
    pub(crate) level: Vec<String>,
    pub(crate) kind: Vec<String>,
    pub(crate) recipient: Vec<Option<String>>,
    pub(crate) message: Vec<String>,
}

impl LogRows {
    /// Append a job's line, its text masked.
    pub fn push_masked(&mut self, spec: &JobSpec, line: LogLine, mask: &Masker) {
        self.push(spec, line.masked(mask));
    }

    pub fn push(&mut self, spec: &JobSpec, line: LogLine) {
        let line = line.normalized();
        self.at.push(line.at);
        self.project.push(spec.project_id);
        self.task.push(spec.task_id);
        self.trigger.push(spec.trigger_name.clone());
        self.job.push(spec.job_id);
        self.job_started.push(spec.started_at);
        self.level.push(line.level);
        self.kind.push(line.kind);
        self.recipient.push(line.recipient);
        self.message.push(line.message);
    }

    pub fn line(&mut self, spec: &JobSpec, level: &str, message: String) {
        self.line_at(spec, level, message, Utc::now());
    }

    /// A message line written at `at` (when what it reports happened).
    pub fn line_at(&mut self, spec: &JobSpec, level: &str, message: String, at: DateTime<Utc>) {
        self.push(
            spec,
            LogLine {
                level: level.into(),
                kind: "message".into(),
                recipient: None,
                message,
                at,
            },
        );
    }
}
