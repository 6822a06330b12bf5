// The admin HTTP API end to end: real HTTP requests to a running worker for every route,
// with good and bad input, the bearer token, the database going away, and exact metrics.
use pg_sync_tests::python::PyProject;
use pg_sync_tests::{scalar, wait_for, Cluster, TestDb, WorkerProcess};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

const TOKEN: &str = "an-admin-token-0123456789abcdef";

/// A client for one worker's admin API.
struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    async fn of(worker: &WorkerProcess) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: worker.admin_url().await,
            token: None,
        }
    }

    fn with_token(mut self, token: &str) -> Api {
        self.token = Some(token.to_string());
        self
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        answer(self.req(reqwest::Method::GET, path).send().await).await
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        answer(
            self.req(reqwest::Method::POST, path)
                .json(body)
                .send()
                .await,
        )
        .await
    }

    /// GET /metrics as a map from `name{labels}` to value, checking the format.
    async fn metrics(&self) -> HashMap<String, f64> {
        let resp = self
            .req(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status(), 200);
        let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
        let text = resp.text().await.unwrap();
        assert_eq!(text.lines().last(), Some("# EOF"), "{text}");
        parse_metrics(&text)
    }
}

async fn answer(resp: Result<reqwest::Response, reqwest::Error>) -> (u16, Value) {
    let resp = resp.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {l}"));
            (key.to_string(), value)
        })
        .collect()
}

fn error_text(v: &Value) -> String {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {v}"))
        .to_string()
}

/// A worker that is connected and registered (its first claim done).
async fn connected(worker: &WorkerProcess) {
    wait_for("the worker to connect", Duration::from_secs(30), || async {
        worker
            .output()
            .contains("connected to the database as worker")
    })
    .await;
}

