// The webhook route `<base_url>/sync/webhook/<token>`: looks the token up (an unknown
// one is refused before the body is read), takes a place in the bounded queue (503 with
// Retry-After when full), reads the body (size limited), checks the signature, hands the
// call to the supervisor's webhook executors and sends back their answer.
//
// The lookup runs on this server's own connection as the worker's login, which may read
// signing secrets; the executors that run handlers never see them.
use crate::pg::Reconnect;
use crate::protocol::{WebhookCall, WebhookReply, WebhookTrigger};
use crate::state::{Shared, SupervisorCommand};
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Mutex, Semaphore};

/// Extra time past the hard limit before a call is given up on here (the supervisor
/// normally answers first: it kills the executor at the hard limit).
const REPLY_MARGIN: Duration = Duration::from_secs(15);
/// What a sender is told to wait when the queue is full.
const RETRY_AFTER_SECS: u64 = 1;
/// A known token's trigger is reused this long without asking the database again: a
/// busy webhook then costs one lookup a second, not one per call. Switching a trigger,
/// its task or its project off (or changing its token) takes effect within this time.
const LOOKUP_TTL: Duration = Duration::from_secs(1);
/// Most tokens remembered; the memory is cleared when full.
const LOOKUP_CACHE_MAX: usize = 10_000;

type Found = (WebhookTrigger, Option<String>);

/// A webhook trigger looked up by its token: active, with an active task and project.
const LOOKUP_SQL: &str = "
SELECT w.id, w.name, w.project_id, p.version, w.task_id, w.content_type, w.signing_secret,
       p.name, t.name,
       pg_catalog.date_part('epoch', LEAST(coalesce(t.time_limit, $2::float8 * interval '1 second'),
                                           sync.max_time_limit()))::float8,
       coalesce((SELECT s.value FROM sync.setting s WHERE s.key = 'base_url'), '')
FROM sync.webhook_trigger w
JOIN sync.task t ON t.id = w.task_id
JOIN sync.project p ON p.id = w.project_id
WHERE w.token = $1 AND w.active AND t.active AND p.active";

struct Hooks {
    state: Shared,
    db: Mutex<Reconnect>,
    /// LOOKUP_SQL prepared on the current connection (one parse, not one per call).
    lookup: Mutex<Option<(Arc<tokio_postgres::Client>, tokio_postgres::Statement)>>,
    /// Recently found triggers by token (see LOOKUP_TTL); unknown tokens are not kept.
    found: std::sync::Mutex<std::collections::HashMap<String, (Instant, Found)>>,
    /// Calls accepted and not answered yet (webhook_queue_size): a permit is taken
    /// before the body is read, so bodies held in memory are bounded too.
    slots: Arc<Semaphore>,
}

type Ctx = Arc<Hooks>;

pub fn router(state: Shared) -> Router {
    let ctx = Arc::new(Hooks {
        db: Mutex::new(Reconnect::new(
            &state.cfg.database_url,
            "sync_worker webhooks",
        )),
        slots: Arc::new(Semaphore::new(state.cfg.webhook_queue_size)),
        lookup: Mutex::new(None),
        found: std::sync::Mutex::new(std::collections::HashMap::new()),
        state,
    });
    Router::new()
        .route("/sync/webhook/{token}", any(handle))
        .fallback(not_found)
        .with_state(ctx)
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        serde_json::json!({ "error": message }).to_string(),
    )
        .into_response()
}

fn unavailable(message: &str) -> Response {
    let mut r = json_error(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut()
        .insert("retry-after", HeaderValue::from(RETRY_AFTER_SECS));
    r
}

async fn not_found(State(ctx): State<Ctx>) -> Response {
    ctx.state.metrics.webhook_answered(404, 0.0);
    json_error(StatusCode::NOT_FOUND, "not found")
}

fn plausible_token(token: &str) -> bool {
    (16..=128).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

async fn handle(
    State(ctx): State<Ctx>,
    Path(token): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let arrived = Instant::now();
    let response = answer(&ctx, token, peer, request).await;
    ctx.state
        .metrics
        .webhook_answered(response.status().as_u16(), arrived.elapsed().as_secs_f64());
    response
}

/// The trigger of `token` (with its signing secret), None when there is no active one,
/// Err when the database cannot be asked.
async fn lookup(ctx: &Hooks, token: &str) -> Result<Option<Found>, ()> {
    {
        let found = ctx.found.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, f)) = found.get(token) {
            if at.elapsed() < LOOKUP_TTL {
                return Ok(Some(f.clone()));
            }
        }
    }
    let answer = lookup_in_db(ctx, token).await?;
    let mut found = ctx.found.lock().unwrap_or_else(|e| e.into_inner());
    match &answer {
        Some(f) => {
            if found.len() >= LOOKUP_CACHE_MAX {
                found.clear();
            }
            found.insert(token.to_string(), (Instant::now(), f.clone()));
        }
        None => {
            found.remove(token);
        }
    }
    Ok(answer)
}

