// One batch of webhook calls in a webhook executor, in one transaction: look the tokens
// up, check signatures, parse bodies, run handle_webhook(httprequest), record job rows.
//
// Each call gets a job row (state running in the batch's transaction, then done or
// failed with its log lines), written and committed with the handler's own writes;
// answers go out only after the commit. Unknown or inactive tokens get a 404 and leave
// no trace: the answer must not tell an unknown token from an inactive trigger.
use crate::batch::{complete, BatchError, Completion, Executor, LogRows};
use crate::protocol::{WebhookCall, WebhookReply};
use crate::python::db::JobDb;
use crate::python::{JobSpec, LogLine, Outcome, WebhookRequest, WebhookResponse};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::HashMap;
use std::time::Duration;

/// Transmission log lines keep at most this much of a body.
const LOG_BODY_LIMIT: usize = 64 << 10;

const LOOKUP_SQL: &str = "
SELECT w.token, w.id, w.name, w.project_id, p.version, w.task_id, w.content_type,
       w.signing_secret, p.name, t.name, extract(epoch FROM t.time_limit)::float8
FROM sync.webhook_trigger w
JOIN sync.task t ON t.id = w.task_id
JOIN sync.project p ON p.id = w.project_id
WHERE w.token = ANY ($1) AND w.active AND t.active AND p.active";

const CONTEXT_SQL: &str = "
SELECT current_user::text, (SELECT value FROM sync.setting WHERE key = 'base_url')";

/// Job ids for the calls, taken from the table's sequence up front so that each call's
/// row, log lines and add_job children can name it.
const IDS_SQL: &str = "
SELECT nextval(pg_catalog.pg_get_serial_sequence('sync.job', 'id'))
FROM generate_series(1, $1::integer)";

/// The job rows of the accepted calls, running until the batch completes them (running
/// rows wake no worker: see sync.notify_new_jobs).
const INSERT_SQL: &str = "
INSERT INTO sync.job (id, project_id, task_id, trigger_kind, trigger_id, trigger_name, handler,
                      args, state, priority, attempts, max_retries, worker, started_at)
SELECT u.id, u.project_id, u.task_id, 'webhook', u.trigger_id, u.trigger_name, 'handle_webhook',
       u.args, 'running', 0, 1, 0, $7, $8
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::jsonb[])
     AS u(id, project_id, task_id, trigger_id, trigger_name, args)";

/// A webhook trigger, as looked up by token.
struct Trigger {
    id: i64,
    name: String,
    project_id: i64,
    project_version: i64,
    task_id: i64,
    content_type: String,
    signing_secret: Option<String>,
    project: String,
    task: String,
    time_limit: Option<f64>,
}

struct Lookup {
    triggers: HashMap<String, Trigger>,
    /// The worker's role: who webhook jobs run for.
    user: String,
    base_url: Option<String>,
    ids: Vec<i64>,
}

/// A call with a known trigger: rejected (400/401) or to be run.
struct Accepted<'a> {
    call: &'a WebhookCall,
    trigger: &'a Trigger,
    request: Result<WebhookRequest, (u16, String)>,
}