#[tokio::test]
async fn the_token_is_required_on_every_route_but_health() {
    let p = PyProject::new("tok").await;
    let worker = WorkerProcess::start_env(
        &p.db.url,
        &["--executors", "1"],
        &[("SYNC_WORKER_ADMIN_TOKEN", TOKEN)],
    );
    let anon = Api::of(&worker).await;
    let routes = [
        ("GET", "/service/status"),
        ("GET", "/service/version"),
        ("POST", "/service/processjobs"),
        ("POST", "/job/create"),
        ("GET", "/job/info/1"),
        ("GET", "/job/list"),
        ("GET", "/metrics"),
    ];
    for (method, path) in routes {
        let method: reqwest::Method = method.parse().unwrap();
        for auth in [
            None,
            Some(format!("Bearer {TOKEN}x")),
            Some("Bearer ".to_string()),
            Some(format!("Basic {TOKEN}")),
            Some(TOKEN.to_string()),
        ] {
            let mut rb = anon.req(method.clone(), path);
            if let Some(a) = &auth {
                rb = rb.header("authorization", a);
            }
            let resp = rb.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{method} {path} with {auth:?}");
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
            let (_, body) = answer(Ok(resp)).await;
            assert!(error_text(&body).contains("Bearer"), "{body}");
        }
    }
    // /health/* is open: load balancers and orchestrators probe it without secrets.
    assert_eq!(anon.get("/health/live").await.0, 200);
    wait_for("/health to be 200", Duration::from_secs(30), || async {
        anon.get("/health").await.0 == 200
    })
    .await;

    // With the token every route answers (the scheme is case-insensitive).
    let api = Api::of(&worker).await.with_token(TOKEN);
    assert_eq!(api.get("/service/status").await.0, 200);
    assert_eq!(api.get("/service/version").await.0, 200);
    assert_eq!(api.post("/service/processjobs", &json!({})).await.0, 202);
    assert_eq!(api.get("/job/list").await.0, 200);
    assert_eq!(api.get("/job/info/1").await.0, 404);
    let (status, body) = api
        .post(
            "/job/create",
            &json!({"project": "tok", "task": "none", "handler": "x"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(!api.metrics().await.is_empty());
    let resp = anon
        .req(reqwest::Method::GET, "/service/version")
        .header("authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn health_is_503_while_the_database_is_down() {
    let cluster = Cluster::start();
    let db = TestDb::on(&cluster.url("postgres")).await;
    let worker = WorkerProcess::start(&db.url, &["--executors", "1"]);
    let api = Api::of(&worker).await;
    connected(&worker).await;
    // Ready once the database answers, the queue is served and every executor is up.
    wait_for(
        "/health/ready to be 200",
        Duration::from_secs(30),
        || async { api.get("/health/ready").await.0 == 200 },
    )
    .await;
    let (status, body) = api.get("/health").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "ok", "database": "reachable", "worker": "running",
               "executors": {"jobs": "1 of 1 ready", "webhooks": "1 of 1 ready"}})
    );
    assert_eq!(
        api.get("/health/live").await,
        (200, json!({"status": "ok"}))
    );

    cluster.stop("fast");
    for route in ["/health", "/health/ready"] {
        let (status, body) = api.get(route).await;
        assert_eq!(status, 503, "{route}: {body}");
        assert_eq!(body["status"], "unavailable");
        assert!(body["database"].as_str().is_some_and(|s| !s.is_empty()));
    }
    // Alive all the same: a database failover must not get the worker restarted.
    assert_eq!(api.get("/health/live").await.0, 200);
    // The rest of the API still answers, saying the database is unreachable.
    let (status, body) = api.get("/service/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["database"]["reachable"], false, "{body}");
    assert_eq!(body["jobs"], Value::Null);
    let (status, body) = api.get("/job/list").await;
    assert_eq!(status, 503, "{body}");
    wait_for(
        "the worker to notice the loss",
        Duration::from_secs(30),
        || async { api.get("/service/status").await.1["worker"]["state"] == "reconnecting" },
    )
    .await;

    // Back again once the database is.
    cluster.restart();
    wait_for(
        "/health to be 200 again",
        Duration::from_secs(30),
        || async { api.get("/health").await.0 == 200 },
    )
    .await;
    wait_for(
        "the worker to run again",
        Duration::from_secs(30),
        || async { api.get("/service/status").await.1["worker"]["state"] == "running" },
    )
    .await;
}

#[tokio::test]
async fn status_reports_the_worker_the_queue_the_scheduler_and_the_clock() {
    let p = PyProject::new("stat").await;
    let code = "def ok():\n    return 1\n\ndef bad():\n    raise ValueError('no')\n\n\
                def slow():\n    time.sleep(120)\n";
    let task = p.task("main", code).await;
    // A poll interval of an hour: only notifications wake this worker.
    let worker = WorkerProcess::start(&p.db.url, &["--executors", "1", "--poll-interval", "1h"]);
    let api = Api::of(&worker).await;
    connected(&worker).await;
    let ok1 = p.job(task, "ok", json!({})).await;
    let ok2 = p.job(task, "ok", json!({})).await;
    let bad = p.job(task, "bad", json!({})).await;
    for id in [ok1, ok2, bad] {
        p.finished(id).await;
    }
    let slow = p.job(task, "slow", json!({})).await;
    wait_for("the slow job to run", Duration::from_secs(30), || async {
        p.scalar::<String>(&format!(
            "SELECT sync.job_state(state, id) FROM sync.job WHERE id = {slow}"
        ))
        .await
            == "running"
    })
    .await;
    // Two jobs in the future; then the clock moves so that one of them is due. Nothing
    // notifies the worker of that, so it stays pending (and due).
    p.job_with(task, "ok", json!({}), "eta", "now() + interval '1 hour'")
        .await;
    p.job_with(task, "ok", json!({}), "eta", "now() + interval '3 hours'")
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    p.sql("INSERT INTO sync.setting VALUES ('clock_offset', '2 hours')")
        .await;
    // A job that finished 25 hours ago is not in the last 24 hours.
    p.job_with(
        task,
        "ok",
        json!({}),
        "state, finished_at",
        "'done', now() - interval '25 hours'",
    )
    .await;

    let (status, st) = api.get("/service/status").await;
    assert_eq!(status, 200, "{st}");
    let worker_id: i32 = p
        .scalar("SELECT id FROM sync.worker WHERE stopped_at IS NULL")
        .await;
    let w = &st["worker"];
    assert_eq!(w["id"], worker_id, "{st}");
    assert_eq!(w["state"], "running");
    assert_eq!(w["pid"], worker.pid());
    assert_eq!(w["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(w["environment"], "dev");
    assert_eq!(w["executors"]["jobs"], 1);
    assert_eq!(w["executors"]["jobs_busy"], 1);
    assert_eq!(w["executors"]["webhooks"], 1);
    assert_eq!(w["jobs_completed"], 3);
    assert_eq!(st["jobs"], json!({"pending": 2, "due": 1, "running": 1}));
    assert_eq!(
        st["jobs_finished_last_24h"],
        json!({"done": 2, "failed": 1, "cancelled": 0})
    );
    assert_eq!(st["database"], json!({"reachable": true}));

    // The scheduler runs every second.
    let sched = &st["scheduler"];
    assert_eq!(sched["error"], Value::Null);
    let at = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("{v}")))
            .unwrap_or_else(|e| panic!("{v}: {e}"))
    };
    let first = at(&sched["last_run_at"]);
    let age = chrono::Utc::now().signed_duration_since(first);
    assert!(age < chrono::TimeDelta::seconds(5), "{age}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, later) = api.get("/service/status").await;
    assert!(at(&later["scheduler"]["last_run_at"]) > first, "{later}");

    // Clock drift measured at start, within bounds on one host.
    let clock = &st["clock"];
    let drift = clock["drift_ms"].as_f64().expect("drift_ms");
    assert!(drift.abs() < 1000.0, "{clock}");
    assert_eq!(clock["max_time_drift_ms"], 1000.0);
    assert_eq!(clock["ok"], true);
    at(&clock["measured_at"]);
}

#[tokio::test]
async fn version_names_the_build_commit_and_the_extension() {
    let db = TestDb::new().await;
    let worker = WorkerProcess::start(&db.url, &["--executors", "1"]);
    let api = Api::of(&worker).await;
    let (status, v) = api.get("/service/version").await;
    assert_eq!(status, 200);
    let out = std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .output()
        .expect("git rev-parse HEAD");
    let head = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(head.len(), 40, "not a git checkout?");
    let c = db.connect().await;
    let ext: String = scalar(
        &c,
        "SELECT extversion FROM pg_extension WHERE extname = 'pg_sync'",
    )
    .await;
    assert_eq!(
        v,
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "git_commit": head,
            "extension_version": ext,
        })
    );
}

