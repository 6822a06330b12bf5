// The built-in evaluation-context providers (http_json, github, trello, telegram,
// postgres) in real jobs on a real worker, against the fake servers of tests/fakes and a
// second PostgreSQL database: requests carry the credentials, every exchange is logged
// with the credentials masked, task code cannot reach them, and failures fail or retry.
use pg_sync_tests::fakes::FakeServer;
use pg_sync_tests::python::PyProject;
use pg_sync_tests::TestDb;
use serde_json::{json, Value};

const GH_TOKEN: &str = "ghp-S3CRET-github-token-0001";
const HTTP_TOKEN: &str = "http-S3CRET-bearer-0002";
const TRELLO_KEY: &str = "trellokeyS3CRET0003";
const TRELLO_TOKEN: &str = "trellotokenS3CRET0004";
const TG_TOKEN: &str = "7770001:TG-S3CRET-bot-token";
const PG_PASSWORD: &str = "pgS3CRETpassw0rd";

async fn secret(p: &PyProject, key: &str, value: &str) {
    p.client
        .execute(
            "INSERT INTO sync.project_secret (project_id, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (project_id, key) DO UPDATE SET value = EXCLUDED.value",
            &[&p.id, &key, &value],
        )
        .await
        .unwrap_or_else(|e| panic!("secret {key}: {e}"));
}

async fn param(p: &PyProject, key: &str, value: &str) {
    p.client
        .execute(
            "INSERT INTO sync.project_param (project_id, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (project_id, key) DO UPDATE SET value = EXCLUDED.value",
            &[&p.id, &key, &value],
        )
        .await
        .unwrap_or_else(|e| panic!("param {key}: {e}"));
}

async fn providers(p: &PyProject, names: &[&str]) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    p.client
        .execute(
            "UPDATE sync.project SET eval_context = $2 WHERE id = $1",
            &[&p.id, &names],
        )
        .await
        .expect("set eval_context");
}

/// Every log line of the project: (kind, recipient, message).
async fn project_logs(p: &PyProject) -> Vec<(String, Option<String>, String)> {
    p.client
        .query(
            "SELECT kind, recipient, message FROM sync.log WHERE project_id = $1 ORDER BY id",
            &[&p.id],
        )
        .await
        .expect("read logs")
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// No secret in any log line, job error or result of the project.
async fn assert_nothing_leaked(p: &PyProject, secrets: &[&str]) {
    let logs = project_logs(p).await;
    let jobs: Vec<(Option<String>, Option<Value>)> = p
        .client
        .query(
            "SELECT error, result FROM sync.job WHERE project_id = $1",
            &[&p.id],
        )
        .await
        .expect("read jobs")
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for s in secrets {
        for (kind, recipient, message) in &logs {
            assert!(
                !message.contains(s) && !recipient.as_deref().unwrap_or("").contains(s),
                "secret {s} in a {kind} log line: {recipient:?} {message}"
            );
        }
        for (error, result) in &jobs {
            let text = format!("{error:?} {result:?}");
            assert!(!text.contains(s), "secret {s} in a job: {text}");
        }
    }
}

fn lines_of<'a>(
    logs: &'a [(String, Option<String>, String)],
    kind: &str,
    recipient: &str,
) -> Vec<&'a str> {
    logs.iter()
        .filter(|(k, r, _)| k == kind && r.as_deref() == Some(recipient))
        .map(|(_, _, m)| m.as_str())
        .collect()
}

async fn attempts(p: &PyProject, job: i64) -> i32 {
    p.client
        .query_one("SELECT attempts FROM sync.job WHERE id = $1", &[&job])
        .await
        .expect("attempts")
        .get(0)
}

