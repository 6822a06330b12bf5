// A webhook call as it travels: received by the HTTP server (its trigger looked up, its
// signature checked), queued by the supervisor, run by a webhook executor; and its reply.
use serde::{Deserialize, Serialize};

/// The trigger a webhook call is for, as the supervisor looked it up (before reading
/// the request body) on its own connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WebhookTrigger {
    pub id: i64,
    pub name: String,
    pub project_id: i64,
    pub project_version: i64,
    pub task_id: i64,
    /// json or form.
    pub content_type: String,
    pub project: String,
    pub task: String,
    /// The handler's soft time limit in seconds: the task's time_limit, else the
    /// worker's webhook_time_limit, clamped to max_time_limit.
    pub time_limit: Option<f64>,
    /// The base_url setting (the request's full URL starts with it).
    pub base_url: String,
}

/// One webhook request, as received (and its token checked) by the supervisor's HTTP
/// server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WebhookCall {
    /// Unique within the supervisor; what the status page shows while it runs.
    pub id: u64,
    pub token: String,
    pub trigger: WebhookTrigger,
    /// Refused by the HTTP server (status, why; e.g. 401 for a bad signature): only
    /// recorded as a failed job.
    pub refused: Option<(u16, String)>,
    pub method: String,
    pub path: String,
    /// The raw query string (without `?`).
    pub query: String,
    /// Header names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub remote_addr: String,
    #[serde(with = "base64_bytes")]
    pub body: Vec<u8>,
}

/// The response to one webhook call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WebhookReply {
    pub id: u64,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    #[serde(with = "base64_bytes")]
    pub body: Vec<u8>,
    /// The job row recording the call, if one was written.
    pub job_id: Option<i64>,
    /// Project of the trigger, for metrics and log lines.
    pub project: Option<String>,
}

impl WebhookReply {
    /// A JSON error answer that reveals nothing about the trigger.
    pub fn error(id: u64, status: u16, message: &str) -> WebhookReply {
        WebhookReply {
            id,
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default(),
            job_id: None,
            project: None,
        }
    }
}

/// Bodies travel as base64 text in the JSON frames (a JSON array of numbers would be
/// four times as long).
mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}