impl Executor {
    /// Run a batch of webhook calls for worker `worker`; one answer per call.
    pub fn run_webhooks(&mut self, worker: i32, calls: &[WebhookCall]) -> Vec<WebhookReply> {
        match self.try_webhooks(worker, calls) {
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
                    .flat_map(|c| self.run_webhooks(worker, std::slice::from_ref(c)))
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

    async fn lookup(&self, calls: &[WebhookCall]) -> Result<Lookup, BatchError> {
        let tokens: Vec<&str> = calls.iter().map(|c| c.token.as_str()).collect();
        let n = calls.len() as i32;
        let lookup_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&tokens];
        let ids_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&n];
        let (begin, rows, ctx, ids) = tokio::join!(
            self.job.batch_execute("BEGIN"),
            self.job.query(LOOKUP_SQL, &lookup_params),
            self.job.query_one(CONTEXT_SQL, &[]),
            self.job.query(IDS_SQL, &ids_params),
        );
        begin?;
        let ctx = ctx?;
        let ids = ids?.iter().map(|r| r.get(0)).collect();
        let triggers = rows?
            .into_iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    Trigger {
                        id: r.get(1),
                        name: r.get(2),
                        project_id: r.get(3),
                        project_version: r.get(4),
                        task_id: r.get(5),
                        content_type: r.get(6),
                        signing_secret: r.get(7),
                        project: r.get(8),
                        task: r.get(9),
                        time_limit: r.get(10),
                    },
                )
            })
            .collect();
        Ok(Lookup {
            triggers,
            user: ctx.get(0),
            base_url: ctx.get(1),
            ids,
        })
    }

    fn try_webhooks(
        &mut self,
        worker: i32,
        calls: &[WebhookCall],
    ) -> Result<Vec<WebhookReply>, BatchError> {
        let Lookup {
            triggers,
            user,
            base_url,
            ids,
        } = self.rt.block_on(self.lookup(calls))?;
        let base_url = base_url.unwrap_or_default();
        let mut replies: HashMap<u64, WebhookReply> = HashMap::new();
        let mut accepted = Vec::new();
        for call in calls {
            match triggers.get(&call.token) {
                None => {
                    replies.insert(call.id, WebhookReply::error(call.id, 404, "not found"));
                }
                Some(trigger) => accepted.push(Accepted {
                    call,
                    trigger,
                    request: self.rt.block_on(check_and_parse(call, trigger, &base_url)),
                }),
            }
        }
        if accepted.is_empty() {
            self.rt.block_on(self.job.batch_execute("COMMIT"))?;
            return Ok(order(calls, replies));
        }

        let started_at = Utc::now();
        let ids: Vec<i64> = ids.into_iter().take(accepted.len()).collect();
        self.rt
            .block_on(self.insert_rows(&accepted, &ids, worker, started_at))?;
        let mut done = Vec::with_capacity(accepted.len());
        let mut logs = LogRows::default();
        for (a, job_id) in accepted.iter().zip(ids) {
            let spec = self.spec(a, job_id, &user, started_at);
            let _span = tracing::info_span!(
                "webhook",
                job = job_id,
                project = %a.trigger.project,
                task = %a.trigger.task,
                trigger = %a.trigger.name,
            )
            .entered();
            let (reply, completion) = self.run_call(a, &spec, &mut logs);
            replies.insert(a.call.id, reply);
            done.push(completion);
        }
        self.rt.block_on(complete(&self.job, &done, &logs))?;
        Ok(order(calls, replies))
    }

    async fn insert_rows(
        &self,
        accepted: &[Accepted<'_>],
        ids: &[i64],
        worker: i32,
        started_at: DateTime<Utc>,
    ) -> Result<(), BatchError> {
        let project: Vec<i64> = accepted.iter().map(|a| a.trigger.project_id).collect();
        let task: Vec<i64> = accepted.iter().map(|a| a.trigger.task_id).collect();
        let trigger: Vec<i64> = accepted.iter().map(|a| a.trigger.id).collect();
        let name: Vec<&str> = accepted.iter().map(|a| a.trigger.name.as_str()).collect();
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
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
            &ids,
            &project,
            &task,
            &trigger,
            &name,
            &args,
            &worker,
            &started_at,
        ];
        self.job.execute(INSERT_SQL, &params).await?;
        Ok(())
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
            attempts: 1,
            max_retries: 0,
            started_at: at,
            soft_time_limit: soft,
        }
    }

    /// Run one accepted call (or record why it was rejected): its answer and completion.
    fn run_call(
        &mut self,
        a: &Accepted<'_>,
        spec: &JobSpec,
        logs: &mut LogRows,
    ) -> (WebhookReply, Completion) {
        let call = a.call;
        logs.push(
            spec,
            transmission("data_in", &call.remote_addr, request_text(call)),
        );
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
                        state: "failed",
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
            let mut db = JobDb::new(&self.job, &self.rt);
            self.runtime.run_webhook(spec, request, &mut db, &mut lines)
        };
        self.status.idle();
        let warning = lines.iter().any(|l| l.level == "warning");
        for line in lines {
            logs.push(spec, line);
        }
        let (state, error, status, resp) = match (outcome, response) {
            (Outcome::Done { .. }, Some(resp)) => match check_headers(&resp) {
                Ok(()) => ("done", None, resp.status, Some(resp)),
                Err(why) => ("failed", Some(why), 500, None),
            },
            (Outcome::Done { .. }, None) => (
                "failed",
                Some("the handler gave no response".to_string()),
                500,
                None,
            ),
            (Outcome::Retry { message }, _) => ("failed", Some(message), 503, None),
            (Outcome::Failed { message }, _) => ("failed", Some(message), 500, None),
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
        logs.push(
            spec,
            transmission("data_out", &call.remote_addr, response_text(&reply)),
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

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
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

/// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>` (GitHub's format).
fn verify_signature(secret: &str, headers: &[(String, String)], body: &[u8]) -> Result<(), String> {
    let Some(given) = header(headers, "x-hub-signature-256") else {
        return Err(
            "the trigger has a signing secret but the request has no X-Hub-Signature-256 header"
                .into(),
        );
    };
    let Some(hex_sig) = given.trim().strip_prefix("sha256=") else {
        return Err("X-Hub-Signature-256 is not of the form sha256=<hex>".into());
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return Err("X-Hub-Signature-256 is not hexadecimal".into());
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return Err("the signing secret cannot be used as an HMAC key".into());
    };
    mac.update(body);
    mac.verify_slice(&sig)
        .map_err(|_| "X-Hub-Signature-256 does not match the body (wrong signing secret?)".into())
}

/// The request as handle_webhook sees it, or (status, why) when it must be refused.
async fn check_and_parse(
    call: &WebhookCall,
    trigger: &Trigger,
    base_url: &str,
) -> Result<WebhookRequest, (u16, String)> {
    if let Some(secret) = trigger.signing_secret.as_deref().filter(|s| !s.is_empty()) {
        verify_signature(secret, &call.headers, &call.body).map_err(|why| (401, why))?;
    }
    let ctype = header(&call.headers, "content-type").unwrap_or("");
    let essence = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let mut req = WebhookRequest {
        method: call.method.clone(),
        path: call.path.clone(),
        url: format!(
            "{base_url}{}{}",
            call.path,
            if call.query.is_empty() {
                String::new()
            } else {
                format!("?{}", call.query)
            }
        ),
        query: call.query.clone(),
        args: pairs(call.query.as_bytes()),
        headers: call.headers.clone(),
        remote_addr: call.remote_addr.clone(),
        body: call.body.clone(),
        content_type: trigger.content_type.clone(),
        ..Default::default()
    };
    let is_json = essence == "application/json" || essence.ends_with("+json");
    if is_json || (essence.is_empty() && trigger.content_type == "json") {
        if !call.body.iter().all(u8::is_ascii_whitespace) {
            req.json = Some(
                serde_json::from_slice(&call.body)
                    .map_err(|e| (400, format!("the request body is not valid JSON: {e}")))?,
            );
        }
    } else if essence == "application/x-www-form-urlencoded" {
        if std::str::from_utf8(&call.body).is_err() {
            return Err((400, "the form body is not UTF-8 text".into()));
        }
        req.form = pairs(&call.body);
    } else if essence == "multipart/form-data" {
        let boundary = multer::parse_boundary(ctype).map_err(|e| {
            (
                400,
                format!("malformed multipart/form-data Content-Type: {e}"),
            )
        })?;
        let (form, files) = multipart(call.body.clone(), boundary)
            .await
            .map_err(|e| (400, format!("malformed multipart/form-data body: {e}")))?;
        req.form = form;
        req.files = files;
    }
    Ok(req)
}

fn pairs(text: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(text)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

type Files = Vec<(String, String, String, Vec<u8>)>;

async fn multipart(
    body: Vec<u8>,
    boundary: String,
) -> Result<(Vec<(String, String)>, Files), multer::Error> {
    let stream = futures_util::stream::once(async move {
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(body))
    });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut form = Vec::new();
    let mut files = Vec::new();
    while let Some(field) = mp.next_field().await? {
        let name = field.name().unwrap_or_default().to_string();
        match field.file_name().map(str::to_string) {
            Some(filename) => {
                let ctype = field
                    .content_type()
                    .map_or("application/octet-stream".to_string(), |m| m.to_string());
                let data = field.bytes().await?;
                files.push((name, filename, ctype, data.to_vec()));
            }
            None => {
                let text = field.text().await?;
                form.push((name, text));
            }
        }
    }
    Ok((form, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let body = b"{\"zen\": \"hi\"}";
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let h = |v: &str| vec![("x-hub-signature-256".to_string(), v.to_string())];
        assert!(verify_signature("s3cret", &h(&good), body).is_ok());
        assert!(verify_signature("other", &h(&good), body).is_err());
        assert!(verify_signature("s3cret", &h("sha256=zz"), body).is_err());
        assert!(verify_signature("s3cret", &h("md5=00"), body).is_err());
        assert!(verify_signature("s3cret", &[], body).is_err());
    }

    #[test]
    fn multipart_fields_and_files() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XX\r\n\
Content-Disposition: form-data; name=\"f\"; filename=\"x.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XX--\r\n";
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (form, files) = rt.block_on(multipart(body.to_vec(), "XX".into())).unwrap();
        assert_eq!(form, vec![("a".to_string(), "1".to_string())]);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].1, "x.txt");
        assert_eq!(files[0].3, b"hello");
        assert!(rt
            .block_on(multipart(b"--XX\r\ngarbage".to_vec(), "XX".into()))
            .is_err());
    }
}
