// The signed-in person, as an axum extractor: their role, its kind and their own
// database connection. A request without a live session is sent to the sign-in page.
use super::session::COOKIE;
use super::ConsoleState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use std::sync::Arc;
use tokio_postgres::Client;

/// The most a role may do with pg_sync, from the sync_* roles it is a member of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RoleKind {
    User,
    Developer,
    Admin,
}

impl RoleKind {
    pub fn name(self) -> &'static str {
        match self {
            RoleKind::User => "sync_user",
            RoleKind::Developer => "sync_developer",
            RoleKind::Admin => "sync_admin",
        }
    }

    /// What `current_user` is a member of; None for a role that is none of them.
    pub async fn of_current_user(db: &Client) -> Result<Option<RoleKind>, tokio_postgres::Error> {
        let row = db
            .query_one(
                "SELECT pg_catalog.pg_has_role(current_user, 'sync_admin', 'MEMBER'),
                        pg_catalog.pg_has_role(current_user, 'sync_developer', 'MEMBER'),
                        pg_catalog.pg_has_role(current_user, 'sync_user', 'MEMBER')",
                &[],
            )
            .await?;
        Ok(if row.get(0) {
            Some(RoleKind::Admin)
        } else if row.get(1) {
            Some(RoleKind::Developer)
        } else if row.get(2) {
            Some(RoleKind::User)
        } else {
            None
        })
    }
}

/// The signed-in person. Every query made for them goes through `db`, their own
/// connection as their role, so PostgreSQL decides what they may see and do.
#[derive(Clone)]
pub struct Person {
    pub role: String,
    pub kind: RoleKind,
    pub db: Arc<Client>,
    /// The token every form of theirs carries (see csrf.rs).
    pub csrf: String,
}

impl Person {
    /// At least a developer: may edit projects, tasks and triggers, retry and cancel.
    pub fn can_edit(&self) -> bool {
        self.kind >= RoleKind::Developer
    }
}

/// The value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The session id of a request, if its cookie is signed by us.
pub fn session_id(state: &ConsoleState, headers: &HeaderMap) -> Option<String> {
    cookie(headers, COOKIE).and_then(|c| state.sessions.verify(c))
}

impl FromRequestParts<ConsoleState> for Person {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Person, Response> {
        let found = session_id(state, &parts.headers).and_then(|id| state.sessions.touch(&id));
        match found {
            Some((role, kind, db, csrf)) => Ok(Person {
                role,
                kind,
                db,
                csrf,
            }),
            None => {
                // Back to where they were after signing in; only console paths, so the
                // sign-in page never redirects elsewhere.
                // Nested under /console, `parts.uri` lost the prefix; the original has it.
                let uri = parts
                    .extensions
                    .get::<axum::extract::OriginalUri>()
                    .map_or(&parts.uri, |o| &o.0);
                let next = uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .filter(|p| p.starts_with("/console/"))
                    .unwrap_or("/console/");
                let had_cookie = cookie(&parts.headers, COOKIE).is_some();
                let mut to = String::from("/console/signin?");
                if had_cookie {
                    to.push_str("expired=1&");
                }
                to.push_str("next=");
                to.extend(form_urlencoded::byte_serialize(next.as_bytes()));
                Err(Redirect::to(&to).into_response())
            }
        }
    }
}
