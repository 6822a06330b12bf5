// CSRF: every POST (but the sign-in form's, which has its own token) must carry the
// session's token, in the `csrf` form field, a `csrf` query parameter or X-CSRF-Token.
use super::person::session_id;
use super::{ConsoleError, ConsoleState, BODY_LIMIT};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

pub async fn check(State(state): State<ConsoleState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD)
        || matches!(req.uri().path(), "/signin" | "/console/signin")
    {
        return next.run(req).await;
    }
    let Some(want) = session_id(&state, req.headers()).and_then(|id| state.sessions.csrf_of(&id))
    else {
        return Redirect::to("/console/signin?expired=1").into_response();
    };
    let given_outside_body = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| field(req.uri().query().unwrap_or(""), "csrf"));
    let urlencoded = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let (req, given) = if given_outside_body.is_some() || !urlencoded {
        (req, given_outside_body)
    } else {
        let (parts, body) = req.into_parts();
        let Some(bytes) = read_limited(body).await else {
            return too_large();
        };
        let given = field(&String::from_utf8_lossy(&bytes), "csrf");
        (Request::from_parts(parts, Body::from(bytes)), given)
    };
    if given.is_some_and(|g| same(&g, &want)) {
        next.run(req).await
    } else {
        ConsoleError::new(
            StatusCode::FORBIDDEN,
            "this form's security token (CSRF) is missing or not this session's",
        )
        .with_hint("reload the page and submit the form again")
        .into_response()
    }
}

/// The body, or None when it is over BODY_LIMIT. The rest of a larger one (up to 64 MiB)
/// is read and dropped first, so that the browser, still sending, gets the answer
/// instead of a broken connection.
async fn read_limited(body: Body) -> Option<bytes::Bytes> {
    use http_body_util::BodyExt;
    const DRAIN: usize = 64 << 20;
    let mut body = body;
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return None };
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= BODY_LIMIT {
                kept.extend_from_slice(&data);
            } else if seen > DRAIN {
                return None;
            }
        }
    }
    (seen <= BODY_LIMIT).then(|| kept.into())
}

/// The 413 page for a body over the console's limit.
pub fn too_large() -> Response {
    ConsoleError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the form sent more than {} MiB, the console's limit",
            BODY_LIMIT >> 20
        ),
    )
    .with_hint("send less: task code and project files are far smaller than this")
    .into_response()
}

/// The first value of `name` in an urlencoded string.
fn field(encoded: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(encoded.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Compare digests: no early exit on the first differing byte.
pub fn same(a: &str, b: &str) -> bool {
    use sha2::{Digest, Sha256};
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}