#[tokio::test]
async fn job_create_queues_a_job_that_runs() {
    let p = PyProject::new("api").await;
    let code = "def add(a, b, c=0):\n    log('adding')\n    return a + b + c\n";
    p.task("main", code).await;
    let worker = WorkerProcess::start(&p.db.url, &["--executors", "1", "--poll-interval", "200ms"]);
    let api = Api::of(&worker).await;
    let (status, body) = api
        .post(
            "/job/create",
            &json!({
                "project": "api", "task": "main", "handler": "add",
                "args": [2, 3], "kwargs": {"c": 4},
                "priority": 3, "max_retries": 2, "description": "from the API",
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_i64().expect("id");
    assert_eq!(body, json!({ "id": id }));
    let report = p.finished(id).await;
    assert_eq!(report["state"], "done", "{report}");
    assert_eq!(report["result"], 9);
    let row =
        p.client
            .query_one(
                "SELECT trigger_kind, handler, args, priority, max_retries, description FROM sync.job WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
    assert_eq!(row.get::<_, String>(0), "job");
    assert_eq!(row.get::<_, String>(1), "add");
    assert_eq!(
        row.get::<_, Value>(2),
        json!({"args": [2, 3], "kwargs": {"c": 4}})
    );
    assert_eq!(row.get::<_, i32>(3), 3);
    assert_eq!(row.get::<_, i32>(4), 2);
    assert_eq!(row.get::<_, String>(5), "from the API");

    // identity_key: while the first job is pending, the same key gives its id back.
    let later = json!({
        "project": "api", "task": "main", "handler": "add", "args": [1, 1],
        "identity_key": "partner-7", "eta": "2100-01-01T00:00:00Z",
    });
    let (s1, b1) = api.post("/job/create", &later).await;
    let (s2, b2) = api.post("/job/create", &later).await;
    assert_eq!((s1, s2), (201, 201), "{b1} {b2}");
    assert_eq!(b1["id"], b2["id"]);
    let keyed: i64 = p
        .scalar("SELECT count(*) FROM sync.job WHERE identity_key = 'partner-7'")
        .await;
    assert_eq!(keyed, 1);

    // Bad input: nothing is created.
    let before: i64 = p.scalar("SELECT count(*) FROM sync.job").await;
    let base = json!({"project": "api", "task": "main", "handler": "add"});
    let with = |extra: Value| {
        let mut v = base.clone();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    for (body, want, says) in [
        (
            with(json!({"project": "nope"})),
            404,
            "project `nope` has no task `main`",
        ),
        (
            with(json!({"task": "nope"})),
            404,
            "project `api` has no task `nope`",
        ),
        (with(json!({"bogus": 1})), 400, "unknown field `bogus`"),
        (
            json!({"project": "api", "task": "main"}),
            400,
            "missing field `handler`",
        ),
        (with(json!({"priority": "high"})), 400, "priority"),
        (with(json!({"args": {"a": 1}})), 400, "args"),
        (with(json!({"eta": "tomorrow"})), 400, "eta"),
        (
            with(json!({"handler": "drop table"})),
            422,
            "`drop table` is not a Python function name",
        ),
        (
            with(json!({"handler": "1abc"})),
            422,
            "not a Python function name",
        ),
        (
            with(json!({"handler": ""})),
            422,
            "not a Python function name",
        ),
        (with(json!({"priority": -1})), 422, "must not be negative"),
        (
            with(json!({"max_retries": -1})),
            422,
            "must not be negative",
        ),
    ] {
        let (status, answer) = api.post("/job/create", &body).await;
        assert_eq!(status, want, "{body} -> {answer}");
        assert!(error_text(&answer).contains(says), "{body} -> {answer}");
    }
    // Not JSON at all, or not declared as JSON.
    for (ctype, text) in [
        ("application/json", "{not json"),
        (
            "text/plain",
            r#"{"project": "api", "task": "main", "handler": "add"}"#,
        ),
    ] {
        let (status, answer) = answer(
            api.req(reqwest::Method::POST, "/job/create")
                .header("content-type", ctype)
                .body(text)
                .send()
                .await,
        )
        .await;
        assert_eq!(status, 400, "{ctype} {text} -> {answer}");
        error_text(&answer);
    }
    let after: i64 = p.scalar("SELECT count(*) FROM sync.job").await;
    assert_eq!(after, before);
}

#[tokio::test]
async fn job_info_shows_the_job_and_its_logs() {
    let p = PyProject::new("info").await;
    let task = p
        .task(
            "main",
            "def hello(who):\n    log('hello %s' % who, LOG_WARNING)\n    return who\n",
        )
        .await;
    let worker = WorkerProcess::start(&p.db.url, &["--executors", "1", "--poll-interval", "200ms"]);
    let api = Api::of(&worker).await;
    let id = p
        .job_with(
            task,
            "hello",
            json!({"args": ["Ann"]}),
            "trigger_name, description",
            "'manual', 'say hello'",
        )
        .await;
    p.finished(id).await;
    let (status, job) = api.get(&format!("/job/info/{id}")).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["id"], id);
    assert_eq!(job["project"], "info");
    assert_eq!(job["task"], "main");
    assert_eq!(job["handler"], "hello");
    assert_eq!(job["state"], "done");
    assert_eq!(job["warning"], true);
    assert_eq!(job["result"], "Ann");
    assert_eq!(job["trigger_name"], "manual");
    assert_eq!(job["description"], "say hello");
    assert_eq!(job["attempts"], 1);
    let logs: Vec<(String, String)> = job["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .map(|l| {
            (
                l["level"].as_str().unwrap().to_string(),
                l["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let db_logs: Vec<(String, String)> = p
        .logs(id)
        .await
        .into_iter()
        .map(|(level, _, _, message)| (level, message))
        .collect();
    assert_eq!(logs, db_logs);
    assert!(
        logs.contains(&("warning".into(), "hello Ann".into())),
        "{logs:?}"
    );
    assert_eq!(logs.len(), 3, "started, hello, done: {logs:?}");

    for (path, want, says) in [
        (
            "/job/info/999999999".to_string(),
            404,
            "job 999999999 does not exist",
        ),
        ("/job/info/-1".to_string(), 404, "job -1 does not exist"),
        ("/job/info/abc".to_string(), 400, "`abc` is not a job id"),
        ("/job/info/1.5".to_string(), 400, "is not a job id"),
        (
            "/job/info/99999999999999999999".to_string(),
            400,
            "is not a job id",
        ),
    ] {
        let (status, body) = api.get(&path).await;
        assert_eq!(status, want, "{path}: {body}");
        assert!(error_text(&body).contains(says), "{path}: {body}");
    }
    // Unknown routes are a JSON 404 too.
    let (status, body) = api.get("/job/nothing").await;
    assert_eq!((status, body), (404, json!({"error": "no such route"})));
}

#[tokio::test]
async fn job_list_filters_and_pages() {
    let p = PyProject::new("list_a").await;
    let a1 = p.task("t1", "def x():\n    pass\n").await;
    let a2 = p.task("t2", "def x():\n    pass\n").await;
    let b: i64 = p
        .scalar(&format!(
            "INSERT INTO sync.project (name, active, run_as) VALUES ('list_b', true, '{}') RETURNING id",
            p.role
        ))
        .await;
    let b1: i64 = p
        .scalar(&format!(
            "INSERT INTO sync.task (project_id, name, code) VALUES ({b}, 't1', '') RETURNING id"
        ))
        .await;
    // Rows in every state the worker leaves alone: finished ones, and future ones.
    let insert = |project: i64, task: i64, state: &'static str, n: i64| {
        let c = &p.client;
        async move {
            c.execute(
                "INSERT INTO sync.job (project_id, task_id, handler, state, eta)
                 SELECT $1, $2, 'x', $3, now() + interval '1 day' FROM generate_series(1, $4::bigint)",
                &[&project, &task, &state, &n],
            )
            .await
            .unwrap();
        }
    };
    insert(p.id, a1, "done", 3).await;
    insert(p.id, a1, "failed", 1).await;
    insert(p.id, a2, "pending", 2).await;
    insert(b, b1, "cancelled", 1).await;
    insert(b, b1, "done", 2).await;
    let worker = WorkerProcess::start(&p.db.url, &["--executors", "1"]);
    let api = Api::of(&worker).await;
    let all_ids: Vec<i64> = p
        .client
        .query("SELECT id FROM sync.job ORDER BY id DESC", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(all_ids.len(), 9);
    let ids = |v: &Value| -> Vec<i64> {
        v["jobs"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|j| j["id"].as_i64().unwrap())
            .collect()
    };

    let (status, all) = api.get("/job/list").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(ids(&all), all_ids, "newest first");
    assert_eq!(all["limit"], 50);
    assert_eq!(all["offset"], 0);
    assert_eq!(all["next_offset"], Value::Null);
    let first = &all["jobs"][0];
    assert_eq!(first["project"], "list_b");
    assert_eq!(first["task"], "t1");
    assert_eq!(first["state"], "done");
    assert_eq!(first["handler"], "x");

    for (query, n, check) in [
        ("state=done", 5, ("state", "done")),
        ("state=pending", 2, ("task", "t2")),
        ("state=cancelled", 1, ("project", "list_b")),
        ("project=list_a", 6, ("project", "list_a")),
        ("project=list_a&task=t1", 4, ("task", "t1")),
        ("task=t1", 7, ("task", "t1")),
        ("state=done&project=list_b", 2, ("project", "list_b")),
        ("project=nope", 0, ("project", "nope")),
    ] {
        let (status, v) = api.get(&format!("/job/list?{query}")).await;
        assert_eq!(status, 200, "{query}: {v}");
        let jobs = v["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), n, "{query}: {v}");
        assert!(jobs.iter().all(|j| j[check.0] == check.1), "{query}: {v}");
    }

    // Paging: pages of 4 cover everything once, in order.
    let mut paged = Vec::new();
    let mut offset = Some(0);
    let mut pages = Vec::new();
    while let Some(o) = offset {
        let (status, v) = api.get(&format!("/job/list?limit=4&offset={o}")).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["limit"], 4);
        assert_eq!(v["offset"], o);
        paged.extend(ids(&v));
        pages.push(v["next_offset"].clone());
        offset = v["next_offset"].as_i64();
    }
    assert_eq!(pages, vec![json!(4), json!(8), Value::Null]);
    assert_eq!(paged, all_ids);
    // A page that ends exactly at the last job has no next page.
    assert_eq!(
        api.get("/job/list?limit=9").await.1["next_offset"],
        Value::Null
    );
    assert_eq!(api.get("/job/list?limit=8").await.1["next_offset"], 8);
    assert_eq!(
        ids(&api.get("/job/list?offset=20").await.1),
        Vec::<i64>::new()
    );

    for (query, says) in [
        ("state=bogus", "state `bogus` is not one of"),
        ("limit=0", "limit must be between 1 and 1000"),
        ("limit=1001", "limit must be between 1 and 1000"),
        ("limit=abc", "limit"),
        ("offset=-1", "offset must not be negative"),
        ("foo=1", "unknown field `foo`"),
    ] {
        let (status, v) = api.get(&format!("/job/list?{query}")).await;
        assert_eq!(status, 400, "{query}: {v}");
        assert!(error_text(&v).contains(says), "{query}: {v}");
    }
    assert_eq!(api.get("/job/list?limit=1000").await.0, 200);
}

#[tokio::test]
async fn processjobs_wakes_the_claim_loop() {
    let p = PyProject::new("wake").await;
    let task = p.task("main", "def work():\n    return 'ran'\n").await;
    // Not due yet when the worker starts and looks.
    let id = p
        .job_with(task, "work", json!({}), "eta", "now() + interval '1 hour'")
        .await;
    let worker = WorkerProcess::start(&p.db.url, &["--executors", "1", "--poll-interval", "1h"]);
    let api = Api::of(&worker).await;
    connected(&worker).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Now the job is due, and nothing tells the worker.
    p.sql("INSERT INTO sync.setting VALUES ('clock_offset', '2 hours')")
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let state: String = p
        .scalar(&format!("SELECT state FROM sync.job WHERE id = {id}"))
        .await;
    assert_eq!(
        state, "pending",
        "no poll, no notification: not claimed yet"
    );
    assert_eq!(api.get("/service/status").await.1["jobs"]["due"], 1);

    let (status, body) = api.post("/service/processjobs", &json!({})).await;
    assert_eq!((status, body), (202, json!({"ok": true})));
    let report = p.finished(id).await;
    assert_eq!(report["state"], "done", "{report}");
    assert_eq!(report["result"], "ran");
    // GET is not the way to wake it.
    let (status, _) = api.get("/service/processjobs").await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn metrics_count_jobs_webhooks_and_the_queue() {
    let p = PyProject::new("m_a").await;
    let code = r#"
def ok(n):
    return n

def bad():
    raise ValueError("no")

def again():
    raise RetryableJobError("later")

def handle_webhook(httprequest):
    if httprequest.args.get("fail"):
        raise ValueError("hook failed")
    return {"ok": True}
"#;
    let task = p.task("main", code).await;
    p.client
        .execute(
            "INSERT INTO sync.webhook_trigger (task_id, name) VALUES ($1, 'hook')",
            &[&task],
        )
        .await
        .unwrap();
    let b: i64 = p
        .scalar(&format!(
            "INSERT INTO sync.project (name, active, run_as) VALUES ('m_b', true, '{}') RETURNING id",
            p.role
        ))
        .await;
    let b_task: i64 = p
        .scalar(&format!(
            "INSERT INTO sync.task (project_id, name, code) VALUES ({b}, 'main', 'def ok(n):\n    return n\n') RETURNING id"
        ))
        .await;
    let worker = WorkerProcess::start(
        &p.db.url,
        &[
            "--executors",
            "1",
            "--poll-interval",
            "200ms",
            "--base-url",
            "https://erp.example.com",
        ],
    );
    let api = Api::of(&worker).await;
    let hooks = worker.webhook_url().await;

    // Before any job: the families exist, the queue is empty.
    let m = api.metrics().await;
    for state in ["pending", "due", "running"] {
        assert_eq!(
            m[&format!("sync_worker_queue_depth{{state=\"{state}\"}}")],
            0.0
        );
    }

    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(p.job(task, "ok", json!({"args": [n]})).await);
    }
    for _ in 0..2 {
        ids.push(p.job(task, "bad", json!({})).await);
    }
    ids.push(p.job(task, "again", json!({})).await);
    ids.push(
        p.client
            .query_one(
                "INSERT INTO sync.job (project_id, task_id, handler, args) VALUES ($1, $2, 'ok', '{\"args\": [1]}') RETURNING id",
                &[&b, &b_task],
            )
            .await
            .unwrap()
            .get(0),
    );
    let mut states = Vec::new();
    for id in &ids {
        states.push(
            p.finished(*id).await["outcome"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(
        states,
        ["done", "done", "done", "failed", "failed", "retry", "done"]
    );
    // One job for later: pending, not due.
    p.job_with(
        task,
        "ok",
        json!({"args": [9]}),
        "eta",
        "now() + interval '1 hour'",
    )
    .await;

    let http = reqwest::Client::new();
    let token: String = p
        .scalar("SELECT token FROM sync.webhook_trigger WHERE name = 'hook'")
        .await;
    let url = format!("{hooks}/sync/webhook/{token}");
    let mut statuses = Vec::new();
    for u in [
        url.clone(),
        url.clone(),
        format!("{url}?fail=1"),
        format!("{hooks}/sync/webhook/{}", "a".repeat(40)),
        format!("{hooks}/not/a/webhook"),
    ] {
        statuses.push(
            http.post(&u)
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 500, 404, 404]);

    // Counts reach the supervisor after the commit: wait for the last ones.
    let key = |name: &str, label: &str| format!("sync_worker_{name}{{{label}}}");
    wait_for("the job counters", Duration::from_secs(10), || async {
        let m = api.metrics().await;
        m.get(&key("jobs_done_total", "project=\"m_b\"")) == Some(&1.0)
            && m.get(&key("jobs_retried_total", "project=\"m_a\"")) == Some(&1.0)
            && m.get(&key("jobs_failed_total", "project=\"m_a\"")) == Some(&2.0)
            && m.get(&key("jobs_done_total", "project=\"m_a\"")) == Some(&3.0)
    })
    .await;
    let m = api.metrics().await;
    let get = |name: &str, label: &str| -> f64 {
        let k = key(name, label);
        *m.get(&k).unwrap_or_else(|| panic!("no {k} in {m:?}"))
    };
    assert_eq!(get("jobs_claimed_total", "project=\"m_a\""), 6.0);
    assert_eq!(get("jobs_claimed_total", "project=\"m_b\""), 1.0);
    assert_eq!(get("jobs_done_total", "project=\"m_a\""), 3.0);
    assert_eq!(get("jobs_done_total", "project=\"m_b\""), 1.0);
    assert_eq!(get("jobs_failed_total", "project=\"m_a\""), 2.0);
    assert_eq!(get("jobs_retried_total", "project=\"m_a\""), 1.0);
    assert!(!m.contains_key(&key("jobs_failed_total", "project=\"m_b\"")));
    assert!(!m.contains_key(&key("jobs_retried_total", "project=\"m_b\"")));
    // Every try of a handler is timed: 6 in m_a, 1 in m_b.
    assert_eq!(get("job_duration_seconds_count", "project=\"m_a\""), 6.0);
    assert_eq!(get("job_duration_seconds_count", "project=\"m_b\""), 1.0);
    assert_eq!(
        get("job_duration_seconds_bucket", "le=\"+Inf\",project=\"m_a\""),
        6.0
    );
    assert!(get("job_duration_seconds_sum", "project=\"m_a\"") > 0.0);
    // The retried job and the later one are pending; neither is due.
    assert_eq!(get("queue_depth", "state=\"pending\""), 2.0);
    assert_eq!(get("queue_depth", "state=\"due\""), 0.0);
    assert_eq!(get("queue_depth", "state=\"running\""), 0.0);
    assert_eq!(get("webhook_requests_total", "status=\"200\""), 2.0);
    assert_eq!(get("webhook_requests_total", "status=\"500\""), 1.0);
    assert_eq!(get("webhook_requests_total", "status=\"404\""), 2.0);
    assert_eq!(m["sync_worker_webhook_duration_seconds_count"], 5.0);
    // Nothing was cancelled.
    assert!(m
        .keys()
        .all(|k| !k.starts_with("sync_worker_jobs_cancelled_total{")));
}
