// Sign-in and sign-out: a PostgreSQL role and its password open a connection as that
// role (the only check there is: PostgreSQL's), which the new session then keeps.
use super::layout;
use super::person::{cookie, session_id, Person, RoleKind};
use super::session::COOKIE;
use super::{ConsoleError, ConsoleState};
use crate::pg::{connect_login, ConnectError, Login};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::{html, Markup};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};

/// The pre-session cookie that binds a sign-in form to the browser that loaded it.
const PRE_COOKIE: &str = "pg_sync_console_pre";

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/signin", get(form).post(sign_in))
        .route("/signout", post(sign_out))
}

#[derive(Deserialize, Default)]
struct FormQuery {
    next: Option<String>,
    expired: Option<String>,
}

#[derive(Deserialize)]
struct SignIn {
    role: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: String,
}

fn cookie_header(name: &str, value: &str, max_age: Option<u64>) -> String {
    let age = max_age
        .map(|a| format!("; Max-Age={a}"))
        .unwrap_or_default();
    format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict{age}")
}

/// Where to go after signing in: a console path only (never another site).
fn safe_next(next: &str) -> &str {
    if next.starts_with("/console/") && !next.contains("//") && !next.contains('\\') {
        next
    } else {
        "/console/"
    }
}

async fn form(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<FormQuery>,
) -> Response {
    let notice = q
        .expired
        .is_some()
        .then_some("Your session has ended (it expired, or you signed out): sign in again.");
    render(
        &state,
        &headers,
        "",
        q.next.as_deref().unwrap_or(""),
        notice,
        None,
    )
}

/// The sign-in page, setting the pre-session cookie when the browser has none.
fn render(
    state: &ConsoleState,
    headers: &HeaderMap,
    role: &str,
    next: &str,
    notice: Option<&str>,
    error: Option<(StatusCode, Markup)>,
) -> Response {
    let existing = cookie(headers, PRE_COOKIE).and_then(|c| state.sessions.verify(c));
    let pre = existing
        .clone()
        .unwrap_or_else(|| super::session::random_hex(16));
    let body = layout::bare(
        "Sign in",
        html! {
            @if let Some(n) = notice { (layout::notice(n)) }
            form.stack.card method="post" action="/console/signin" {
                input type="hidden" name="csrf" value=(state.sessions.signin_token(&pre));
                input type="hidden" name="next" value=(safe_next(next));
                @if let Some((_, e)) = &error { (e) }
                label for="role" { "PostgreSQL role" }
                input #role type="text" name="role" value=(role) autocomplete="username" required autofocus;
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password";
                p.hint { "Leave the password empty if the database trusts this role." }
                p { button type="submit" { "Sign in" } }
            }
        },
    );
    let status = error.map_or(StatusCode::OK, |(s, _)| s);
    let mut resp = (status, Html(body.into_string())).into_response();
    if existing.is_none() {
        if let Ok(v) = cookie_header(PRE_COOKIE, &state.sessions.sign(&pre), None).parse() {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    resp
}

fn failure(status: StatusCode, message: &str, hint: Option<&str>) -> (StatusCode, Markup) {
    (
        status,
        html! {
            div.field-error role="alert" { (message) @if let Some(h) = hint { div.hint { (h) } } }
        },
    )
}

async fn sign_in(
    State(state): State<ConsoleState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(f): Form<SignIn>,
) -> Response {
    let addr: IpAddr = peer.map_or([0, 0, 0, 0].into(), |Extension(ConnectInfo(a))| a.ip());
    let role = f.role.trim();
    let again = |error| render(&state, &headers, role, &f.next, None, Some(error));
    let pre = cookie(&headers, PRE_COOKIE).and_then(|c| state.sessions.verify(c));
    let token_ok =
        pre.is_some_and(|p| super::csrf::same(&state.sessions.signin_token(&p), &f.csrf));
    if !token_ok {
        return again(failure(
            StatusCode::FORBIDDEN,
            "this sign-in form has expired or was not loaded from this console",
            Some("submit it again from this page"),
        ));
    }
    if role.is_empty() || role.len() > 63 || role.contains('\0') {
        return again(failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            "a role name has 1 to 63 characters",
            None,
        ));
    }
    if let Some(wait) = state.limiter.blocked(addr, role) {
        return again(failure(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "too many failed sign-ins: try again in {} minutes",
                wait.as_secs().div_ceil(60)
            ),
            None,
        ));
    }
    if !state.sessions.room_for(role) {
        return again(failure(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "the console has its most sessions open ({}): try again when one ends",
                state.shared.cfg.console_max_sessions
            ),
            Some("signing out ends a session at once; console_max_sessions sets the limit"),
        ));
    }
    if let Some(problem) = crate::pg::person_login_problem(&state.shared.cfg.database_url, role) {
        tracing::warn!("console: refused a sign-in as `{role}` from {addr}: {problem}");
        return again(failure(
            StatusCode::FORBIDDEN,
            &problem,
            Some("sign in as another role, or point database_url at a TCP address where pg_hba.conf asks for passwords"),
        ));
    }
    let login = Login {
        url: state.shared.cfg.database_url.clone(),
        user: Some(role.to_string()),
        password: Some(f.password.clone()),
    };
    let db = match connect_login(&login, "sync_worker console").await {
        Ok(db) => db,
        Err(ConnectError::Db(e))
            if e.as_db_error()
                .is_some_and(|d| matches!(d.code().code(), "28P01" | "28000")) =>
        {
            state.limiter.failed(addr, role);
            tracing::info!("console: failed sign-in as `{role}` from {addr}");
            // The same words whether the role exists or not.
            return again(failure(
                StatusCode::UNAUTHORIZED,
                "sign-in failed: wrong role or password",
                None,
            ));
        }
        Err(e) => {
            return again(failure(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("cannot connect to the database: {e}"),
                Some("the worker's database_url says where; try again when it answers"),
            ))
        }
    };
    // A page's queries are short; a runaway one should not hold the person's connection.
    let kind = match db
        .batch_execute("SET statement_timeout = '30s'")
        .await
        .map_err(ConsoleError::from)
    {
        Ok(()) => RoleKind::of_current_user(&db)
            .await
            .map_err(ConsoleError::from),
        Err(e) => Err(e),
    };
    let kind = match kind {
        Ok(Some(k)) => k,
        Ok(None) => {
            return again(failure(
                StatusCode::FORBIDDEN,
                &format!(
                    "role `{role}` is not a member of sync_user, sync_developer or sync_admin"
                ),
                Some("an administrator can GRANT one of them to it"),
            ))
        }
        Err(e) => return e.into_response(),
    };
    tracing::info!("console: `{role}` ({}) signed in from {addr}", kind.name());
    let id = state.sessions.create(role.to_string(), kind, db);
    let mut resp = Redirect::to(safe_next(&f.next)).into_response();
    let h = resp.headers_mut();
    for c in [
        cookie_header(COOKIE, &state.sessions.sign(&id), None),
        cookie_header(PRE_COOKIE, "", Some(0)),
    ] {
        if let Ok(v) = c.parse() {
            h.append(header::SET_COOKIE, v);
        }
    }
    resp
}

async fn sign_out(
    State(state): State<ConsoleState>,
    _person: Person,
    headers: HeaderMap,
) -> Response {
    if let Some(id) = session_id(&state, &headers) {
        state.sessions.end(&id);
    }
    let mut resp = Redirect::to("/console/signin").into_response();
    if let Ok(v) = cookie_header(COOKIE, "", Some(0)).parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}