/// Report of a job that must be pending again after its first try.
async fn assert_retried(p: &PyProject, report: &Value, needle: &str) {
    assert_eq!(report["state"], "pending", "not retried: {report}");
    let job = report["job_id"].as_i64().expect("job id");
    assert_eq!(attempts(p, job).await, 1, "{report}");
    let err = report["error"].as_str().unwrap_or_default();
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

/// Report of a job that must have failed with `needle` in its error.
fn assert_failed(report: &Value, needle: &str) {
    assert_eq!(report["state"], "failed", "{report}");
    let err = report["error"].as_str().unwrap_or_default();
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn github_fake() -> FakeServer {
    let gh = FakeServer::start("github", &["--token", &format!("{GH_TOKEN}=pgsync-bot")]);
    gh.post("/_fake/repos", &[], &json!({"full_name": "acme/app"}));
    gh
}

// -----------------------------------------------------------------------------------
// http_json
// -----------------------------------------------------------------------------------

#[tokio::test]
async fn http_json_sends_bearer_auth_and_logs_every_exchange() {
    let gh = github_fake();
    let p = PyProject::new("http").await;
    providers(&p, &["http_json"]).await;
    secret(&p, "HTTP_JSON_TOKEN", GH_TOKEN).await;
    secret(&p, "HTTP_JSON_BASE_URL", &gh.url("")).await;
    let report = p
        .run_code(
            r#"
def handle_button():
    me = http_json.get('/user')
    created = http_json.post('/repos/acme/app/issues', json={'title': 'Hello', 'labels': ['bug']})
    got = http_json.get('/repos/acme/app/issues/%d' % created['number'])
    closed = http_json.patch('/repos/acme/app/issues/1', json={'state': 'closed'})
    listed = http_json.get('/repos/acme/app/issues', params={'state': 'closed', 'labels': 'bug'})
    labels = http_json.put('/repos/acme/app/issues/1/labels', json={'labels': ['x', 'y']})
    cleared = http_json.delete('/repos/acme/app/issues/1/labels')
    resp = http_json.response('GET', '/repos/acme/app/issues', params={'state': 'all'})
    log_response('crm', 'received 2 partners')
    return {'me': me['login'], 'title': got['title'], 'state': closed['state'],
            'listed': [i['number'] for i in listed], 'labels': [l['name'] for l in labels],
            'cleared': cleared, 'status': resp.status, 'type': resp.headers['content-type'],
            'base': http_json.base_url, 'name': http_json.name}
"#,
            "handle_button",
            Value::Null,
        )
        .await;
    assert_eq!(report["state"], "done", "{report}");
    assert_eq!(
        report["result"],
        json!({"me": "pgsync-bot", "title": "Hello", "state": "closed", "listed": [1],
               "labels": ["x", "y"], "cleared": null, "status": 200,
               "type": "application/json; charset=utf-8", "base": gh.masked("", ""), "name": "http_json"}),
        "{report}"
    );
    // Every request reached the fake with the token, as a bearer token.
    let requests = gh.requests();
    assert_eq!(requests.len(), 8, "{requests:?}");
    for r in &requests {
        assert_eq!(
            r["headers"]["authorization"],
            json!(format!("Bearer {GH_TOKEN}"))
        );
        assert_eq!(r["headers"]["user-agent"], json!("pg_sync-worker"));
    }
    assert_eq!(
        requests[1]["body"],
        json!({"title": "Hello", "labels": ["bug"]})
    );
    // One data_out line per request and one data_in line per response, token masked.
    let logs = project_logs(&p).await;
    let out = lines_of(&logs, "data_out", "http_json");
    let inn = lines_of(&logs, "data_in", "http_json");
    assert_eq!((out.len(), inn.len()), (8, 8), "{logs:?}");
    assert_eq!(
        out[1],
        format!(
            "POST {}\n{{\"title\": \"Hello\", \"labels\": [\"bug\"]}}",
            gh.masked("", "/repos/acme/app/issues")
        )
    );
    assert!(
        inn[1].starts_with(&format!(
            "201 Created POST {}\n{{\"id\":",
            gh.masked("", "/repos/acme/app/issues")
        )),
        "{}",
        inn[1]
    );
    assert_eq!(
        out[4],
        format!(
            "GET {}",
            gh.masked("", "/repos/acme/app/issues?state=closed&labels=bug")
        )
    );
    assert!(inn[6].starts_with("204 No Content DELETE"), "{}", inn[6]);
    assert_eq!(
        lines_of(&logs, "data_in", "crm"),
        vec!["received 2 partners"]
    );
    assert_nothing_leaked(&p, &[GH_TOKEN]).await;
}

#[tokio::test]
async fn http_json_basic_auth_clients_and_refusals() {
    let gh = github_fake();
    let p = PyProject::new("http").await;
    providers(&p, &["http_json"]).await;
    secret(&p, "HTTP_JSON_USER", "ann").await;
    secret(&p, "HTTP_JSON_PASSWORD", HTTP_TOKEN).await;
    secret(&p, "HTTP_JSON_BASE_URL", &gh.url("/")).await;
    // A second, independent client: its base URL must be a secret.
    secret(&p, "GH_BASE_URL", &gh.url("")).await;
    secret(&p, "GH_TOKEN", GH_TOKEN).await;
    param(&p, "CRM_BASE_URL", "http://127.0.0.1:1/").await;
    let report = p
        .run_code(
            r#"
def handle_button():
    try:
        http_json.get('/user')
    except HTTPClientError as e:
        refused = [e.status, e.data['message'], e.method, isinstance(e, UserError)]
    gh = http_json_client('GH')
    try:
        http_json_client('CRM').get('/x')
    except UserError as e:
        crm = str(e)
    try:
        gh.get('http://evil.example.com/steal')
    except UserError as e:
        evil = str(e)
    try:
        http_json_client('lower')
    except ValueError as e:
        bad_name = str(e)
    return {'refused': refused, 'gh': gh.get('/user')['login'], 'same': http_json_client('GH') is gh,
            'absolute': gh.get(gh.base_url + '/user')['login'],
            'crm': crm, 'evil': evil, 'bad_name': bad_name, 'repr': repr(gh)}
"#,
            "handle_button",
            Value::Null,
        )
        .await;
    assert_eq!(report["state"], "done", "{report}");
    let r = &report["result"];
    assert_eq!(
        r["refused"],
        json!([401, "Bad credentials", "GET", true]),
        "{r}"
    );
    assert_eq!(r["gh"], json!("pgsync-bot"));
    assert_eq!(r["same"], json!(true));
    assert_eq!(r["absolute"], json!("pgsync-bot"));
    assert_eq!(
        r["crm"],
        json!("crm: CRM_BASE_URL is set as a param, which is ignored: a base URL decides where the credentials go, \
               so it is read from secrets only (admins write them); set it as the secret CRM_BASE_URL in sync.project_secret"),
        "a base URL in params is not enough for a named client: {r}"
    );
    assert!(
        r["evil"]
            .as_str()
            .unwrap_or_default()
            .contains("refusing to send a request to http://evil.example.com/steal"),
        "{r}"
    );
    assert!(r["bad_name"]
        .as_str()
        .unwrap_or_default()
        .contains("prefix in capitals"));
    assert_eq!(
        r["repr"],
        json!(format!("<gh client {}>", gh.masked("", "")))
    );
    // Basic auth went out as such; the other client used its own token.
    let requests = gh.requests();
    let basic = format!("Basic {}", b64(&format!("ann:{HTTP_TOKEN}")));
    assert_eq!(requests[0]["headers"]["authorization"], json!(basic));
    assert_eq!(
        requests[1]["headers"]["authorization"],
        json!(format!("Bearer {GH_TOKEN}"))
    );
    assert_eq!(
        requests.len(),
        3,
        "no request went to evil.example.com: {requests:?}"
    );
    let logs = project_logs(&p).await;
    assert_eq!(lines_of(&logs, "data_out", "gh").len(), 2, "{logs:?}");
    assert_nothing_leaked(&p, &[HTTP_TOKEN, GH_TOKEN, &basic[6..]]).await;
}

fn b64(s: &str) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn http_json_failures_fail_or_retry_the_job() {
    let gh = github_fake();
    let p = PyProject::new("http").await;
    providers(&p, &["http_json"]).await;
    secret(&p, "HTTP_JSON_TOKEN", GH_TOKEN).await;
    secret(&p, "HTTP_JSON_BASE_URL", &gh.url("")).await;
    secret(
        &p,
        "DOWN_BASE_URL",
        &format!("http://127.0.0.1:{}", free_port()),
    )
    .await;
    secret(&p, "SLOW_BASE_URL", &gh.url("")).await;
    secret(&p, "SLOW_TOKEN", GH_TOKEN).await;
    param(&p, "SLOW_TIMEOUT", "0.5").await;
    let task = p
        .task(
            "calls",
            r#"
def missing():
    return http_json.get('/repos/acme/nope')

def server_error():
    return http_json.post('/repos/acme/app/issues', json={'title': 'x'})

def down():
    return http_json_client('DOWN').get('/user')

def slow():
    return http_json_client('SLOW').get('/user')
"#,
        )
        .await;
    // 4xx: the job fails with the status and the server's answer.
    let job = p.job(task, "missing", Value::Null).await;
    let report = p.run(job).await;
    assert_eq!(report["state"], "failed", "{report}");
    let err = report["error"].as_str().unwrap_or_default();
    assert!(
        err.contains(&format!(
            "HTTPClientError: http_json: GET {} returned 404 Not Found: {{\"message\": \"Not Found\"",
            gh.masked("", "/repos/acme/nope")
        )),
        "{err}"
    );
    // 5xx: tried again later.
    gh.fail_next(503, 1, "/repos/acme/app/issues");
    let job = p.job(task, "server_error", Value::Null).await;
    let report = p.run(job).await;
    assert_retried(&p, &report, "HTTPRetryableError: http_json: POST").await;
    assert!(report["error"]
        .as_str()
        .unwrap_or_default()
        .contains("returned 503"));
    // Nothing listening: retried.
    let job = p.job(task, "down", Value::Null).await;
    let report = p.run(job).await;
    assert_retried(&p, &report, "HTTPConnectionError: down: GET").await;
    assert!(report["error"]
        .as_str()
        .unwrap_or_default()
        .contains("connection refused"));
    // No answer within the client's timeout: retried.
    gh.post(
        "/_fake/fail",
        &[],
        &json!({"status": 0, "delay": 2, "count": 1, "path": "/user"}),
    );
    let job = p.job(task, "slow", Value::Null).await;
    let report = p.run(job).await;
    assert_retried(&p, &report, "no answer within 0.5 s (timeout)").await;
    assert_nothing_leaked(&p, &[GH_TOKEN]).await;
}

#[tokio::test]
async fn http_json_redirects_forms_headers_and_time_limits() {
    let gh = github_fake();
    let p = PyProject::new("http").await;
    providers(&p, &["http_json"]).await;
    secret(&p, "HTTP_JSON_TOKEN", GH_TOKEN).await;
    secret(&p, "HTTP_JSON_BASE_URL", &gh.url("")).await;
    secret(&p, "KEYED_BASE_URL", &gh.url("")).await;
    secret(&p, "KEYED_TOKEN", HTTP_TOKEN).await;
    param(&p, "KEYED_AUTH_HEADER", "X-Api-Key").await;
    param(&p, "KEYED_AUTH_SCHEME", "none").await;
    gh.post(
        "/_fake/redirect",
        &[],
        &json!({"path": "/repos/acme/old", "location": "/repos/acme/app", "status": 301}),
    );
    gh.post(
        "/_fake/redirect",
        &[],
        &json!({"path": "/repos/acme/moved", "location": "/repos/acme/app", "status": 307}),
    );
    gh.post(
        "/_fake/redirect",
        &[],
        &json!({"path": "/away", "location": format!("http://127.0.0.1:1/elsewhere?t={GH_TOKEN}"), "status": 302}),
    );
    let task = p
        .task(
            "calls",
            r#"
def handle_button():
    form = http_json.post('/repos/acme/app/issues', data={'title': 'Form'}, headers={'X-Trace': 'abc'})
    moved = http_json.post('/repos/acme/moved/issues', json={'title': 'Moved'})
    old = http_json.get('/repos/acme/old/issues/%d' % form['number'])
    try:
        http_json.get('/away')
    except HTTPError as e:
        away = [e.status, isinstance(e, HTTPClientError), isinstance(e, RetryableJobError), str(e), e.headers['location']]
    try:
        http_json_client('KEYED').get('/user')
    except HTTPClientError as e:
        keyed = e.status
    return {'form': form['title'], 'moved': moved['title'], 'old': old['title'], 'away': away, 'keyed': keyed}

def hang():
    return http_json.get('/user')
"#,
        )
        .await;
    let report = p.run(p.job(task, "handle_button", Value::Null).await).await;
    assert_eq!(report["state"], "done", "{report}");
    let r = &report["result"];
    assert_eq!(
        (&r["form"], &r["moved"], &r["old"], &r["keyed"]),
        (&json!("Form"), &json!("Moved"), &json!("Form"), &json!(401)),
        "{r}"
    );
    assert_eq!(
        r["away"].as_array().map(|a| a[..3].to_vec()),
        Some(vec![json!(302), json!(false), json!(false)]),
        "{r}"
    );
    assert!(
        r["away"][3]
            .as_str()
            .unwrap_or_default()
            .contains("redirect to http://127.0.0.1:1/elsewhere?t=*** not followed"),
        "{r}"
    );
    assert_eq!(
        r["away"][4],
        json!("http://127.0.0.1:1/elsewhere?t=***"),
        "response headers are masked too"
    );
    let requests = gh.requests();
    assert_eq!(
        requests[0]["body"],
        json!({"title": "Form"}),
        "form fields arrive as such"
    );
    assert_eq!(
        requests[0]["headers"]["content-type"],
        json!("application/x-www-form-urlencoded")
    );
    assert_eq!(requests[0]["headers"]["x-trace"], json!("abc"));
    // 307 keeps the method and body; the redirected calls carry the token too.
    assert_eq!(requests[1]["status"], json!(307));
    assert_eq!(
        (
            &requests[2]["method"],
            &requests[2]["path"],
            &requests[2]["body"]
        ),
        (
            &json!("POST"),
            &json!("/repos/acme/app/issues"),
            &json!({"title": "Moved"})
        )
    );
    assert_eq!(requests[4]["path"], json!("/repos/acme/app/issues/1"));
    assert_eq!(
        requests[4]["headers"]["authorization"],
        json!(format!("Bearer {GH_TOKEN}"))
    );
    // Another header and no scheme for the KEYED client; nothing went to the other origin.
    let keyed = requests.last().expect("requests");
    assert_eq!(keyed["headers"]["x-api-key"], json!(HTTP_TOKEN), "{keyed}");
    assert_eq!(keyed["headers"].get("authorization"), None, "{keyed}");
    assert_eq!(requests.len(), 7, "{requests:?}");
    let logs = project_logs(&p).await;
    assert!(
        lines_of(&logs, "data_in", "http_json").contains(
            &format!(
                "301 Moved Permanently GET {} -> {}",
                gh.masked("", "/repos/acme/old/issues/1"),
                gh.masked("", "/repos/acme/app/issues/1")
            )
            .as_str()
        ),
        "{logs:?}"
    );
    // The soft time limit stops a request that hangs.
    p.sql(&format!(
        "UPDATE sync.task SET time_limit = '1 second' WHERE id = {task}"
    ))
    .await;
    gh.post(
        "/_fake/fail",
        &[],
        &json!({"status": 0, "delay": 8, "count": 1, "path": "/user"}),
    );
    let started = std::time::Instant::now();
    let report = p.run(p.job(task, "hang", Value::Null).await).await;
    assert_failed(&report, "TimeLimitExceeded");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert_nothing_leaked(&p, &[GH_TOKEN, HTTP_TOKEN]).await;
}

// -----------------------------------------------------------------------------------
// github
// -----------------------------------------------------------------------------------

#[tokio::test]
async fn github_issues_comments_and_labels() {
    let gh = github_fake();
    let p = PyProject::new("gh").await;
    providers(&p, &["github"]).await;
    secret(&p, "GITHUB_TOKEN", GH_TOKEN).await;
    secret(&p, "GITHUB_BASE_URL", &gh.url("")).await;
    let report = p
        .run_code(
            r#"
R = 'acme/app'

def handle_button():
    github.create_label(R, 'bug', color='#d73a4a', description='Something is wrong')
    try:
        github.create_label(R, 'bug')
    except HTTPClientError as e:
        duplicate = [e.status, e.data['errors'][0]['code']]
    one = github.create_issue(R, 'First', body='Body 1', labels=['bug'])
    two = github.create_issue(R, 'Second')
    three = github.create_issue(R, 'Third')
    github.update_issue(R, two['number'], state='closed', title='Second!')
    github.create_comment(R, one['number'], 'A comment')
    github.create_comment(R, one['number'], 'Another')
    github.add_labels(R, one['number'], ['p1', 'p2'])
    after_remove = github.remove_label(R, one['number'], 'p1')
    again = github.remove_label(R, one['number'], 'p1')
    github.set_labels(R, three['number'], ['p2'])
    return {
        'duplicate': duplicate,
        'get': github.get_issue(R, two['number'])['title'],
        'open': [i['number'] for i in github.list_issues(R)],
        'all_paged': [i['number'] for i in github.list_issues(R, state='all', per_page=1)],
        'labelled': [i['number'] for i in github.list_issues(R, labels=['p2'])],
        'comments': [c['body'] for c in github.list_comments(R, one['number'])],
        'issue_labels': [l['name'] for l in github.list_issue_labels(R, one['number'])],
        'after_remove': [l['name'] for l in after_remove],
        'again': [l['name'] for l in again],
        'repo_labels': [l['name'] for l in github.list_labels(R)],
        'label': github.get_label(R, 'bug')['color'],
    }
"#,
            "handle_button",
            Value::Null,
        )
        .await;
    assert_eq!(report["state"], "done", "{report}");
    assert_eq!(
        report["result"],
        json!({
            "duplicate": [422, "already_exists"],
            "get": "Second!",
            "open": [3, 1],
            "all_paged": [3, 2, 1],
            "labelled": [3, 1],
            "comments": ["A comment", "Another"],
            "issue_labels": ["bug", "p2"],
            "after_remove": ["bug", "p2"],
            "again": ["bug", "p2"],
            "repo_labels": ["bug", "p1", "p2"],
            "label": "d73a4a",
        }),
        "{report}"
    );
    // The fake holds what the client did.
    let state = gh.state();
    let repo = &state["repos"]["acme/app"];
    assert_eq!(repo["issues"][1]["state"], json!("closed"));
    assert_eq!(repo["comments"].as_array().map(Vec::len), Some(2));
    let requests = gh.requests();
    assert!(requests.iter().all(|r| r["headers"]["authorization"]
        == json!(format!("Bearer {GH_TOKEN}"))
        && r["headers"]["accept"] == json!("application/vnd.github+json")
        && r["headers"]["x-github-api-version"] == json!("2022-11-28")));
    // all_paged followed the Link headers: three pages of one issue.
    assert_eq!(
        requests
            .iter()
            .filter(|r| r["path"] == json!("/repos/acme/app/issues")
                && r["query"]["per_page"] == json!("1"))
            .count(),
        3
    );
    let logs = project_logs(&p).await;
    assert!(
        lines_of(&logs, "data_out", "github").contains(
            &format!(
                "POST {}\n{{\"title\": \"First\", \"body\": \"Body 1\", \"labels\": [\"bug\"]}}",
                gh.masked("", "/repos/acme/app/issues")
            )
            .as_str()
        ),
        "{logs:?}"
    );
    assert_nothing_leaked(&p, &[GH_TOKEN]).await;

    // 5xx retries, bad input fails, a missing token says which secret to set.
    gh.fail_next(502, 1, "/repos/acme/app/issues/1");
    let report = p
        .run_code(
            "def handle_cron():\n    return github.get_issue('acme/app', 1)\n",
            "handle_cron",
            Value::Null,
        )
        .await;
    assert_retried(&p, &report, "returned 502").await;
    let err = p
        .error(
            "def handle_cron():\n    return github.get_issue('acme/../x', 1)\n",
            "handle_cron",
        )
        .await;
    assert!(
        err.contains("a repository is given as 'owner/name'"),
        "{err}"
    );
    p.sql(&format!(
        "DELETE FROM sync.project_secret WHERE project_id = {}",
        p.id
    ))
    .await;
    let err = p
        .error(
            "def handle_cron():\n    return github.get_issue('acme/app', 1)\n",
            "handle_cron",
        )
        .await;
    assert!(
        err.contains("UserError: github: secret GITHUB_TOKEN is not set"),
        "{err}"
    );
}

// -----------------------------------------------------------------------------------
// trello
// -----------------------------------------------------------------------------------

#[tokio::test]
async fn trello_cards_comments_labels_and_lists() {
    let tr = FakeServer::start("trello", &["--key", TRELLO_KEY, "--token", TRELLO_TOKEN]);
    let auth = format!("?key={TRELLO_KEY}&token={TRELLO_TOKEN}");
    let board = tr.post(
        &format!("/1/boards{auth}"),
        &[],
        &json!({"name": "Dev", "defaultLists": false, "defaultLabels": false}),
    );
    let board_id = board["id"].as_str().expect("board id").to_string();
    let todo = tr.post(
        &format!("/1/lists{auth}"),
        &[],
        &json!({"name": "To do", "idBoard": board_id}),
    );
    let done = tr.post(
        &format!("/1/lists{auth}"),
        &[],
        &json!({"name": "Done", "idBoard": board_id}),
    );
    let p = PyProject::new("trello").await;
    providers(&p, &["trello"]).await;
    secret(&p, "TRELLO_KEY", TRELLO_KEY).await;
    secret(&p, "TRELLO_TOKEN", TRELLO_TOKEN).await;
    secret(&p, "TRELLO_BASE_URL", &tr.url("/1")).await;
    param(&p, "BOARD", &board_id).await;
    let report = p
        .run_code(
            r#"
def handle_button():
    lists = {l['name']: l['id'] for l in trello.board_lists(params.BOARD)}
    card = trello.create_card(lists['To do'], 'Fix bug', desc='It breaks')
    trello.update_card(card['id'], name='Fix the bug', idList=lists['Done'])
    trello.add_comment(card['id'], 'first')
    trello.add_comment(card['id'], 'second')
    label = trello.create_label(params.BOARD, 'urgent', color='red')
    trello.add_label(card['id'], label['id'])
    with_label = trello.get_card(card['id'])
    trello.remove_label(card['id'], label['id'])
    return {
        'card': [with_label['name'], with_label['desc'], with_label['idList'] == lists['Done'],
                 [l['name'] for l in with_label['labels']]],
        'comments': [a['data']['text'] for a in trello.card_comments(card['id'])],
        'labels': [(l['name'], l['color']) for l in trello.board_labels(params.BOARD)],
        'after': trello.get_card(card['id'])['idLabels'],
        'board_cards': [c['name'] for c in trello.board_cards(params.BOARD)],
        'done_cards': [c['name'] for c in trello.list_cards(lists['Done'])],
        'board': trello.get_board(params.BOARD)['name'],
    }
"#,
            "handle_button",
            Value::Null,
        )
        .await;
    assert_eq!(report["state"], "done", "{report}");
    assert_eq!(
        report["result"],
        json!({
            "card": ["Fix the bug", "It breaks", true, ["urgent"]],
            "comments": ["second", "first"],
            "labels": [["urgent", "red"]],
            "after": [],
            "board_cards": ["Fix the bug"],
            "done_cards": ["Fix the bug"],
            "board": "Dev",
        }),
        "{report}"
    );
    let _ = (todo, done);
    // Key and token went as query parameters on every call.
    let requests = tr.requests();
    let api: Vec<&Value> = requests.iter().skip(3).collect();
    assert!(api.len() >= 12, "{requests:?}");
    for r in &api {
        assert_eq!(r["query"]["key"], json!(TRELLO_KEY), "{r}");
        assert_eq!(r["query"]["token"], json!(TRELLO_TOKEN), "{r}");
    }
    let logs = project_logs(&p).await;
    let out = lines_of(&logs, "data_out", "trello");
    assert!(
        out.iter().any(|l| *l
            == format!(
                "POST {}\n{{\"text\": \"first\"}}",
                tr.masked(
                    "/1",
                    &format!(
                        "/1/cards/{}/actions/comments",
                        tr.state()["cards"][0]["id"].as_str().unwrap_or("?")
                    )
                )
            )),
        "{out:?}"
    );
    assert_nothing_leaked(&p, &[TRELLO_KEY, TRELLO_TOKEN]).await;
    // An unknown card fails the job with Trello's answer; a wrong token too.
    let err = p
        .error(
            "def handle_cron():\n    return trello.get_card('0123456789abcdef01234567')\n",
            "handle_cron",
        )
        .await;
    assert!(
        err.contains("returned 404 Not Found: The requested resource was not found."),
        "{err}"
    );
    secret(&p, "TRELLO_TOKEN", "wrong-S3CRET-token").await;
    let err = p
        .error(
            "def handle_cron():\n    return trello.board_lists(params.BOARD)\n",
            "handle_cron",
        )
        .await;
    assert!(
        err.contains("HTTPClientError: trello: GET")
            && err.contains("returned 401 Unauthorized: invalid token"),
        "{err}"
    );
    assert_nothing_leaked(&p, &[TRELLO_KEY, TRELLO_TOKEN, "wrong-S3CRET-token"]).await;
}

// -----------------------------------------------------------------------------------
// telegram
// -----------------------------------------------------------------------------------

#[tokio::test]
async fn telegram_bot_api_with_the_token_masked() {
    let tg = FakeServer::start("telegram", &["--token", TG_TOKEN]);
    let p = PyProject::new("tg").await;
    providers(&p, &["telegram"]).await;
    secret(&p, "TELEGRAM_BOT_TOKEN", TG_TOKEN).await;
    secret(&p, "TELEGRAM_BASE_URL", &tg.url("")).await;
    let report = p
        .run_code(
            r#"
def handle_button():
    me = telegram.get_me()
    sent = telegram.send_message(42, 'Hello <b>world</b>', parse_mode='HTML')
    hooked = telegram.set_webhook('https://sync.example.com/sync/webhook/abc', secret_token='hook-secret')
    info = telegram.call('getWebhookInfo')
    return [me['username'], sent['chat']['id'], sent['text'], hooked, info['url']]
"#,
            "handle_button",
            Value::Null,
        )
        .await;
    assert_eq!(report["state"], "done", "{report}");
    assert_eq!(
        report["result"],
        json!([
            "pg_sync_test_bot",
            42,
            "Hello <b>world</b>",
            true,
            "https://sync.example.com/sync/webhook/abc"
        ])
    );
    let state = tg.state();
    assert_eq!(state["messages"][0]["text"], json!("Hello <b>world</b>"));
    assert_eq!(
        state["messages"][0]["options"],
        json!({"parse_mode": "HTML"})
    );
    assert_eq!(state["webhook"]["secret_token"], json!("hook-secret"));
    assert_eq!(
        state["requests"][1]["path"],
        json!(format!("/bot{TG_TOKEN}/sendMessage")),
        "the token is in the URL path, as the Bot API wants"
    );
    let logs = project_logs(&p).await;
    let out = lines_of(&logs, "data_out", "telegram");
    assert_eq!(
        out[1],
        format!(
            "POST {}/bot***/sendMessage\n{{\"chat_id\": 42, \"text\": \"Hello <b>world</b>\", \"parse_mode\": \"HTML\"}}",
            tg.masked("", "")
        )
    );
    assert!(
        lines_of(&logs, "data_in", "telegram")[1].starts_with(&format!(
            "200 OK POST {}/bot***/sendMessage",
            tg.masked("", "")
        ))
    );
    // setWebhook's secret token and the webhook URL's token are credentials too.
    assert_eq!(
        out[2],
        format!(
            "POST {}/bot***/setWebhook\n{{\"url\": \"https://sync.example.com/sync/webhook/***\", \"secret_token\": \"***\"}}",
            tg.masked("", "")
        )
    );
    assert_nothing_leaked(&p, &[TG_TOKEN, "TG-S3CRET", "hook-secret"]).await;

    // Bot API errors fail the job with Telegram's description; 429 retries.
    let err = p
        .error(
            "def handle_cron():\n    telegram.send_message(42, '')\n",
            "handle_cron",
        )
        .await;
    assert!(
        err.contains("returned 400 Bad Request")
            && err.contains("Bad Request: message text is empty"),
        "{err}"
    );
    assert!(err.contains("/bot***/sendMessage"), "{err}");
    tg.post(
        "/_fake/fail",
        &[],
        &json!({"status": 429, "count": 1, "body": {"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 3", "parameters": {"retry_after": 3}}}),
    );
    let report = p
        .run_code(
            "def handle_cron():\n    telegram.send_message(42, 'x')\n",
            "handle_cron",
            Value::Null,
        )
        .await;
    assert_retried(&p, &report, "returned 429").await;
    secret(&p, "TELEGRAM_BOT_TOKEN", "1:other-S3CRET").await;
    let err = p
        .error("def handle_cron():\n    telegram.get_me()\n", "handle_cron")
        .await;
    assert!(
        err.contains("returned 401 Unauthorized") && err.contains("/bot***/getMe"),
        "{err}"
    );
    assert_nothing_leaked(&p, &[TG_TOKEN, "TG-S3CRET", "other-S3CRET"]).await;
}

// -----------------------------------------------------------------------------------
// Base URLs come from secrets only
// -----------------------------------------------------------------------------------

#[tokio::test]
async fn base_urls_in_params_are_never_used() {
    // Developers write params: a base URL taken from one would send the admin's
    // credentials to a server the developer chose. This one records what it gets.
    let evil = FakeServer::start("github", &[]);
    let gh = github_fake();
    let p = PyProject::new("params").await;
    providers(&p, &["http_json", "github", "trello", "telegram"]).await;
    for (k, v) in [
        ("HTTP_JSON_TOKEN", HTTP_TOKEN),
        ("GITHUB_TOKEN", GH_TOKEN),
        ("TRELLO_KEY", TRELLO_KEY),
        ("TRELLO_TOKEN", TRELLO_TOKEN),
        ("TELEGRAM_BOT_TOKEN", TG_TOKEN),
        ("CRM_TOKEN", HTTP_TOKEN),
    ] {
        secret(&p, k, v).await;
    }
    for key in [
        "HTTP_JSON_BASE_URL",
        "GITHUB_BASE_URL",
        "TRELLO_BASE_URL",
        "TELEGRAM_BASE_URL",
        "CRM_BASE_URL",
    ] {
        param(&p, key, &evil.url("")).await;
    }
    let code = r#"
def handle_cron():
    calls = {
        'http_json': lambda: http_json.get('/user'),
        'crm': lambda: http_json_client('CRM').get('/user'),
        'github': lambda: github.get_issue('acme/app', 1),
        'trello': lambda: trello.get_board('abc123'),
        'telegram': lambda: telegram.get_me(),
    }
    out = {}
    for name, call in calls.items():
        try:
            call()
            out[name] = 'sent'
        except UserError as e:
            out[name] = str(e)
    out['bases'] = [http_json.base_url, github.base_url, trello.base_url, telegram.base_url, repr(github)]
    return out
"#;
    let result = p.result(code, "handle_cron").await;
    let refusal = |name: &str, key: &str, default: &str| {
        let mut text = format!(
            "{name}: {key} is set as a param, which is ignored: a base URL decides where the credentials go, \
             so it is read from secrets only (admins write them); set it as the secret {key} in sync.project_secret"
        );
        if !default.is_empty() {
            text.push_str(&format!(", or delete the param to use {default}"));
        }
        json!(text)
    };
    assert_eq!(
        result,
        json!({
            "http_json": refusal("http_json", "HTTP_JSON_BASE_URL", ""),
            "crm": refusal("crm", "CRM_BASE_URL", ""),
            "github": refusal("github", "GITHUB_BASE_URL", "https://api.github.com"),
            "trello": refusal("trello", "TRELLO_BASE_URL", "https://api.trello.com/1"),
            "telegram": refusal("telegram", "TELEGRAM_BASE_URL", "https://api.telegram.org"),
            "bases": [null, null, null, null, "<github client (not configured)>"],
        }),
        "a base URL in a param must not be used"
    );
    assert_eq!(
        evil.requests(),
        Vec::<Value>::new(),
        "nothing may reach the param's host"
    );

    // A secret of the same name wins (the param stays ignored); a param that only
    // repeats the default is harmless (documents shipped before kept them as params).
    secret(&p, "GITHUB_BASE_URL", &gh.url("")).await;
    param(&p, "TELEGRAM_BASE_URL", "https://api.telegram.org/").await;
    let result = p
        .result(
            "def handle_cron():\n    return [github.get('/user')['login'], github.base_url, telegram.base_url]\n",
            "handle_cron",
        )
        .await;
    assert_eq!(
        result,
        json!(["pgsync-bot", gh.masked("", ""), "https://api.telegram.org"])
    );
    assert_eq!(evil.requests(), Vec::<Value>::new());
    assert_eq!(gh.requests().len(), 1);
    // Without the param, the default.
    p.sql(&format!(
        "DELETE FROM sync.project_param WHERE project_id = {} AND key = 'TRELLO_BASE_URL'",
        p.id
    ))
    .await;
    let result = p
        .result(
            "def handle_cron():\n    return trello.base_url\n",
            "handle_cron",
        )
        .await;
    assert_eq!(result, json!("https://api.trello.com/1"));
    assert_nothing_leaked(
        &p,
        &[HTTP_TOKEN, GH_TOKEN, TRELLO_KEY, TRELLO_TOKEN, TG_TOKEN],
    )
    .await;
}

// -----------------------------------------------------------------------------------
// Task code and the clients' secrets
// -----------------------------------------------------------------------------------

/// Trusted core code walks every public attribute task code could reach from what the
/// providers export (objects, their attributes, methods' results are not called) and
/// reports any path whose value shows a secret.
const WALK: &str = r#"
from pg_sync.sandbox import attribute_refusal as _refusal

_SECRETS = [secrets.GITHUB_TOKEN, secrets.TRELLO_KEY, secrets.TRELLO_TOKEN,
            secrets.TELEGRAM_BOT_TOKEN, secrets.HTTP_JSON_TOKEN, 'pgS3CRETpassw0rd']

def _walk(obj, path, depth, seen, out):
    if id(obj) in seen or depth > 5:
        return
    # Kept alive: a transient object's id (bound methods...) could be reused otherwise.
    seen[id(obj)] = obj
    try:
        text = repr(obj) + str(obj)
    except Exception:
        text = ''
    for s in _SECRETS:
        if s in text:
            out.append(path)
    if isinstance(obj, (str, bytes, int, float, bool, type(None))):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            _walk(v, '%s[%r]' % (path, k), depth + 1, seen, out)
    if isinstance(obj, (list, tuple, set)):
        for i, v in enumerate(obj):
            _walk(v, '%s[%d]' % (path, i), depth + 1, seen, out)
    for name in dir(obj):
        if _refusal(name) is not None:
            continue
        try:
            value = getattr(obj, name)
        except Exception:
            continue
        _walk(value, path + '.' + name, depth + 1, seen, out)

_found, _seen = [], {}
for _name in ('http_json', 'http_json_client', 'github', 'trello', 'telegram', 'postgres',
              'postgres_connection', 'HTTPError', 'HTTPClientError', 'DatabaseUnavailable'):
    _walk(globals()[_name], _name, 0, _seen, _found)
LEAKS = _found
WALKED = len(_seen)
"#;

/// Each snippet is the body of handle_cron; `refusal` must be in the error ("" = runs).
const ATTEMPTS: &[(&str, &str)] = &[
    ("return github._headers", "private attribute '_headers'"),
    (
        "return getattr(trello, '_auth_params')",
        "private attribute '_auth_params'",
    ),
    ("return telegram._prefix", "private attribute '_prefix'"),
    ("return postgres._conn", "private attribute '_conn'"),
    ("return github.__dict__", "not allowed"),
    ("return github.get.__self__", "not allowed"),
    ("return vars(github)", "NameError"),
    ("return type(github)", "NameError"),
    (
        "return '{0._headers}'.format(github)",
        "private attribute '_headers'",
    ),
    (
        "return [repr(github), str(trello), repr(telegram), repr(postgres), repr(http_json)]",
        "",
    ),
    (
        "return [github.base_url, github.name, github.timeout, postgres.database, postgres.name]",
        "",
    ),
    ("return http_json_client('HTTP_JSON').base_url", ""),
];

#[tokio::test]
async fn task_code_cannot_reach_provider_secrets() {
    let remote = TestDb::new().await;
    let p = PyProject::new("secrets").await;
    providers(
        &p,
        &["http_json", "github", "trello", "telegram", "postgres"],
    )
    .await;
    for (k, v) in [
        ("GITHUB_TOKEN", GH_TOKEN),
        ("TRELLO_KEY", TRELLO_KEY),
        ("TRELLO_TOKEN", TRELLO_TOKEN),
        ("TELEGRAM_BOT_TOKEN", TG_TOKEN),
        ("HTTP_JSON_TOKEN", HTTP_TOKEN),
        ("HTTP_JSON_BASE_URL", "https://api.example.com"),
    ] {
        secret(&p, k, v).await;
    }
    secret(
        &p,
        "POSTGRES_DSN",
        &remote
            .url
            .replacen("postgres@", &format!("postgres:{PG_PASSWORD}@"), 1),
    )
    .await;
    p.set("core_code", WALK).await;
    let result = p
        .result(
            "def handle_cron():\n    return [LEAKS, WALKED]\n",
            "handle_cron",
        )
        .await;
    assert_eq!(
        result[0],
        json!([]),
        "secrets reachable by public attributes: {result}"
    );
    assert!(
        result[1].as_i64().unwrap_or(0) > 50,
        "the walk saw too little: {result}"
    );
    for (body, refusal) in ATTEMPTS {
        let code = format!("def handle_cron():\n    {body}\n");
        let report = p.run_code(&code, "handle_cron", Value::Null).await;
        if refusal.is_empty() {
            assert_eq!(report["state"], "done", "{code}\n{report}");
        } else {
            assert_eq!(report["state"], "failed", "not refused:\n{code}\n{report}");
            let err = report["error"].as_str().unwrap_or_default();
            assert!(
                err.contains(refusal),
                "{code}\nexpected {refusal:?} in:\n{err}"
            );
        }
    }
    assert_nothing_leaked(
        &p,
        &[
            GH_TOKEN,
            TRELLO_KEY,
            TRELLO_TOKEN,
            TG_TOKEN,
            HTTP_TOKEN,
            PG_PASSWORD,
        ],
    )
    .await;
}

// -----------------------------------------------------------------------------------
// postgres
// -----------------------------------------------------------------------------------

/// A project whose `postgres` is a second database (with a password in its DSN).
async fn postgres_project() -> (PyProject, TestDb) {
    let remote = TestDb::new().await;
    let p = PyProject::new("remote").await;
    providers(&p, &["postgres"]).await;
    let dsn = remote
        .url
        .replacen("postgres@", &format!("postgres:{PG_PASSWORD}@"), 1);
    secret(&p, "POSTGRES_DSN", &dsn).await;
    (p, remote)
}

#[tokio::test]
async fn postgres_round_trips_values_and_transactions() {
    let (p, remote) = postgres_project().await;
    let dsn = remote
        .url
        .replacen("postgres@", &format!("postgres:{PG_PASSWORD}@"), 1);
    secret(&p, "WAREHOUSE_DSN", &dsn).await;
    let report = p
        .run_code(
            r#"
def handle_button():
    postgres.execute("CREATE TABLE items (id int PRIMARY KEY, name text, price numeric, tags text[], meta jsonb, at timestamptz, day date)")
    n = postgres.execute("INSERT INTO items VALUES ($1, $2, $3, $4, $5, $6, $7), ($8, $9, $10, $11, $12, $13, $14)",
                         1, 'pen', '1.50', ['a', 'b'], {'k': [1, 2]}, datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc), datetime.date(2024, 5, 1),
                         2, 'ink', 3, [], None, None, None)
    rows = postgres.query("SELECT * FROM items ORDER BY id")
    one = postgres.query_one("SELECT name, price * 2 AS double FROM items WHERE id = $1", 1)
    none = postgres.query_one("SELECT 1 FROM items WHERE id = $1", 99)
    try:
        postgres.execute("INSERT INTO items (id) VALUES (1)")
    except DatabaseError as e:
        dup = e.code
    # Autocommit: the failed statement changed nothing and the connection goes on.
    with postgres.transaction():
        postgres.execute("UPDATE items SET name = 'pencil' WHERE id = 1")
        try:
            with postgres.transaction():
                postgres.execute("DELETE FROM items WHERE id = 2")
                raise ValueError('undo the inner block')
        except ValueError:
            pass
        inside = postgres.in_transaction
    try:
        with postgres.transaction():
            postgres.execute("INSERT INTO items (id, name) VALUES (3, 'rolled back')")
            raise UserError('no')
    except UserError:
        pass
    try:
        with postgres.transaction():
            try:
                postgres.execute("INSERT INTO items (id) VALUES (1)")
            except DatabaseError:
                pass
            postgres.execute("SELECT 1")
    except DatabaseError as e:
        aborted = [e.code, 'aborted' in str(e)]
    try:
        postgres.execute("COMMIT")
    except DatabaseError as e:
        commit = str(e)
    r = rows[0]
    return {
        'n': n, 'count': len(rows),
        'row': [r.id, r['name'], str(r.price), r.tags, r.meta, r.at.isoformat(), r.day.isoformat(), list(r.keys())],
        'row2': list(rows[1]),
        'one': [one.name, str(one.double)], 'none': none, 'dup': dup, 'inside': inside,
        'aborted': aborted, 'commit': commit, 'after': postgres.in_transaction,
        'names': [x.name for x in postgres.query("SELECT name FROM items ORDER BY id")],
        'database': postgres.database,
        'warehouse': [postgres_connection('WAREHOUSE').query_one('SELECT count(*) AS n FROM items').n,
                      postgres_connection('WAREHOUSE') is postgres_connection('WAREHOUSE'),
                      postgres_connection('WAREHOUSE').query_one('SELECT pg_backend_pid() AS p').p
                      != postgres.query_one('SELECT pg_backend_pid() AS p').p],
    }
"#,
            "handle_button",
            Value::Null,
        )
        .await;
    assert_eq!(report["state"], "done", "{report}");
    let r = &report["result"];
    assert_eq!(r["n"], json!(2));
    assert_eq!(
        r["row"],
        json!([1, "pen", "1.50", ["a", "b"], {"k": [1, 2]}, "2024-05-01T12:00:00+00:00", "2024-05-01",
               ["id", "name", "price", "tags", "meta", "at", "day"]])
    );
    assert_eq!(r["row2"], json!([2, "ink", "3", [], null, null, null]));
    assert_eq!(r["one"], json!(["pen", "3.00"]));
    assert_eq!(r["none"], Value::Null);
    assert_eq!(r["dup"], json!("23505"));
    assert_eq!(r["inside"], json!(true));
    assert_eq!(r["aborted"], json!(["25P02", true]), "{r}");
    assert!(
        r["commit"]
            .as_str()
            .unwrap_or_default()
            .contains("transaction()"),
        "{r}"
    );
    assert_eq!(r["after"], json!(false));
    assert_eq!(r["names"], json!(["pencil", "ink"]), "{r}");
    assert_eq!(r["warehouse"], json!([2, true, true]), "{r}");
    assert_eq!(
        r["database"],
        json!(format!(
            "postgres@127.0.0.1:{}/{}",
            remote
                .url
                .split(':')
                .nth(2)
                .and_then(|s| s.split('/').next())
                .unwrap_or("?"),
            remote.name
        ))
    );
    // The remote database has what the job committed.
    let c = remote.connect().await;
    let names: Vec<String> = c
        .query("SELECT name FROM items ORDER BY id", &[])
        .await
        .expect("items")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["pencil", "ink"]);
    // Statements are logged (SQL and arguments out, row counts in), never the DSN.
    let logs = project_logs(&p).await;
    let out = lines_of(&logs, "data_out", "postgres");
    assert!(
        out.iter()
            .any(|l| l.starts_with("INSERT INTO items VALUES ($1")
                && l.contains("\nargs: (1, 'pen', '1.50', ['a', 'b']")),
        "{out:?}"
    );
    let inn = lines_of(&logs, "data_in", "postgres");
    assert!(
        inn.contains(&"2 rows affected") && inn.contains(&"2 rows"),
        "{inn:?}"
    );
    assert!(
        inn.iter()
            .any(|l| l.starts_with("error: duplicate key value")),
        "{inn:?}"
    );
    assert_nothing_leaked(&p, &[PG_PASSWORD]).await;
}

