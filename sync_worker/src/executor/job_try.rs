// One job's try inside a batch: the cancel and inactive checks, the call into Python
// with its log lines sent as they happen, and the completion the try ends with.
use crate::executor::job_batch::{Completion, Locked};
use crate::executor::log_rows::LogRows;
use crate::executor::protocol::WorkerAuth;
use crate::executor::Executor;
use crate::job_state::TryEnd;
use crate::mask::Masker;
use crate::python::db::JobDb;
use crate::python::native::{with_log_sink, LogSink};
use crate::python::{LogLine, Outcome};
use chrono::Utc;
use std::cell::RefCell;
use std::rc::Rc;

impl Executor {
    pub(crate) fn run_job(
        &mut self,
        job: &Locked,
        auth: &WorkerAuth,
        logs: &mut LogRows,
    ) -> Completion {
        let spec = &job.spec;
        let cancelled = self
            .cancels
            .take(spec.job_id)
            .or_else(|| job.cancelled_by.clone());
        if let Some(by) = cancelled {
            let message = format!("cancelled by {by}; the job was not run");
            logs.line(spec, "warning", format!("job {message}"));
            return Completion::not_run(spec.job_id, message);
        }
        if !job.project_active || !job.task_active {
            let what = if !job.project_active {
                format!("project {} is inactive", job.project)
            } else {
                format!("task {} is inactive", job.task.as_deref().unwrap_or("?"))
            };
            let message = format!("{what}; the job was not run");
            logs.line(spec, "warning", format!("job cancelled: {message}"));
            return Completion::not_run(spec.job_id, message);
        }

        let mut lines = Vec::new();
        let started_at = Utc::now();
        let mask = self.runtime.masker(spec.project_id);
        // What the lines written as they happen said, for the outcome below.
        let streamed = Rc::new(RefCell::new(Logged::default()));
        let sink: LogSink = {
            let (mask, streamed) = (mask.clone(), streamed.clone());
            let mut send = self.log_stream.sender(auth, spec.job_id, spec.started_at);
            Box::new(move |line: LogLine| {
                let line = line.masked(&mask).normalized();
                streamed.borrow_mut().note(&line);
                send(line);
            })
        };
        self.status.start(spec.job_id, job.hard_limit);
        let outcome = {
            let mut db = JobDb::new(&self.job, &self.rt, auth);
            let (runtime, projects) = (&mut self.runtime, self.projects.as_mut());
            with_log_sink(sink, || runtime.run(spec, &mut db, &mut lines, projects))
        };
        self.status.idle();
        let mask = self.runtime.masker(spec.project_id);

        let mut logged = streamed.take();
        for line in &lines {
            logged.note(&line.clone().masked(&mask));
        }
        let Logged {
            warning: logged_warning,
            error: logged_error,
        } = logged;
        let outcome = mask_outcome(outcome, &mask);
        // A try that ends done has its start and end lines derived from the job row
        // (sync.log_view); any other try's start is written, before its own lines.
        if !matches!(outcome, Outcome::Done { .. }) || logged_error.is_some() {
            let message = format!(
                "job started: {}() of task {} (try {})",
                spec.handler,
                job.task.as_deref().unwrap_or("-"),
                spec.try_no
            );
            logs.line_at(spec, "info", message, started_at);
        }
        for line in lines {
            logs.push_masked(spec, line, &mask);
        }
        if let Outcome::Cancelled { message } = &outcome {
            // Stopped by sync_cancel_job while running; the runtime rolled its writes
            // back, whatever the code did with the exception.
            let by = self
                .cancels
                .take(spec.job_id)
                .unwrap_or_else(|| "sync_cancel_job".into());
            let message = if message.trim().is_empty() {
                format!("cancelled by {by} while running")
            } else {
                format!("cancelled by {by} while running:\n{}", message.trim_end())
            };
            logs.line(spec, "warning", format!("job {message}"));
            return Completion {
                id: spec.job_id,
                state: TryEnd::Cancelled,
                error: Some(message),
                result: None,
                warning: logged_warning,
            };
        }
        self.cancels.take(spec.job_id);
        let outcome = match (outcome, logged_error) {
            (Outcome::Done { .. }, Some(message)) => Outcome::Failed {
                message: format!("the job logged an error: {message}"),
            },
            (o, _) => o,
        };
        match outcome {
            Outcome::Done { result, warning } => {
                let warning = warning || logged_warning;
                Completion {
                    id: spec.job_id,
                    state: TryEnd::Done,
                    error: None,
                    result,
                    warning,
                }
            }
            // Retry or give up: sync.batch_finish decides (sync.may_try_again) and
            // writes the line saying which.
            Outcome::Retry { message } => Completion {
                id: spec.job_id,
                state: TryEnd::Retry,
                error: Some(message),
                result: None,
                warning: logged_warning,
            },
            Outcome::Failed { message } | Outcome::Cancelled { message } => {
                logs.line(spec, "error", format!("job failed: {}", message.trim_end()));
                Completion {
                    id: spec.job_id,
                    state: TryEnd::Failed,
                    error: Some(message),
                    result: None,
                    warning: logged_warning,
                }
            }
        }
    }
}

/// What a job's log lines said that decides its outcome: a warning marks it, an error
/// fails it (the first error's text, masked).
#[derive(Default)]
struct Logged {
    warning: bool,
    error: Option<String>,
}

impl Logged {
    fn note(&mut self, line: &LogLine) {
        match line.level.as_str() {
            "warning" => self.warning = true,
            "error" if self.error.is_none() => self.error = Some(line.message.clone()),
            _ => {}
        }
    }
}

/// The outcome with every secret value of the project masked.
pub(crate) fn mask_outcome(outcome: Outcome, mask: &Masker) -> Outcome {
    match outcome {
        Outcome::Done { result, warning } => Outcome::Done {
            result: result.map(|r| mask.json(r)),
            warning,
        },
        Outcome::Retry { message } => Outcome::Retry {
            message: mask.string(message),
        },
        Outcome::Failed { message } => Outcome::Failed {
            message: mask.string(message),
        },
        Outcome::Cancelled { message } => Outcome::Cancelled {
            message: mask.string(message),
        },
    }
}
