// The admin HTTP API: health, status, version, metrics, waking the claim loop, jobs and
// buttons. Every route but /health/* needs the bearer token when one is set; the web
// console, under /console/, has its own sign-in.
use crate::pg::Reconnect;
use crate::shared::{Shared, SupervisorCommand};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

struct Admin {
    state: Shared,
    /// One connection for the API's queries (they are few and short).
    db: Mutex<Reconnect>,
}

type Ctx = Arc<Admin>;

pub fn router(state: Shared) -> Router {
    let ctx = Arc::new(Admin {
        db: Mutex::new(Reconnect::new(
            &state.cfg.database_url,
            "sync_worker admin API",
        )),
        state,
    });
    let protected = Router::new()
        .route("/service/status", get(status))
        .route("/service/version", get(version))
        .route("/service/processjobs", post(process_jobs))
        .route("/job/create", post(create_job))
        .route("/button/press", post(press_button))
        .route("/job/info/{id}", get(job_info))
        .route("/job/list", get(job_list))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), require_token));
    let console_on = ctx.state.cfg.console;
    let console_state = ctx.state.clone();
    let api = Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/health", get(ready))
        .merge(protected)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .with_state(ctx);
    // The console signs people in itself (as PostgreSQL roles), so the bearer token is
    // not asked there; its routes all live under /console/ and reach nothing above.
    if console_on {
        api.merge(crate::console::router(console_state))
    } else {
        api
    }
}

/// An error answer: `{"error": "..."}` with a status.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn db(e: &tokio_postgres::Error) -> ApiError {
        let status = if crate::pg::is_connection_error(e) {
            StatusCode::SERVICE_UNAVAILABLE
        } else if e
            .as_db_error()
            .is_some_and(|d| d.code().code().starts_with("22") || d.code().code().starts_with("23"))
        {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError::new(status, crate::pg::describe(e))
    }

    fn unreachable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is unreachable",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

async fn require_token(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    let Some(token) = &ctx.state.cfg.admin_token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 9110 section 11.1): `bearer` works too.
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let ok = given.is_some_and(|g| {
        use hmac::digest::Digest;
        // Compare digests: equal length, no early exit on the first differing byte.
        sha2::Sha256::digest(g.as_bytes()) == sha2::Sha256::digest(token.as_bytes())
    });
    if ok {
        return next.run(req).await;
    }
    let mut resp = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "this API needs `Authorization: Bearer <admin_token>`",
    )
    .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    resp
}

/// Run `f` on the API's connection; a lost connection is dropped and made again next time.
async fn with_db<T>(
    ctx: &Admin,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    f: impl FnOnce(Vec<tokio_postgres::Row>) -> T,
) -> Result<T, ApiError> {
    let mut db = ctx.db.lock().await;
    let Some(client) = db.client().await else {
        return Err(ApiError::unreachable());
    };
    match client.query(sql, params).await {
        Ok(rows) => Ok(f(rows)),
        Err(e) => {
            let err = ApiError::db(&e);
            db.failed(&e);
            Err(err)
        }
    }
}

/// Longer than this without a turn of the supervisor loop (it turns at least every
/// 100 ms) and the worker is stuck: a liveness probe should restart it.
const LIVE_LIMIT: Duration = Duration::from_secs(10);

/// Liveness: the supervisor loop turns. A database outage does not make the worker
/// unhealthy (it reconnects by itself), so this does not touch the database.
async fn live(State(ctx): State<Ctx>) -> Response {
    let since = ctx.state.since_loop_turned();
    if since <= LIVE_LIMIT {
        Json(json!({ "status": "ok" })).into_response()
    } else {
        let why = format!(
            "the supervisor loop has not turned for {} s",
            since.as_secs()
        );
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "stuck", "reason": why })),
        )
            .into_response()
    }
}