#[tokio::test]
async fn postgres_connection_is_reused_and_replaced_when_broken() {
    let (p, remote) = postgres_project().await;
    param(&p, "POSTGRES_LOG", "false").await;
    let task = p
        .task(
            "pid",
            "def handle_cron():\n    return postgres.query_one('SELECT pg_backend_pid() AS pid').pid\n\ndef slow():\n    postgres.query('SELECT pg_sleep(30)')\n",
        )
        .await;
    let pid = |report: &Value| {
        report["result"]
            .as_i64()
            .unwrap_or_else(|| panic!("{report}"))
    };
    let first = p.run(p.job(task, "handle_cron", Value::Null).await).await;
    let second = p.run(p.job(task, "handle_cron", Value::Null).await).await;
    assert_eq!(
        pid(&first),
        pid(&second),
        "one connection for the jobs of a project version"
    );
    // The server ends the connection between jobs: the next job reconnects.
    let c = remote.connect().await;
    c.execute("SELECT pg_terminate_backend($1)", &[&(pid(&first) as i32)])
        .await
        .expect("terminate");
    pg_sync_tests::wait_for(
        "the backend to go",
        std::time::Duration::from_secs(10),
        || async {
            c.query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&(pid(&first) as i32)],
            )
            .await
            .map(|r| r.get::<_, i64>(0) == 0)
            .unwrap_or(false)
        },
    )
    .await;
    let third = p.run(p.job(task, "handle_cron", Value::Null).await).await;
    assert_eq!(third["state"], "done", "{third}");
    assert_ne!(pid(&third), pid(&first));
    // The soft time limit stops a slow remote statement and cancels it on the server.
    p.sql(&format!(
        "UPDATE sync.task SET time_limit = '1 second' WHERE id = {task}"
    ))
    .await;
    let started = std::time::Instant::now();
    let slow = p.run(p.job(task, "slow", Value::Null).await).await;
    assert_failed(&slow, "TimeLimitExceeded");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    pg_sync_tests::wait_for("the remote pg_sleep to be cancelled", std::time::Duration::from_secs(10), || async {
        c.query_one("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT pg_sleep(30)%'", &[])
            .await
            .map(|r| r.get::<_, i64>(0) == 0)
            .unwrap_or(false)
    })
    .await;
    let after = p.run(p.job(task, "handle_cron", Value::Null).await).await;
    assert_eq!(after["state"], "done", "{after}");
    // A job that ends inside a transaction (trusted code can open one without a block):
    // the next job's first statement rolls it back instead of running inside it.
    p.set(
        "core_code",
        "def leave_open():\n    postgres._begin()\n    postgres.execute('CREATE TABLE left_open (x int)')\n    return postgres.in_transaction\n",
    )
    .await;
    let open = p
        .result(
            "def handle_cron():\n    return leave_open()\n",
            "handle_cron",
        )
        .await;
    assert_eq!(open, json!(true));
    let next = p
        .result(
            "def handle_cron():\n    return [postgres.in_transaction, postgres.query_one(\"SELECT to_regclass('left_open') IS NULL AS gone\").gone]\n",
            "handle_cron",
        )
        .await;
    assert_eq!(
        next,
        json!([false, true]),
        "the stale transaction was rolled back"
    );
    // POSTGRES_LOG=false: no statement lines.
    let logs = project_logs(&p).await;
    assert!(
        lines_of(&logs, "data_out", "postgres").is_empty(),
        "{logs:?}"
    );
}

