// One batch of webhook calls in a webhook executor, in one transaction: parse bodies,
// run handle_webhook(httprequest), record job rows.
//
// Each call gets a job row (state running in the batch's transaction, then done or
// failed with its log lines), written and committed with the handler's own writes;
// answers go out only after the commit. The HTTP server already looked the token up
// (unknown or inactive ones got a 404 there) and checked the signature: a call it
// refused (401) arrives here only to be recorded as a failed job.
use crate::executor::job_batch::{complete, BatchError, Completion};
use crate::executor::log_rows::LogRows;
use crate::executor::protocol::{WebhookCall, WebhookReply, WebhookTrigger, WorkerAuth};
use crate::executor::Executor;
use crate::http::request_body::{header, parse};
use crate::job_state::TryEnd;
use crate::python::db::JobDb;
use crate::python::{JobSpec, LogLine, Outcome, WebhookRequest, WebhookResponse};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// Transmission log lines keep at most this much of a body.
const LOG_BODY_LIMIT: usize = 64 << 10;

/// A call with a known trigger: rejected (400/401) or to be run.
struct Accepted<'a> {
    call: &'a WebhookCall,
    trigger: &'a WebhookTrigger,
    request: Result<WebhookRequest, (u16, String)>,
}

impl Executor {
    /// Run a batch of webhook calls for worker `auth.worker`; one answer per call.
    /// `caller` (the worker's login) is the user of their job rows.
    pub fn run_webhooks(
        &mut self,
        auth: &WorkerAuth,
        caller: &str,
        calls: &[WebhookCall],
    ) -> Vec<WebhookReply> {
        match self.try_webhooks(auth, caller, calls) {
            Ok(replies) => replies,
            Err(BatchError::Sql(e)) if calls.len() > 1 => {
                // A commit that failed (say, a deferred constraint of one handler's
                // writes): each call again alone, so only the guilty one fails.
                let _ = self.rt.block_on(self.job.batch_execute("ROLLBACK"));
                tracing::warn!(
                    "webhook batch failed ({}); running its {} calls one by one",
                    crate::pg::describe(&e),
                    calls.len()
                );
                calls
                    .iter()
                    .flat_map(|c| self.run_webhooks(auth, caller, std::slice::from_ref(c)))
                    .collect()
            }
            Err(e) => {
                let lost = matches!(e, BatchError::Lost(_));
                if !lost {
                    let _ = self.rt.block_on(self.job.batch_execute("ROLLBACK"));
                }
                tracing::error!("webhook batch failed: {e}");
                calls
                    .iter()
                    .map(|c| {
                        if lost {
                            WebhookReply::error(
                                c.id,
                                503,
                                "the database connection was lost; send the request again",
                            )
                        } else {
                            WebhookReply::error(c.id, 500, "the webhook handler failed")
                        }
                    })
                    .collect()
            }
        }
    }

    fn try_webhooks(
        &mut self,
        auth: &WorkerAuth,
        caller: &str,
        calls: &[WebhookCall],
    ) -> Result<Vec<WebhookReply>, BatchError> {
        let mut accepted = Vec::with_capacity(calls.len());
        for call in calls {
            let request = match &call.refused {
                Some((status, why)) => Err((*status, why.clone())),
                None => self.rt.block_on(parse(call, &call.trigger)),
            };
            accepted.push(Accepted {
                call,
                trigger: &call.trigger,
                request,
            });
        }
        let started_at = Utc::now();
        let rows = self
            .rt
            .block_on(self.insert_rows(&accepted, auth, caller, started_at))?;
        let mut done = Vec::with_capacity(accepted.len());
        let mut logs = LogRows::default();
        let mut replies = HashMap::new();
        for (a, row) in accepted.iter().zip(rows) {
            let job_id: i64 = row.get(0);
            let mut spec = self.spec(a, job_id, caller, started_at);
            spec.run_as = row.get(1);
            spec.run_as_problem = row.get(2);
            let _span = tracing::info_span!(
                "webhook",
                job = job_id,
                project = %a.trigger.project,
                task = %a.trigger.task,
                trigger = %a.trigger.name,
            )
            .entered();
            let (reply, completion) = self.run_call(a, &spec, auth, &mut logs);
            replies.insert(a.call.id, reply);
            done.push(completion);
        }
        self.rt.block_on(complete(
            &self.job,
            &mut self.statements,
            auth,
            &done,
            &logs,
        ))?;
        Ok(order(calls, replies))
    }