/// Readiness (also /health): the database answers, the worker serves the queue, and
/// every executor is connected. A load balancer sends webhooks only to ready workers.
async fn ready(State(ctx): State<Ctx>) -> Response {
    let st = ctx.state.status();
    let executors_up =
        st.executors_ready == st.executors && st.webhook_executors_ready == st.webhook_executors;
    let executors = json!({
        "jobs": format!("{} of {} ready", st.executors_ready, st.executors),
        "webhooks": format!("{} of {} ready", st.webhook_executors_ready, st.webhook_executors),
    });
    let database = with_db(&ctx, "SELECT 1", &[], |_| ()).await;
    let ok = database.is_ok() && st.state == "running" && executors_up;
    let body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "database": match &database { Ok(()) => "reachable".to_string(), Err(e) => e.message.clone() },
        "worker": st.state,
        "executors": executors,
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// Pending jobs are those of sync.job_queue; a running job's row says pending (its batch
/// holds it locked): the jobs whose handler runs now are those sync.job_started lists,
/// counted apart from the pending ones.
const COUNTS_SQL: &str = "
WITH r AS (SELECT count(*) AS n FROM sync.job_started s
           JOIN sync.job_queue q ON q.id = s.job_id)
SELECT greatest(count(*) - (SELECT n FROM r), 0),
       greatest(count(*) FILTER (WHERE q.eta <= (SELECT sync.clock())) - (SELECT n FROM r), 0),
       (SELECT n FROM r)
FROM sync.job_queue q";

/// Counted as jobs finish (sync.job_finished_count): no index of sync.job serves
/// finished_at. Whole minutes: the oldest counted is the one 24 hours ago.
const FINISHED_SQL: &str = "
SELECT state, sum(n)::bigint FROM sync.job_finished_count
WHERE minute > now() - interval '24 hours 1 minute'
GROUP BY state";

async fn status(State(ctx): State<Ctx>) -> Result<Json<Value>, ApiError> {
    let st = ctx.state.status();
    let sched = ctx.state.scheduler();
    let queue = with_db(&ctx, COUNTS_SQL, &[], |rows| {
        rows.first().map(|r| {
            json!({
                "pending": r.get::<_, i64>(0),
                "due": r.get::<_, i64>(1),
                "running": r.get::<_, i64>(2),
            })
        })
    })
    .await;
    let finished = with_db(&ctx, FINISHED_SQL, &[], |rows| {
        let mut m = serde_json::Map::new();
        for s in ["done", "failed", "cancelled"] {
            m.insert(s.into(), json!(0));
        }
        for r in rows {
            m.insert(r.get::<_, String>(0), json!(r.get::<_, i64>(1)));
        }
        Value::Object(m)
    })
    .await;
    let database = match (&queue, &finished) {
        (Ok(_), Ok(_)) => json!({ "reachable": true }),
        (Err(e), _) | (_, Err(e)) => json!({ "reachable": false, "error": e.message }),
    };
    let max = ctx.state.cfg.max_time_drift.as_millis() as f64;
    Ok(Json(json!({
        "worker": {
            "id": st.worker_id,
            "state": st.state,
            "hostname": ctx.state.hostname,
            "pid": std::process::id(),
            "version": crate::version::VERSION,
            "environment": ctx.state.cfg.environment.as_str(),
            "started_at": ctx.state.started_at,
            "executors": {
                "jobs": st.executors,
                "jobs_ready": st.executors_ready,
                "jobs_busy": st.executors_busy,
                "webhooks": st.webhook_executors,
                "webhooks_ready": st.webhook_executors_ready,
            },
            "jobs_claimed_waiting": st.jobs_ready,
            "jobs_completed": st.jobs_completed,
            "webhook_calls_waiting": st.webhook_calls_waiting,
            "webhook_listen": ctx.state.webhook_addr.map(|a| a.to_string()),
        },
        "jobs": queue.ok().flatten(),
        "jobs_finished_last_24h": finished.ok(),
        "scheduler": {
            "last_run_at": sched.last_run_at,
            "last_enqueued": sched.last_enqueued,
            "error": sched.last_error,
        },
        "clock": {
            "drift_ms": sched.drift_ms.map(|d| d.round()),
            "measured_at": sched.drift_measured_at,
            "max_time_drift_ms": max,
            "ok": sched.drift_ms.map(|d| d.abs() <= max),
        },
        "database": database,
    })))
}

async fn version(State(ctx): State<Ctx>) -> Json<Value> {
    let extension = with_db(
        &ctx,
        "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_sync'",
        &[],
        |rows| rows.first().map(|r| r.get::<_, String>(0)),
    )
    .await
    .ok()
    .flatten();
    Json(json!({
        "version": crate::version::VERSION,
        "git_commit": crate::version::GIT_COMMIT,
        "extension_version": extension,
    }))
}

async fn process_jobs(State(ctx): State<Ctx>) -> Response {
    let _ = ctx.state.commands.send(SupervisorCommand::ProcessJobs);
    (StatusCode::ACCEPTED, Json(json!({ "ok": true }))).into_response()
}

async fn metrics(State(ctx): State<Ctx>) -> Response {
    let depth = with_db(&ctx, COUNTS_SQL, &[], |rows| {
        rows.first()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1), r.get::<_, i64>(2)))
    })
    .await;
    if let Ok(Some((pending, due, running))) = depth {
        for (state, n) in [("pending", pending), ("due", due), ("running", running)] {
            ctx.state
                .metrics
                .queue
                .get_or_create(&crate::metrics::StateLabel {
                    state: state.into(),
                })
                .set(n);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.state.metrics.encode(),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewJob {
    project: String,
    task: String,
    handler: String,
    #[serde(default)]
    args: Vec<Value>,
    #[serde(default)]
    kwargs: serde_json::Map<String, Value>,
    priority: Option<i32>,
    eta: Option<DateTime<Utc>>,
    max_retries: Option<i32>,
    description: Option<String>,
    identity_key: Option<String>,
}

const CREATE_SQL: &str = "
SELECT sync.add_job(p.id, t.id, $3, $4, $5, $6, $7, $8, $9, NULL, NULL, NULL, 'job', NULL, NULL)
FROM sync.project p JOIN sync.task t ON t.project_id = p.id
WHERE p.name = $1 AND t.name = $2";

/// POST /job/create: queue `handler(*args, **kwargs)` of a task.
async fn press_button(
    State(ctx): State<Ctx>,
    body: Result<Json<super::buttons::Press>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(press) = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    Ok(super::buttons::press(&ctx.state.cfg.database_url, press).await)
}

async fn create_job(
    State(ctx): State<Ctx>,
    body: Result<Json<NewJob>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(job) = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let valid_name = job
        .handler
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && job
            .handler
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("handler `{}` is not a Python function name", job.handler),
        ));
    }
    if job.priority.is_some_and(|p| p < 0) || job.max_retries.is_some_and(|m| m < 0) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "priority and max_retries must not be negative",
        ));
    }
    let args = json!({ "args": job.args, "kwargs": job.kwargs });
    let id = with_db(
        &ctx,
        CREATE_SQL,
        &[
            &job.project,
            &job.task,
            &job.handler,
            &args,
            &job.priority,
            &job.eta,
            &job.max_retries,
            &job.description,
            &job.identity_key,
        ],
        |rows| rows.first().map(|r| r.get::<_, i64>(0)),
    )
    .await?;
    match id {
        Some(id) => Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("project `{}` has no task `{}`", job.project, job.task),
        )),
    }
}