#[tokio::test]
async fn postgres_connection_errors_never_show_the_password() {
    let (p, remote) = postgres_project().await;
    let port = remote
        .url
        .split(':')
        .nth(2)
        .and_then(|s| s.split('/').next())
        .unwrap_or("5432")
        .to_string();
    let code = "def handle_cron():\n    return postgres.query('SELECT 1')\n";
    // A database that does not exist: refused for good, the job fails.
    secret(
        &p,
        "POSTGRES_DSN",
        &format!("postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{port}/no_such_db"),
    )
    .await;
    let err = p.error(code, "handle_cron").await;
    assert!(
        err.contains(&format!(
            "DatabaseError: cannot connect to remote database postgres@127.0.0.1:{port}/no_such_db"
        )) && err.contains("does not exist"),
        "{err}"
    );
    // A connection string that does not parse.
    secret(
        &p,
        "POSTGRES_DSN",
        &format!("postgresql://postgres:{PG_PASSWORD}@127.0.0.1:notaport/db"),
    )
    .await;
    let err = p.error(code, "handle_cron").await;
    assert!(
        err.contains("postgres: the connection string is not valid"),
        "{err}"
    );
    secret(
        &p,
        "POSTGRES_DSN",
        &format!("host=127.0.0.1 password={PG_PASSWORD} sslmode=sometimes"),
    )
    .await;
    let err = p.error(code, "handle_cron").await;
    assert!(
        err.contains("the connection string is not valid (sslmode `sometimes` is not one of"),
        "{err}"
    );
    // Nothing listening: DatabaseUnavailable, the job is retried.
    secret(
        &p,
        "POSTGRES_DSN",
        &format!(
            "postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{}/db",
            free_port()
        ),
    )
    .await;
    let report = p.run_code(code, "handle_cron", Value::Null).await;
    assert_retried(
        &p,
        &report,
        "DatabaseUnavailable: remote database postgres@127.0.0.1",
    )
    .await;
    // Not configured: says which secret to set.
    p.sql(&format!(
        "DELETE FROM sync.project_secret WHERE project_id = {}",
        p.id
    ))
    .await;
    let err = p.error(code, "handle_cron").await;
    assert!(
        err.contains("postgres: secret POSTGRES_DSN is not set"),
        "{err}"
    );
    assert_nothing_leaked(&p, &[PG_PASSWORD]).await;
}