    /// The calls' job rows (sync.batch_webhook_jobs), in a new transaction: (id, run_as,
    /// run_as_problem) in call order.
    async fn insert_rows(
        &self,
        accepted: &[Accepted<'_>],
        auth: &WorkerAuth,
        caller: &str,
        started_at: DateTime<Utc>,
    ) -> Result<Vec<tokio_postgres::Row>, BatchError> {
        let trigger: Vec<i64> = accepted.iter().map(|a| a.trigger.id).collect();
        let args: Vec<Value> = accepted
            .iter()
            .map(|a| {
                json!({
                    "method": a.call.method,
                    "path": redact_token(&a.call.path, &a.call.token),
                    "query": a.call.query,
                    "content_type": header(&a.call.headers, "content-type"),
                    "remote_addr": a.call.remote_addr,
                    "size": a.call.body.len(),
                })
            })
            .collect();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
            &auth.worker,
            &auth.token,
            &trigger,
            &args,
            &started_at,
            &caller,
        ];
        let (begin, rows) = tokio::join!(
            self.job.batch_execute("BEGIN"),
            self.job.query(
                "SELECT * FROM sync.batch_webhook_jobs($1, $2, $3, $4, $5, $6::text::name)",
                &params
            ),
        );
        begin?;
        Ok(rows?)
    }

    fn spec(&self, a: &Accepted<'_>, job_id: i64, user: &str, at: DateTime<Utc>) -> JobSpec {
        let soft = match a.trigger.time_limit {
            Some(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s),
            _ => self.soft_time_limit,
        };
        JobSpec {
            job_id,
            project_id: a.trigger.project_id,
            project_version: a.trigger.project_version,
            task_id: Some(a.trigger.task_id),
            trigger_kind: Some("webhook".into()),
            trigger_name: Some(a.trigger.name.clone()),
            handler: "handle_webhook".into(),
            args: Value::Null,
            user_name: user.to_string(),
            lang: None,
            try_no: 1,
            max_retries: 0,
            started_at: at,
            soft_time_limit: soft,
            run_as: None,
            run_as_problem: None,
        }
    }