const INFO_SQL: &str = "
SELECT to_jsonb(j) || jsonb_build_object(
         'project', p.name, 'task', t.name,
         'logs', coalesce((SELECT jsonb_agg(jsonb_build_object(
                      'created_at', l.created_at, 'level', l.level, 'kind', l.kind,
                      'recipient', l.recipient, 'message', l.message) ORDER BY l.created_at, l.id)
                   FROM sync.log_view l WHERE l.job_id = j.id), '[]'))
FROM sync.job j JOIN sync.project p ON p.id = j.project_id
LEFT JOIN sync.task t ON t.id = j.task_id
WHERE j.id = $1";

/// GET /job/info/{id}: the job row, its project and task names and its log lines.
async fn job_info(State(ctx): State<Ctx>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, format!("`{id}` is not a job id")))?;
    let job = with_db(&ctx, INFO_SQL, &[&id], |rows| {
        rows.first().map(|r| r.get::<_, Value>(0))
    })
    .await?;
    job.map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("job {id} does not exist")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    project: Option<String>,
    task: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

const LIST_SQL: &str = concat!(
    "
SELECT jsonb_build_object(
         'id', j.id, 'project', p.name, 'task', t.name, 'trigger_kind', j.trigger_kind,
         'trigger_name', j.trigger_name, 'handler', j.handler, 'state', sync.job_state(j.state, j.id),
         'priority', j.priority, 'eta', j.eta, 'attempts', j.attempts,
         'max_retries', j.max_retries, 'warning', j.warning, 'error', j.error,
         'description', j.description, 'created_at', j.created_at,
         'started_at', j.started_at, 'finished_at', j.finished_at)
FROM sync.job j JOIN sync.project p ON p.id = j.project_id
LEFT JOIN sync.task t ON t.id = j.task_id
WHERE ",
    crate::job_state::job_state_filter!("$1"),
    "
  AND ($2::text IS NULL OR p.name = $2)
  AND ($3::text IS NULL OR t.name = $3)
ORDER BY j.id DESC
LIMIT $4 OFFSET $5"
);

/// GET /job/list?state=&project=&task=&limit=&offset=: newest first.
async fn job_list(
    State(ctx): State<Ctx>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    if let Some(s) = &q.state {
        if !["pending", "running", "done", "failed", "cancelled"].contains(&s.as_str()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("state `{s}` is not one of pending, running, done, failed, cancelled"),
            ));
        }
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "limit must be between 1 and 1000",
        ));
    }
    let offset = q.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "offset must not be negative",
        ));
    }
    // One row more than asked tells whether there is a next page.
    let jobs = with_db(
        &ctx,
        LIST_SQL,
        &[&q.state, &q.project, &q.task, &(limit + 1), &offset],
        |rows| {
            rows.iter()
                .map(|r| r.get::<_, Value>(0))
                .collect::<Vec<_>>()
        },
    )
    .await?;
    let more = jobs.len() as i64 > limit;
    let jobs: Vec<Value> = jobs.into_iter().take(limit as usize).collect();
    Ok(Json(json!({
        "jobs": jobs,
        "limit": limit,
        "offset": offset,
        "next_offset": if more { Some(offset + limit) } else { None },
    })))
}