// -----------------------------------------------------------------------------------
// The fakes' webhooks (what demos rely on to see the other side change)
// -----------------------------------------------------------------------------------

/// A tiny HTTP receiver: answers 200 to every POST and keeps (path, headers, body).
struct Receiver {
    port: u16,
    got: std::sync::Arc<std::sync::Mutex<Vec<(String, Value, Value)>>>,
}

impl Receiver {
    fn start() -> Receiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut headers = serde_json::Map::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.insert(k.trim().to_lowercase(), json!(v.trim()));
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|v| v.as_str())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                sink.lock()
                    .expect("lock")
                    .push((path, Value::Object(headers), body));
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        });
        Receiver { port, got }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn received(&self, path: &str) -> Vec<(Value, Value)> {
        self.got
            .lock()
            .expect("lock")
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, h, b)| (h.clone(), b.clone()))
            .collect()
    }
}

#[tokio::test]
async fn fakes_send_webhooks_for_api_changes() {
    let hooks = Receiver::start();
    // GitHub: issues and issue_comment events, with X-GitHub-Event.
    let gh = github_fake();
    let auth = format!("Bearer {GH_TOKEN}");
    let h = [("Authorization", auth.as_str())];
    gh.post(
        "/repos/acme/app/hooks",
        &h,
        &json!({"config": {"url": hooks.url("/gh")}, "events": ["issues", "issue_comment"]}),
    );
    gh.post("/repos/acme/app/issues", &h, &json!({"title": "Hook me"}));
    gh.post(
        "/repos/acme/app/issues/1/comments",
        &h,
        &json!({"body": "a comment"}),
    );
    gh.post(
        "/repos/acme/app/issues/1/labels",
        &h,
        &json!({"labels": ["bug"]}),
    );
    let (status, _) = gh.request(
        "PATCH",
        "/repos/acme/app/issues/1",
        &h,
        Some(&json!({"state": "closed"})),
    );
    assert_eq!(status, 200);
    assert_eq!(
        gh.post("/_fake/flush", &[], &Value::Null),
        json!({"ok": true})
    );
    let events: Vec<(String, String)> = hooks
        .received("/gh")
        .iter()
        .map(|(h, b)| {
            (
                h["x-github-event"].as_str().unwrap_or("?").to_string(),
                b["action"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    let want = [
        ("issues", "opened"),
        ("issue_comment", "created"),
        ("issues", "labeled"),
        ("issues", "closed"),
    ];
    assert_eq!(events, want.map(|(a, b)| (a.to_string(), b.to_string())));
    let first = &hooks.received("/gh")[0].1;
    assert_eq!(
        (
            &first["issue"]["title"],
            &first["repository"]["full_name"],
            &first["sender"]["login"]
        ),
        (&json!("Hook me"), &json!("acme/app"), &json!("pgsync-bot"))
    );
    let state = gh.state();
    assert!(
        state["deliveries"]
            .as_array()
            .is_some_and(|d| d.len() == 4 && d.iter().all(|x| x["status"] == json!(200))),
        "{}",
        state["deliveries"]
    );
    // A wrong token is refused like GitHub does.
    let (status, body) = gh.request("GET", "/user", &[("Authorization", "Bearer nope")], None);
    assert_eq!((status, &body["message"]), (401, &json!("Bad credentials")));

    // Trello: actions on a watched board.
    let tr = FakeServer::start("trello", &["--key", TRELLO_KEY, "--token", TRELLO_TOKEN]);
    let q = format!("?key={TRELLO_KEY}&token={TRELLO_TOKEN}");
    let board = tr.post(&format!("/1/boards{q}"), &[], &json!({"name": "B"}));
    let board_id = board["id"].as_str().expect("board");
    let lists = tr.get(&format!("/1/boards/{board_id}/lists{q}"), &[]);
    assert_eq!(
        lists.as_array().map(Vec::len),
        Some(3),
        "default lists: {lists}"
    );
    tr.post(
        &format!("/1/webhooks{q}"),
        &[],
        &json!({"callbackURL": hooks.url("/trello"), "idModel": board_id}),
    );
    let card = tr.post(
        &format!("/1/cards{q}"),
        &[],
        &json!({"idList": lists[0]["id"], "name": "Card"}),
    );
    tr.post(
        &format!(
            "/1/cards/{}/actions/comments{q}",
            card["id"].as_str().unwrap_or("?")
        ),
        &[],
        &json!({"text": "hello"}),
    );
    tr.post("/_fake/flush", &[], &Value::Null);
    let actions: Vec<Value> = hooks
        .received("/trello")
        .iter()
        .map(|(_, b)| b["action"]["type"].clone())
        .collect();
    assert_eq!(actions, [json!("createCard"), json!("commentCard")]);
    assert_eq!(
        hooks.received("/trello")[1].1["action"]["data"]["text"],
        json!("hello")
    );
    assert_eq!(
        tr.request(
            "GET",
            &format!("/1/boards/{board_id}?key={TRELLO_KEY}&token=bad"),
            &[],
            None
        ),
        (401, json!("invalid token"))
    );

    // Telegram: a user's message goes to the webhook (with its secret), else to getUpdates.
    let tg = FakeServer::start("telegram", &["--token", TG_TOKEN]);
    tg.post(
        &format!("/bot{TG_TOKEN}/setWebhook"),
        &[],
        &json!({"url": hooks.url("/tg"), "secret_token": "s3"}),
    );
    tg.post(
        "/_fake/updates",
        &[],
        &json!({"chat_id": 5, "text": "hi bot"}),
    );
    tg.post("/_fake/flush", &[], &Value::Null);
    let got = hooks.received("/tg");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0["x-telegram-bot-api-secret-token"], json!("s3"));
    assert_eq!(
        (
            &got[0].1["message"]["text"],
            &got[0].1["message"]["chat"]["id"]
        ),
        (&json!("hi bot"), &json!(5))
    );
    tg.post(&format!("/bot{TG_TOKEN}/deleteWebhook"), &[], &json!({}));
    tg.post(
        "/_fake/updates",
        &[],
        &json!({"chat_id": 5, "text": "polled"}),
    );
    let updates = tg.post(&format!("/bot{TG_TOKEN}/getUpdates"), &[], &json!({}));
    assert_eq!(
        updates["result"][0]["message"]["text"],
        json!("polled"),
        "{updates}"
    );
    assert_eq!(
        tg.request("POST", "/botwrong/getMe", &[], Some(&json!({})))
            .0,
        401
    );
}

/// The provider of the "Your own providers" example (docs/providers.md), as written there.
fn readme_provider() -> String {
    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/providers.md"))
            .expect("docs/providers.md");
    let section = page
        .split("\n## Your own providers\n")
        .nth(1)
        .expect("docs/providers.md has the section");
    let block = section.split("```python\n").nth(1).expect("a python block");
    block.split("```").next().expect("closed block").to_string()
}

#[tokio::test]
async fn operator_providers_build_clients_with_pg_sync_rest() {
    // The GitHub fake stands in for the shop: it refuses the X-Api-Key (401), which is
    // enough to see the key go out and the error come back.
    let shop = github_fake();
    let mut p = PyProject::new("shop").await;
    let dir = std::env::temp_dir().join(format!("pg_sync_shop_{}", p.db.name));
    std::fs::create_dir_all(&dir).expect("provider dir");
    std::fs::write(dir.join("shop.py"), readme_provider()).expect("write provider");
    p.worker_env("SYNC_WORKER_EVAL_CONTEXT_PATH", &dir.to_string_lossy());
    providers(&p, &["shop"]).await;
    secret(&p, "SHOP_BASE_URL", &shop.url("")).await;
    secret(&p, "SHOP_API_KEY", HTTP_TOKEN).await;
    let report = p
        .run_code(
            r#"
def handle_cron():
    try:
        shop_order('SO-7')
    except HTTPClientError as e:
        return [e.status, e.url, shop.name, shop.base_url]
"#,
            "handle_cron",
            Value::Null,
        )
        .await;
    assert_eq!(
        report["result"],
        json!([
            401,
            shop.masked("", "/orders/SO-7"),
            "shop",
            shop.masked("", "")
        ]),
        "{report}"
    );
    let request = &shop.requests()[0];
    assert_eq!(
        request["headers"]["x-api-key"],
        json!(HTTP_TOKEN),
        "{request}"
    );
    let logs = project_logs(&p).await;
    assert_eq!(
        lines_of(&logs, "data_out", "shop"),
        vec![format!("GET {}", shop.masked("", "/orders/SO-7"))]
    );
    assert_nothing_leaked(&p, &[HTTP_TOKEN]).await;
    let _ = std::fs::remove_dir_all(&dir);
}