    /// Run one accepted call (or record why it was rejected): its answer and completion.
    fn run_call(
        &mut self,
        a: &Accepted<'_>,
        spec: &JobSpec,
        auth: &WorkerAuth,
        logs: &mut LogRows,
    ) -> (WebhookReply, Completion) {
        let call = a.call;
        // The request may carry a secret of the project (a token in a header): masked
        // like everything the handler logs, once the project is known.
        let request_line = transmission("data_in", &call.remote_addr, request_text(call));
        logs.line(
            spec,
            "info",
            format!(
                "webhook call started: handle_webhook() of task {} ({} {})",
                a.trigger.task, call.method, a.trigger.name
            ),
        );
        let request = match &a.request {
            Ok(r) => r,
            Err((status, why)) => {
                logs.push_masked(spec, request_line, &self.runtime.masker(spec.project_id));
                logs.line(
                    spec,
                    "error",
                    format!("webhook call refused ({status}): {why}"),
                );
                tracing::warn!("webhook call refused ({status}): {why}");
                let public = if *status == 401 {
                    "invalid or missing signature".to_string()
                } else {
                    why.clone()
                };
                let mut reply = WebhookReply::error(call.id, *status, &public);
                reply.job_id = Some(spec.job_id);
                reply.project = Some(a.trigger.project.clone());
                return (
                    reply,
                    Completion {
                        id: spec.job_id,
                        state: TryEnd::Failed,
                        error: Some(format!("request refused ({status}): {why}")),
                        result: None,
                        warning: false,
                    },
                );
            }
        };
        let mut lines: Vec<LogLine> = Vec::new();
        let hard_limit = spec.soft_time_limit + self.hard_margin;
        self.status.start(call.id as i64, hard_limit);
        let (outcome, response) = {
            let mut db = JobDb::new(&self.job, &self.rt, auth);
            self.runtime
                .run_webhook(spec, request, &mut db, &mut lines, self.projects.as_mut())
        };
        self.status.idle();
        let mask = self.runtime.masker(spec.project_id);
        logs.push_masked(spec, request_line, &mask);
        let warning = lines.iter().any(|l| l.level == "warning");
        for line in lines {
            logs.push_masked(spec, line, &mask);
        }
        let outcome = crate::executor::job_try::mask_outcome(outcome, &mask);
        let (state, error, status, resp) = match (outcome, response) {
            (Outcome::Done { .. }, Some(resp)) => match check_headers(&resp) {
                Ok(()) => (TryEnd::Done, None, resp.status, Some(resp)),
                Err(why) => (TryEnd::Failed, Some(why), 500, None),
            },
            (Outcome::Done { .. }, None) => (
                TryEnd::Failed,
                Some("the handler gave no response".to_string()),
                500,
                None,
            ),
            (Outcome::Retry { message }, _) => (TryEnd::Failed, Some(message), 503, None),
            (Outcome::Failed { message } | Outcome::Cancelled { message }, _) => {
                (TryEnd::Failed, Some(message), 500, None)
            }
        };
        let mut reply = match resp {
            Some(r) => WebhookReply {
                id: call.id,
                status: r.status,
                headers: r.headers,
                body: r.body,
                job_id: None,
                project: None,
            },
            None if status == 503 => {
                WebhookReply::error(call.id, 503, "the handler asked to be called again later")
            }
            None => WebhookReply::error(call.id, 500, "the webhook handler failed"),
        };
        reply.job_id = Some(spec.job_id);
        reply.project = Some(a.trigger.project.clone());
        logs.push_masked(
            spec,
            transmission("data_out", &call.remote_addr, response_text(&reply)),
            &mask,
        );
        let result = match &error {
            None => Some(json!({ "status": reply.status })),
            Some(_) => None,
        };
        match &error {
            None => logs.line(
                spec,
                if warning { "warning" } else { "info" },
                format!(
                    "webhook call done ({}){}",
                    reply.status,
                    if warning { " with warnings" } else { "" }
                ),
            ),
            Some(e) => {
                tracing::warn!(
                    "webhook call failed: {}",
                    e.lines().last().unwrap_or_default()
                );
                logs.line(
                    spec,
                    "error",
                    format!("webhook call failed ({status}): {}", e.trim_end()),
                );
            }
        }
        (
            reply,
            Completion {
                id: spec.job_id,
                state,
                error,
                result,
                warning,
            },
        )
    }
}

/// Replies in the calls' order.
fn order(calls: &[WebhookCall], mut replies: HashMap<u64, WebhookReply>) -> Vec<WebhookReply> {
    calls
        .iter()
        .map(|c| {
            replies
                .remove(&c.id)
                .unwrap_or_else(|| WebhookReply::error(c.id, 500, "the webhook handler failed"))
        })
        .collect()
}

/// The path without the token: tokens are credentials and stay out of logs and rows.
fn redact_token(path: &str, token: &str) -> String {
    path.replace(token, "<token>")
}

fn transmission(kind: &str, peer: &str, message: String) -> LogLine {
    LogLine {
        level: "info".into(),
        kind: kind.into(),
        recipient: Some(peer.to_string()),
        message,
        at: Utc::now(),
    }
}

fn body_text(body: &[u8]) -> String {
    let cut = &body[..body.len().min(LOG_BODY_LIMIT)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if body.len() > LOG_BODY_LIMIT {
        text.push_str(&format!("\n... ({} bytes in all)", body.len()));
    }
    text
}

fn request_text(call: &WebhookCall) -> String {
    let path = redact_token(&call.path, &call.token);
    let query = if call.query.is_empty() {
        String::new()
    } else {
        format!("?{}", call.query)
    };
    let ctype = header(&call.headers, "content-type").unwrap_or("-");
    format!(
        "{} {path}{query} ({ctype})\n{}",
        call.method,
        body_text(&call.body)
    )
}

fn response_text(reply: &WebhookReply) -> String {
    format!("{}\n{}", reply.status, body_text(&reply.body))
}

/// Response headers the HTTP layer can send (a handler's mistake fails the call).
fn check_headers(resp: &WebhookResponse) -> Result<(), String> {
    for (name, value) in &resp.headers {
        if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || axum::http::HeaderValue::from_str(value).is_err()
        {
            return Err(format!(
                "the handler returned an invalid response header {name:?}: {value:?}"
            ));
        }
    }
    Ok(())
}
