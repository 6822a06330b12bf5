// How a try of a job ended, as the executor reports it to sync.batch_finish, which owns
// what follows (retry or give up: sync.may_try_again). One typed value, not strings.
use serde::{Deserialize, Serialize};

/// SQL condition: job `j` is in the state given by parameter `$p` (NULL: any) as people
/// see it, sync.job_state's rule written out so that the planner sees `j.state = ...`:
/// a running job's row says pending, and sync.job_started lists it.
macro_rules! job_state_filter {
    ($p:literal) => {
        concat!(
            "(", $p, "::text IS NULL",
            " OR (", $p, " = 'running' AND (j.state = 'running'",
            " OR (j.state = 'pending' AND j.id IN (SELECT s.job_id FROM sync.job_started s))))",
            " OR (", $p, " <> 'running' AND j.state = ", $p,
            " AND NOT (j.state = 'pending' AND j.id IN (SELECT s.job_id FROM sync.job_started s))))"
        )
    };
}
pub(crate) use job_state_filter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TryEnd {
    /// The handler returned.
    Done,
    /// The handler raised (or logged an error); no retry.
    Failed,
    /// Stopped by sync_cancel_job while it ran (the try counts).
    Cancelled,
    /// RetryableJobError: pending again after sync.retry_delay, or failed when out of tries.
    Retry,
    /// Cancelled or inactive before its handler started: no try counted.
    Skipped,
}

impl TryEnd {
    /// The outcome as sync.batch_finish takes it.
    pub fn as_sql(self) -> &'static str {
        match self {
            TryEnd::Done => "done",
            TryEnd::Failed => "failed",
            TryEnd::Cancelled => "cancelled",
            TryEnd::Retry => "retry",
            TryEnd::Skipped => "skipped",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TryEnd;

    #[test]
    fn sql_names_match_serde_names() {
        for t in [
            TryEnd::Done,
            TryEnd::Failed,
            TryEnd::Cancelled,
            TryEnd::Retry,
            TryEnd::Skipped,
        ] {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_sql()));
        }
    }
}
