// The webhook route `<base_url>/sync/webhook/<token>`: takes the request (body size
// limited), hands it to the supervisor's webhook executors and sends back their answer.
//
// Nothing here knows triggers: the executor looks the token up, checks the signature,
// parses the body and runs the handler, so every answer but 413 comes from one place.
use crate::protocol::{WebhookCall, WebhookReply};
use crate::state::{Shared, SupervisorCommand};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Extra time past the hard limit before a call is given up on here (the supervisor
/// normally answers first: it kills the executor at the hard limit).
const REPLY_MARGIN: Duration = Duration::from_secs(15);

pub fn router(state: Shared) -> Router {
    let limit = state.cfg.max_body_size;
    Router::new()
        .route("/sync/webhook/{token}", any(handle))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        serde_json::json!({ "error": message }).to_string(),
    )
        .into_response()
}

async fn not_found(State(state): State<Shared>) -> Response {
    state.metrics.webhook_answered(404, 0.0);
    json_error(StatusCode::NOT_FOUND, "not found")
}

fn plausible_token(token: &str) -> bool {
    (16..=128).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

async fn handle(
    State(state): State<Shared>,
    Path(token): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let arrived = Instant::now();
    let response = answer(&state, token, peer, method, uri, headers, body).await;
    state
        .metrics
        .webhook_answered(response.status().as_u16(), arrived.elapsed().as_secs_f64());
    response
}

async fn answer(
    state: &Shared,
    token: String,
    peer: SocketAddr,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "the request body is larger than this server accepts ({} bytes, max_body_size)",
                    state.cfg.max_body_size
                ),
            );
        }
        Err(rejection) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the request body: {}", rejection.body_text()),
            );
        }
    };
    if !plausible_token(&token) {
        return json_error(StatusCode::NOT_FOUND, "not found");
    }
    let call = WebhookCall {
        id: state.call_id(),
        token,
        method: method.as_str().to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        remote_addr: peer.ip().to_string(),
        body: body.to_vec(),
    };
    let (tx, rx) = oneshot::channel();
    if state
        .commands
        .send(SupervisorCommand::Webhook(Box::new(call), tx))
        .is_err()
    {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "the worker is stopping");
    }
    let wait = state.cfg.webhook_hard_limit() + REPLY_MARGIN;
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(reply)) => into_response(reply),
        Ok(Err(_)) => json_error(StatusCode::SERVICE_UNAVAILABLE, "the worker is stopping"),
        Err(_) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no webhook executor answered in time",
        ),
    }
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
