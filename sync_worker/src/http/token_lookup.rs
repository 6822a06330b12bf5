// Webhook tokens looked up before a request's body is read. Every request waits for a
// fresh answer from the database (switching a trigger off takes effect at once); the
// requests waiting together share one query, and queries are pipelined.
use crate::pg::Reconnect;
use crate::webhook_call::WebhookTrigger;
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};

/// A trigger found by its token, and its signing secret.
pub type Found = (WebhookTrigger, Option<String>);

/// Why a lookup got no answer: the database is unreachable.
#[derive(Debug)]
pub struct Unavailable;

type Answer = Result<Option<Found>, Unavailable>;

/// Most tokens in one query.
const WAVE: usize = 256;

/// Active triggers (with an active task and project) for the tokens `$1`; `$2` is the
/// default soft time limit, clamped like a task's own.
const LOOKUP_SQL: &str = "
SELECT w.token, w.id, w.name, w.project_id, p.version, w.task_id, w.content_type,
       w.signing_secret, p.name, t.name,
       pg_catalog.date_part('epoch', LEAST(coalesce(t.time_limit, $2::float8 * interval '1 second'),
                                           sync.max_time_limit()))::float8,
       coalesce((SELECT s.value FROM sync.setting s WHERE s.key = 'base_url'), '')
FROM sync.webhook_trigger w
JOIN sync.task t ON t.id = w.task_id
JOIN sync.project p ON p.id = w.project_id
WHERE w.token = ANY ($1) AND w.active AND t.active AND p.active";

#[derive(Clone)]
pub struct TokenLookup {
    tx: mpsc::UnboundedSender<(String, oneshot::Sender<Answer>)>,
}

impl TokenLookup {
    /// Start the lookup task on its own connection (as the worker's login: it reads
    /// signing secrets).
    pub fn start(database_url: &str, default_time_limit: f64) -> TokenLookup {
        let (tx, rx) = mpsc::unbounded_channel();
        let db = Reconnect::new(database_url, "sync_worker webhooks");
        tokio::spawn(run(db, rx, default_time_limit));
        TokenLookup { tx }
    }

    pub async fn find(&self, token: &str) -> Answer {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((token.to_string(), tx))
            .map_err(|_| Unavailable)?;
        rx.await.unwrap_or(Err(Unavailable))
    }
}

async fn run(
    db: Reconnect,
    mut rx: mpsc::UnboundedReceiver<(String, oneshot::Sender<Answer>)>,
    default_time_limit: f64,
) {
    let conn = std::sync::Arc::new(tokio::sync::Mutex::new(Conn { db, prepared: None }));
    while let Some(first) = rx.recv().await {
        let mut wave = vec![first];
        while wave.len() < WAVE {
            match rx.try_recv() {
                Ok(next) => wave.push(next),
                Err(_) => break,
            }
        }
        // Not awaited here: the next wave's query goes out while this one runs (the
        // connection pipelines them).
        let conn = conn.clone();
        tokio::spawn(async move {
            let mut tokens: Vec<&str> = wave.iter().map(|(t, _)| t.as_str()).collect();
            tokens.sort_unstable();
            tokens.dedup();
            let found = query(&conn, &tokens, default_time_limit).await;
            for (token, reply) in wave {
                let answer = match &found {
                    Ok(map) => Ok(map.get(&token).cloned()),
                    Err(Unavailable) => Err(Unavailable),
                };
                let _ = reply.send(answer);
            }
        });
    }
}

struct Conn {
    db: Reconnect,
    /// LOOKUP_SQL prepared on the current connection.
    prepared: Option<(
        std::sync::Arc<tokio_postgres::Client>,
        tokio_postgres::Statement,
    )>,
}

async fn query(
    conn: &tokio::sync::Mutex<Conn>,
    tokens: &[&str],
    default_time_limit: f64,
) -> Result<HashMap<String, Found>, Unavailable> {
    let (client, statement) = {
        let mut c = conn.lock().await;
        let client = c.db.shared().await.ok_or(Unavailable)?;
        let statement = match &c.prepared {
            Some((cl, st)) if std::sync::Arc::ptr_eq(cl, &client) => st.clone(),
            _ => match client.prepare(LOOKUP_SQL).await {
                Ok(st) => {
                    c.prepared = Some((client.clone(), st.clone()));
                    st
                }
                Err(e) => {
                    tracing::warn!(
                        "webhooks: cannot look tokens up: {}",
                        crate::pg::describe(&e)
                    );
                    c.db.failed(&e);
                    return Err(Unavailable);
                }
            },
        };
        (client, statement)
    };
    match client
        .query(&statement, &[&tokens, &default_time_limit])
        .await
    {
        Ok(rows) => Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    (
                        WebhookTrigger {
                            id: r.get(1),
                            name: r.get(2),
                            project_id: r.get(3),
                            project_version: r.get(4),
                            task_id: r.get(5),
                            content_type: r.get(6),
                            project: r.get(8),
                            task: r.get(9),
                            time_limit: r.get(10),
                            base_url: r.get(11),
                        },
                        r.get::<_, Option<String>>(7).filter(|s| !s.is_empty()),
                    ),
                )
            })
            .collect()),
        Err(e) => {
            tracing::warn!(
                "webhooks: cannot look tokens up: {}",
                crate::pg::describe(&e)
            );
            conn.lock().await.db.failed(&e);
            Err(Unavailable)
        }
    }
}
