// The webhook route `<base_url>/sync/webhook/<token>`: looks the token up (an unknown
// one is refused before the body is read), takes a place in the bounded queue (503 with
// Retry-After when full), reads the body (size limited), checks the signature, hands the
// call to the supervisor's webhook executors and sends back their answer.
//
// The lookup (token_lookup.rs) runs on its own connection as the worker's login, which
// may read signing secrets; the executors that run handlers never see them.
use super::token_lookup::{TokenLookup, Unavailable};
use crate::shared::{Shared, SupervisorCommand};
use crate::webhook_call::{WebhookCall, WebhookReply};
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
use tokio::sync::{oneshot, Semaphore};

/// Extra time past the hard limit before a call is given up on here (the supervisor
/// normally answers first: it kills the executor at the hard limit).
const REPLY_MARGIN: Duration = Duration::from_secs(15);
/// What a sender is told to wait when the queue is full.
const RETRY_AFTER_SECS: u64 = 1;
struct Hooks {
    state: Shared,
    tokens: TokenLookup,
    /// Calls accepted and not answered yet (webhook_queue_size): a permit is taken
    /// before the body is read, so bodies held in memory are bounded too.
    slots: Arc<Semaphore>,
}

type Ctx = Arc<Hooks>;

pub fn router(state: Shared) -> Router {
    let ctx = Arc::new(Hooks {
        tokens: TokenLookup::start(
            &state.cfg.database_url,
            state.cfg.webhook_time_limit.as_secs_f64(),
        ),
        slots: Arc::new(Semaphore::new(state.cfg.webhook_queue_size)),
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

async fn answer(ctx: &Hooks, token: String, peer: SocketAddr, request: Request) -> Response {
    let state = &ctx.state;
    // Unknown, inactive and implausible tokens get the same answer, and their body is
    // never read.
    if !plausible_token(&token) {
        return json_error(StatusCode::NOT_FOUND, "not found");
    }
    let (trigger, signing_secret) = match ctx.tokens.find(&token).await {
        Ok(Some(found)) => found,
        Ok(None) => return json_error(StatusCode::NOT_FOUND, "not found"),
        Err(Unavailable) => {
            return unavailable("the database is unreachable; send the request again later")
        }
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
