// POST /button/press of the admin API: press a button and answer with its outcome,
// through the same procedure as SQL users (sync_press_button), on a connection of its own.
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Press {
    project: String,
    button: String,
    /// How long to wait for the outcome (default 30 s, at most 5 min).
    timeout_ms: Option<u64>,
}

const MAX_TIMEOUT_MS: u64 = 300_000;

fn answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// 200 `{"result": ...}` when the handler returned; 422 with the error and traceback
/// when it raised; 504 when it did not end in time (the job stays queued); 404 for an
/// unknown button, 409 for an inactive one; 503 without a database.
pub async fn press(database_url: &str, body: Press) -> Response {
    let timeout = format!(
        "{} milliseconds",
        body.timeout_ms.unwrap_or(30_000).min(MAX_TIMEOUT_MS)
    );
    // One connection per press: a press may wait for up to timeout_ms, and must not hold
    // the API's shared connection meanwhile.
    let client = match crate::pg::connect(database_url, "sync_worker admin API button").await {
        Ok(c) => c,
        Err(e) => {
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": format!("the database is unreachable: {e}") }),
            )
        }
    };
    // CALL goes through the simple protocol (the procedure commits the job before it
    // waits), which takes no parameters: the database quotes the values itself.
    let call: String = match client
        .query_one(
            "SELECT pg_catalog.format('CALL sync_press_button(%L, %L, NULL, %L::interval)', $1::text, $2::text, $3::text)",
            &[&body.project, &body.button, &timeout],
        )
        .await
    {
        Ok(row) => row.get(0),
        Err(e) => return db_error(&e),
    };
    match client.simple_query(&call).await {
        Ok(messages) => {
            let result = messages.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
                _ => None,
            });
            let result: Value = result
                .flatten()
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or(Value::Null);
            answer(StatusCode::OK, json!({ "result": result }))
        }
        Err(e) => db_error(&e),
    }
}

fn db_error(e: &tokio_postgres::Error) -> Response {
    let Some(db) = e.as_db_error() else {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": crate::pg::describe(e) }),
        );
    };
    let status = match db.code().code() {
        "38000" => StatusCode::UNPROCESSABLE_ENTITY,
        "57014" => StatusCode::GATEWAY_TIMEOUT,
        "P0002" => StatusCode::NOT_FOUND,
        "55000" => StatusCode::CONFLICT,
        "42501" => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    answer(
        status,
        json!({
            "error": db.message(),
            "detail": db.detail(),
            "hint": db.hint(),
            "sqlstate": db.code().code(),
        }),
    )
}
