// A GitHub hook as the demo tests replay it: payloads of the shapes GitHub's webhook
// documentation shows, sent with GitHub-Hookshot's headers and signed (X-Hub-Signature-256).
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};

/// The repository the demo syncs, and another one of the same organisation.
pub const REPO: &str = "acme/app";
pub const OTHER_REPO: &str = "acme/website";
/// The hook's secret, also the GITHUB trigger's signing secret.
pub const SECRET: &str = "It's a Secret to Everybody";
static DELIVERIES: AtomicU64 = AtomicU64::new(1);

// -- payloads, as GitHub's webhook documentation shows them ------------------------------

pub fn user(login: &str, id: u64, kind: &str) -> Value {
    json!({
        "login": login, "id": id, "node_id": format!("MDQ6VXNlcj{id}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "url": format!("https://api.github.com/users/{login}"),
        "html_url": format!("https://github.com/{login}"),
        "type": kind, "site_admin": false
    })
}

pub fn repository(full_name: &str) -> Value {
    let (owner, name) = full_name.split_once('/').unwrap();
    let id = if full_name == REPO { 1296269 } else { 1300192 };
    json!({
        "id": id, "node_id": format!("MDEwOlJlcG9zaXRvcnk{id}"), "name": name,
        "full_name": full_name, "private": false, "owner": user(owner, 9919, "Organization"),
        "html_url": format!("https://github.com/{full_name}"), "description": null,
        "fork": false, "url": format!("https://api.github.com/repos/{full_name}"),
        "created_at": "2024-01-05T10:00:00Z", "updated_at": "2024-06-01T08:12:44Z",
        "pushed_at": "2024-06-01T08:12:40Z", "homepage": null, "size": 412,
        "stargazers_count": 3, "watchers_count": 3, "language": "Python",
        "has_issues": true, "forks_count": 0, "open_issues_count": 2,
        "visibility": "public", "default_branch": "main"
    })
}

pub fn label(full_name: &str, name: &str) -> Value {
    let color = match name {
        "bug" => "d73a4a",
        "hardware" => "5319e7",
        _ => "0075ca",
    };
    json!({
        "id": 208045946 + name.len() as u64, "node_id": "MDU6TGFiZWwyMDgwNDU5NDY=",
        "url": format!("https://api.github.com/repos/{full_name}/labels/{name}"),
        "name": name, "color": color, "default": name == "bug", "description": null
    })
}

pub fn issue(full_name: &str, number: u64, title: &str, labels: &[&str]) -> Value {
    let api = format!("https://api.github.com/repos/{full_name}/issues/{number}");
    json!({
        "url": api, "repository_url": format!("https://api.github.com/repos/{full_name}"),
        "labels_url": format!("{api}/labels{{/name}}"), "comments_url": format!("{api}/comments"),
        "events_url": format!("{api}/events"),
        "html_url": format!("https://github.com/{full_name}/issues/{number}"),
        "id": 2_300_000_000u64 + number, "node_id": "I_kwDOABCD5c6ABCDE", "number": number,
        "title": title, "user": user("octocat", 583231, "User"),
        "labels": labels.iter().map(|l| label(full_name, l)).collect::<Vec<_>>(),
        "state": "open", "locked": false, "assignee": null, "assignees": [], "milestone": null,
        "comments": 0, "created_at": "2024-06-01T08:12:44Z", "updated_at": "2024-06-01T08:12:44Z",
        "closed_at": null, "author_association": "MEMBER", "active_lock_reason": null,
        "body": format!("Steps to reproduce: {title}"),
        "reactions": {"url": format!("{api}/reactions"), "total_count": 0, "+1": 0, "-1": 0},
        "timeline_url": format!("{api}/timeline"), "performed_via_github_app": null,
        "state_reason": null
    })
}

pub fn comment(full_name: &str, number: u64, id: u64, body: &str) -> Value {
    json!({
        "url": format!("https://api.github.com/repos/{full_name}/issues/comments/{id}"),
        "html_url": format!("https://github.com/{full_name}/issues/{number}#issuecomment-{id}"),
        "issue_url": format!("https://api.github.com/repos/{full_name}/issues/{number}"),
        "id": id, "node_id": "IC_kwDOABCD5c5xYz12", "user": user("hubot", 1000001, "User"),
        "created_at": "2024-06-01T09:00:00Z", "updated_at": "2024-06-01T09:00:00Z",
        "author_association": "CONTRIBUTOR", "body": body,
        "reactions": {"total_count": 0, "+1": 0, "-1": 0}, "performed_via_github_app": null
    })
}

// -- hooks -----------------------------------------------------------------------------

/// A hook on GitHub that calls the demo's GITHUB webhook: of a repository or of the
/// organisation (which sends the events of all its repositories), JSON or form.
pub struct Hook {
    pub url: String,
    pub id: u64,
    pub org: bool,
    pub form: bool,
}

/// One delivery as GitHub keeps it: redelivering sends the same bytes and GUID again.
pub struct Delivery {
    pub guid: String,
    pub event: String,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Hook {
    /// The delivery of `event`: `fields` plus what GitHub adds to every payload
    /// (repository, sender, and organization for an organisation's hook).
    pub fn delivery(&self, event: &str, full_name: Option<&str>, fields: Value) -> Delivery {
        let mut payload = fields;
        if let Some(full_name) = full_name {
            payload["repository"] = repository(full_name);
        }
        if self.org {
            payload["organization"] = json!({
                "login": "acme", "id": 9919, "node_id": "MDEyOk9yZ2FuaXphdGlvbjk5MTk=",
                "url": "https://api.github.com/orgs/acme", "description": "Acme Corp."
            });
        }
        payload["sender"] = user("octocat", 583231, "User");
        let text = payload.to_string();
        let (content_type, body) = if self.form {
            // What GitHub sends for a hook of content type application/x-www-form-urlencoded.
            let mut url = reqwest::Url::parse("http://x/").unwrap();
            url.query_pairs_mut().append_pair("payload", &text);
            let body = url.query().unwrap().to_string();
            ("application/x-www-form-urlencoded", body.into_bytes())
        } else {
            ("application/json", text.into_bytes())
        };
        let n = DELIVERIES.fetch_add(1, Ordering::Relaxed);
        Delivery {
            guid: format!("72d3162e-cc78-11e3-81ab-{n:012x}"),
            event: event.to_string(),
            content_type,
            body,
        }
    }

    pub fn ping(&self) -> Delivery {
        let (kind, repo) = if self.org {
            ("Organization", None)
        } else {
            ("Repository", Some(REPO))
        };
        let content_type = if self.form { "form" } else { "json" };
        let hook = json!({
            "type": kind, "id": self.id, "name": "web", "active": true,
            "events": ["issues", "issue_comment"],
            "config": {"content_type": content_type, "insecure_ssl": "0", "secret": "********", "url": self.url},
            "updated_at": "2024-06-01T08:00:00Z", "created_at": "2024-06-01T08:00:00Z",
            "last_response": {"code": null, "status": "unused", "message": null}
        });
        let zen = json!({"zen": "Design for failure.", "hook_id": self.id, "hook": hook});
        self.delivery("ping", repo, zen)
    }

    /// Send `d` signed with `secret` (None: unsigned); (status, answer).
    pub async fn send_signed(&self, d: &Delivery, secret: Option<&str>) -> (u16, Value) {
        let target = if self.org {
            ("organization", "9919")
        } else {
            ("repository", "1296269")
        };
        let mut req = reqwest::Client::new()
            .post(&self.url)
            .header("Accept", "*/*")
            .header("Content-Type", d.content_type)
            .header("User-Agent", "GitHub-Hookshot/9f1d8c4")
            .header("X-GitHub-Event", &d.event)
            .header("X-GitHub-Delivery", &d.guid)
            .header("X-GitHub-Hook-ID", self.id.to_string())
            .header("X-GitHub-Hook-Installation-Target-Type", target.0)
            .header("X-GitHub-Hook-Installation-Target-ID", target.1)
            .body(d.body.clone());
        if let Some(secret) = secret {
            req = req.header("X-Hub-Signature-256", signature(secret, &d.body));
        }
        let resp = req.send().await.expect("deliver to the worker");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("the worker's answer");
        let answer = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, answer)
    }

    pub async fn send(&self, d: &Delivery) -> (u16, Value) {
        self.send_signed(d, Some(SECRET)).await
    }
}