async fn lookup_in_db(ctx: &Hooks, token: &str) -> Result<Option<Found>, ()> {
    let client = ctx.db.lock().await.shared().await.ok_or(())?;
    let statement = {
        let mut cached = ctx.lookup.lock().await;
        match cached.as_ref() {
            Some((c, st)) if Arc::ptr_eq(c, &client) => st.clone(),
            _ => {
                let st = client.prepare(LOOKUP_SQL).await.map_err(|e| {
                    tracing::warn!(
                        "webhooks: cannot prepare the token lookup: {}",
                        crate::pg::describe(&e)
                    );
                })?;
                *cached = Some((client.clone(), st.clone()));
                st
            }
        }
    };
    let default_limit = ctx.state.cfg.webhook_time_limit.as_secs_f64();
    match client
        .query_opt(&statement, &[&token, &default_limit])
        .await
    {
        Ok(row) => Ok(row.map(|r| {
            (
                WebhookTrigger {
                    id: r.get(0),
                    name: r.get(1),
                    project_id: r.get(2),
                    project_version: r.get(3),
                    task_id: r.get(4),
                    content_type: r.get(5),
                    project: r.get(7),
                    task: r.get(8),
                    time_limit: r.get(9),
                    base_url: r.get(10),
                },
                r.get::<_, Option<String>>(6).filter(|s| !s.is_empty()),
            )
        })),
        Err(e) => {
            tracing::warn!(
                "webhooks: cannot look a token up: {}",
                crate::pg::describe(&e)
            );
            ctx.db.lock().await.failed(&e);
            Err(())
        }
    }
}

async fn answer(ctx: &Hooks, token: String, peer: SocketAddr, request: Request) -> Response {
    let state = &ctx.state;
    // Unknown, inactive and implausible tokens get the same answer, and their body is
    // never read.
    if !plausible_token(&token) {
        return json_error(StatusCode::NOT_FOUND, "not found");
    }
    let (trigger, signing_secret) = match lookup(ctx, &token).await {
        Ok(Some(found)) => found,
        Ok(None) => return json_error(StatusCode::NOT_FOUND, "not found"),
        Err(()) => return unavailable("the database is unreachable; send the request again later"),
    };
    let Ok(permit) = ctx.slots.clone().try_acquire_owned() else {
        return unavailable("too many webhook calls are waiting; send the request again later");
    };
    let (parts, body) = request.into_parts();
    let limit = state.cfg.max_body_size;
    let too_large = || {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the request body is larger than this server accepts ({limit} bytes, max_body_size)"
            ),
        )
    };
    let declared = parts
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            let is_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if is_limit {
                return too_large();
            }
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the request body: {e}"),
            );
        }
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let refused = signing_secret
        .and_then(|secret| verify_signature(&secret, &headers, &body).err())
        .map(|why| (401, why));
    let call = WebhookCall {
        id: state.call_id(),
        token,
        trigger,
        refused,
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers,
        remote_addr: peer.ip().to_string(),
        body: body.to_vec(),
    };
    let (tx, rx) = oneshot::channel();
    if state
        .commands
        .send(SupervisorCommand::Webhook(Box::new(call), tx))
        .is_err()
    {
        return unavailable("the worker is stopping");
    }
    let wait = state.cfg.webhook_hard_limit() + REPLY_MARGIN;
    let reply = tokio::time::timeout(wait, rx).await;
    drop(permit);
    match reply {
        Ok(Ok(reply)) => into_response(reply),
        Ok(Err(_)) => unavailable("the worker is stopping"),
        Err(_) => unavailable("no webhook executor answered in time"),
    }
}

/// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>` (GitHub's format).
fn verify_signature(secret: &str, headers: &[(String, String)], body: &[u8]) -> Result<(), String> {
    let given = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-hub-signature-256"))
        .map(|(_, v)| v.as_str());
    let Some(given) = given else {
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

fn into_response(reply: WebhookReply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    for (name, value) in reply.headers {
        // The executor checked them; a bad one is dropped rather than failing the answer.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            h.append(n, v);
        }
    }
    response
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
}
