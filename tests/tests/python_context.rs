// The names task code can use (its evaluation context), through real worker
// processes: params, texts (job language), webhooks, trigger_name, user, log levels,
// log_transmission, add_job, libraries, tools, exceptions and MAGIC.
use pg_sync_tests::python::PyProject;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn params_texts_and_webhooks() {
    let p = PyProject::new("context").await;
    p.sql(&format!(
        "INSERT INTO sync.project_param (project_id, key, value, initial_value) VALUES
           ({id}, 'api_url', NULL, 'https://api.example.com'), ({id}, 'limit', '10', NULL);
         INSERT INTO sync.project_text (project_id, key, lang, value) VALUES
           ({id}, 'greeting', 'en_US', 'Hello'), ({id}, 'greeting', 'fr_FR', 'Bonjour'),
           ({id}, 'bye', 'en_US', 'Bye');
         INSERT INTO sync.setting (key, value) VALUES ('base_url', 'https://sync.example.com/');",
        id = p.id
    ))
    .await;
    let task = p
        .task(
            "ctx",
            r#"
def handle_cron():
    try:
        params.nope
    except AttributeError as e:
        missing = str(e)
    return {
        'param': params.api_url, 'key': params['limit'], 'get': params.get('nope', 'd'),
        'missing': missing,
        'text': texts.greeting, 'fallback': texts.bye, 'lang': get_lang(),
        'webhook': webhooks.incoming,
        'webhook_seen': webhooks.incoming == 'https://sync.example.com/sync/webhook/' + 'tok123' * 3,
    }
"#,
        )
        .await;
    p.sql(&format!(
        "INSERT INTO sync.webhook_trigger (task_id, name, token) VALUES ({task}, 'incoming', 'tok123tok123tok123')"
    ))
    .await;
    let fr = p
        .job_with(task, "handle_cron", Value::Null, "lang", "'fr_FR'")
        .await;
    let en = p.job(task, "handle_cron", Value::Null).await;
    let report = p.run(fr).await;
    assert_eq!(
        report["result"],
        json!({
            "param": "https://api.example.com", "key": "10", "get": "d",
            "missing": "params has no 'nope' (known: api_url, limit)",
            "text": "Bonjour", "fallback": "Bye", "lang": "fr_FR",
            // Code sees the URL; the token, its credential, is masked in the result.
            "webhook": "https://sync.example.com/sync/webhook/***",
            "webhook_seen": true,
        }),
        "{report}"
    );
    let report = p.finished(en).await;
    assert_eq!(report["result"]["text"], json!("Hello"), "{report}");
    assert_eq!(report["result"]["lang"], json!("en_US"), "{report}");
}

#[tokio::test]
async fn trigger_name_user_and_magic() {
    let p = PyProject::new("context").await;
    p.set(
        "common_code",
        "def who():\n    return [trigger_name, user]\n",
    )
    .await;
    let task = p
        .task(
            "t",
            r#"
def handle_button():
    return {
        'trigger_name': trigger_name, 'user': user, 'common': who(),
        'magic': [MAGIC.trigger_name, MAGIC.user, MAGIC.who(), MAGIC.env is env,
                  MAGIC.log is log, MAGIC.handle_button is handle_button],
    }
"#,
        )
        .await;
    let a = p
        .job_with(
            task,
            "handle_button",
            Value::Null,
            "trigger_name, user_name",
            "'go', 'alice'",
        )
        .await;
    let report = p.run(a).await;
    assert_eq!(
        report["result"],
        json!({"trigger_name": "go", "user": "alice", "common": ["go", "alice"],
               "magic": ["go", "alice", ["go", "alice"], true, true, true]}),
        "{report}"
    );
    // Per-job values change with the job, the prepared layers notwithstanding.
    let b = p
        .job_with(
            task,
            "handle_button",
            Value::Null,
            "trigger_name, user_name",
            "'stop', 'bob'",
        )
        .await;
    let report = p.run(b).await;
    assert_eq!(
        report["result"]["common"],
        json!(["stop", "bob"]),
        "{report}"
    );
    let err = p
        .error("def handle_cron():\n    return MAGIC.nope\n", "handle_cron")
        .await;
    assert!(err.contains("MAGIC has no 'nope'"), "{err}");
}

#[tokio::test]
async fn log_levels_and_transmissions() {
    let p = PyProject::new("context").await;
    let task = p
        .task(
            "t",
            r#"
def handle_cron():
    log('debug line', LOG_DEBUG)
    log('info line', LOG_INFO)
    log_transmission('https://api.example.com/orders', '{"id": 1}')
    return 'ok'

def warn():
    log('careful', LOG_WARNING)
    return 'warned'

def fail():
    db.execute('CREATE TABLE IF NOT EXISTS written (x int)')
    log('bad', level=LOG_ERROR)
    return 'returned'

def bad_level():
    log('x', 'loud')
"#,
        )
        .await;
    let job = p.job(task, "handle_cron", Value::Null).await;
    let report = p.run(job).await;
    assert_eq!(report["state"], "done", "{report}");
    assert_eq!(report["warning"], json!(false));
    let logs = p.logs(job).await;
    let want = [
        ("debug", "message", None, "debug line"),
        ("info", "message", None, "info line"),
        (
            "info",
            "data_out",
            Some("https://api.example.com/orders"),
            "{\"id\": 1}",
        ),
    ];
    for (level, kind, recipient, message) in want {
        assert!(
            logs.iter().any(|l| l.0 == level
                && l.1 == kind
                && l.2.as_deref() == recipient
                && l.3 == message),
            "missing {level} {kind} {message}: {logs:?}"
        );
    }
    let job = p.job(task, "warn", Value::Null).await;
    let report = p.run(job).await;
    assert_eq!(report["state"], "done", "{report}");
    assert_eq!(report["warning"], json!(true), "{report}");
    let job = p.job(task, "fail", Value::Null).await;
    let report = p.run(job).await;
    assert_eq!(report["state"], "failed", "{report}");
    assert!(report["error"].as_str().unwrap_or("").contains("bad"));
    let written: i64 = p
        .scalar("SELECT count(*) FROM pg_class WHERE relname = 'written'")
        .await;
    assert_eq!(written, 0, "a job that logged an error is rolled back");
    let job = p.job(task, "bad_level", Value::Null).await;
    let report = p.run(job).await;
    assert!(
        report["error"]
            .as_str()
            .unwrap_or("")
            .contains("log level must be one of"),
        "{report}"
    );
}

#[tokio::test]
async fn add_job_queues_child_jobs() {
    let p = PyProject::new("context").await;
    let task = p
        .task(
            "t",
            r#"
def handle_cron():
    add_job('child', priority=3, eta=3600, max_retries=2, description='later', identity_key='k1')(1, x=2)
    add_job('child', identity_key='k1')(99)
    add_job(child)('now', x=datetime.date(2024, 1, 2))
    add_job('child', priority=4)('named')
    return 'parent'

def child(a, x=None):
    """Copy one thing.

    More details that are not the description."""
    return [a, x, trigger_name]

def failing_parent():
    add_job('child')('never')
    raise UserError('no children then')

def bad():
    add_job('child', colour='red')
"#,
        )
        .await;
    let parent = p
        .job_with(
            task,
            "handle_cron",
            Value::Null,
            "trigger_name, lang",
            "'nightly', 'de_DE'",
        )
        .await;
    assert_eq!(p.run(parent).await["result"], json!("parent"));
    let rows = p
        .client
        .query(
            "SELECT handler, args, priority, max_retries, description, identity_key, trigger_kind,
                    trigger_name, lang, task_id, round(extract(epoch FROM eta - now()) / 60)::int, id
             FROM sync.job WHERE parent_id = $1 ORDER BY id",
            &[&parent],
        )
        .await
        .expect("children");
    assert_eq!(rows.len(), 3, "identity_key k1 queued only once");
    let first = &rows[0];
    assert_eq!(first.get::<_, String>(0), "child");
    assert_eq!(
        first.get::<_, Value>(1),
        json!({"args": [1], "kwargs": {"x": 2}})
    );
    assert_eq!(first.get::<_, i32>(2), 3);
    assert_eq!(first.get::<_, i32>(3), 2);
    assert_eq!(first.get::<_, Option<String>>(4).as_deref(), Some("later"));
    assert_eq!(first.get::<_, Option<String>>(5).as_deref(), Some("k1"));
    assert_eq!(first.get::<_, Option<String>>(6).as_deref(), Some("job"));
    assert_eq!(
        first.get::<_, Option<String>>(7).as_deref(),
        Some("nightly")
    );
    assert_eq!(first.get::<_, Option<String>>(8).as_deref(), Some("de_DE"));
    assert_eq!(first.get::<_, Option<i64>>(9), Some(task));
    let minutes: i32 = first.get(10);
    assert!(
        (59..=61).contains(&minutes),
        "eta in an hour, got {minutes} min"
    );
    // Without a description: the first line of the function's docstring (queue_job),
    // the function given itself or by name.
    for row in &rows[1..] {
        assert_eq!(
            row.get::<_, Option<String>>(4).as_deref(),
            Some("Copy one thing.")
        );
    }
    // The second child (no eta) runs now, with its arguments.
    let second: i64 = rows[1].get(11);
    assert_eq!(
        rows[1].get::<_, Value>(1),
        json!({"args": ["now"], "kwargs": {"x": "2024-01-02"}})
    );
    let report = p.finished(second).await;
    assert_eq!(
        report["result"],
        json!(["now", "2024-01-02", "nightly"]),
        "{report}"
    );

    let failing = p.job(task, "failing_parent", Value::Null).await;
    assert_eq!(p.run(failing).await["state"], "failed");
    let n: i64 = p
        .scalar(&format!(
            "SELECT count(*) FROM sync.job WHERE parent_id = {failing}"
        ))
        .await;
    assert_eq!(n, 0, "a failed job queues no children");
    let bad = p.job(task, "bad", Value::Null).await;
    let report = p.run(bad).await;
    assert!(
        report["error"]
            .as_str()
            .unwrap_or("")
            .contains("unknown option 'colour'"),
        "{report}"
    );
}

/// A loopback HTTP server on `ip` answering each request with what `answer` makes of its
/// path (a whole HTTP response); its base URL and the number of connections it accepted.
async fn http_server(
    ip: &str,
    answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let (count, answer) = (hits.clone(), Arc::new(answer));
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                // The client may hang up first (a download over its size limit).
                let _ = sock.write_all(&answer(&path)).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://{addr}"), hits)
}

/// A 200 response with `body`.
fn ok(body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn redirect(location: &str) -> Vec<u8> {
    format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

#[tokio::test]
async fn libraries_and_tools() {
    let mut p = PyProject::new("context").await;
    // url2base64 refuses loopback addresses unless the worker allows them.
    p.worker_env("SYNC_WORKER_FETCH_ALLOW", "127.0.0.1/32");
    let (base, _) = http_server("127.0.0.1", |_| ok(b"\x89PNG-bytes")).await;
    let url = format!("{base}/image.png");
    let code = format!(
        r#"
def handle_cron():
    d = datetime.datetime(2024, 1, 31, 12, 0, tzinfo=datetime.timezone.utc)
    return {{
        'json': json.loads(json.dumps({{'a': [1, 2]}})),
        'time': time.time() > 1700000000,
        'strftime': d.strftime(DEFAULT_SERVER_DATETIME_FORMAT),
        'timedelta': str(d + datetime.timedelta(days=1)),
        'dateutil_parse': dateutil.parser.parse('2024-03-04T05:06:07Z').isoformat(),
        'relativedelta': str((d + dateutil.relativedelta.relativedelta(months=1)).date()),
        'timezone': str(timezone('Europe/Paris').localize(datetime.datetime(2024, 7, 1)).utcoffset()),
        'b64': [b64encode(b'hi').decode(), b64decode('aGk=').decode()],
        'url2base64': b64decode(url2base64('{url}')).decode('latin-1'),
        'html': html2plaintext('<p>Hello <b>World</b></p><ul><li>one</li></ul><a href="https://x.org">site</a>'),
        'type2str': [type2str(1), type2str('s')],
        'get_lang': get_lang(),
        'hidden_module_part': hasattr(json, 'codecs'),
    }}
"#
    );
    let result = p.result(&code, "handle_cron").await;
    assert_eq!(
        result,
        json!({
            "json": {"a": [1, 2]},
            "time": true,
            "strftime": "2024-01-31 12:00:00",
            "timedelta": "2024-02-01 12:00:00+00:00",
            "dateutil_parse": "2024-03-04T05:06:07+00:00",
            "relativedelta": "2024-02-29",
            "timezone": "2:00:00",
            "b64": ["aGk=", "hi"],
            "url2base64": "\u{89}PNG-bytes",
            "html": "Hello World\n\n* one\n\nsite [1]\n\n[1] https://x.org",
            "type2str": ["<class 'int'>", "<class 'str'>"],
            "get_lang": "en_US",
            "hidden_module_part": false,
        })
    );
}

/// Task code fetching each URL of `urls` with url2base64: what it got (text) or the
/// error (`UserError: ...`, `OSError: ...`), by URL. `extra`: more keyword arguments.
async fn fetch_all(p: &PyProject, urls: &[String], extra: &str) -> Value {
    let code = format!(
        r#"
URLS = {urls}

def handle_cron():
    out = {{}}
    for url in URLS:
        try:
            out[url] = b64decode(url2base64(url{extra})).decode()
        except UserError as e:
            out[url] = 'UserError: ' + str(e)
        except OSError as e:
            out[url] = 'OSError: ' + str(e)
    return out
"#,
        urls = serde_json::to_string(urls).unwrap()
    );
    p.result(&code, "handle_cron").await
}

#[tokio::test]
async fn url2base64_refuses_the_workers_host_and_metadata_addresses() {
    // Task code must not read the worker's own services (its admin API, anything else on
    // the loopback) nor a cloud metadata service, however the address is written.
    let p = PyProject::new("fetch").await;
    let (local, hits) = http_server("127.0.0.1", |_| ok(b"local secret")).await;
    let port = local.rsplit(':').next().unwrap().to_string();
    let admin = p.worker().await.admin_url().await;
    let refused: Vec<(String, &str)> = vec![
        (format!("{admin}/health"), "127.0.0.1 is a loopback address"),
        (format!("{local}/"), "127.0.0.1 is a loopback address"),
        (
            format!("http://localhost:{port}/"),
            "localhost resolves to 127.0.0.1, a loopback address",
        ),
        (
            format!("http://2130706433:{port}/"),
            "2130706433 resolves to 127.0.0.1, a loopback address",
        ),
        (format!("http://127.8.9.10:{port}/"), "a loopback address"),
        (format!("http://[::1]:{port}/"), "::1 is a loopback address"),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            "::ffff:127.0.0.1 is a loopback address",
        ),
        (
            format!("http://0.0.0.0:{port}/"),
            "0.0.0.0 is an unspecified address",
        ),
        (
            format!("http://[::]:{port}/"),
            ":: is an unspecified address",
        ),
        (
            "http://169.254.169.254/latest/meta-data/".into(),
            "169.254.169.254 is a link-local address",
        ),
        (
            "http://[::ffff:169.254.169.254]/latest/meta-data/".into(),
            "a link-local address",
        ),
        (
            "http://[fe80::1]/".into(),
            "fe80::1 is a link-local address",
        ),
        (
            "http://[fd00:ec2::254]/latest/meta-data/".into(),
            "fd00:ec2::254 is a cloud metadata address",
        ),
        (
            "http://224.0.0.251/".into(),
            "224.0.0.251 is a multicast address",
        ),
        ("http://[ff02::1]/".into(), "ff02::1 is a multicast address"),
        (
            "http://255.255.255.255/".into(),
            "255.255.255.255 is the broadcast address",
        ),
    ];
    let urls: Vec<String> = refused.iter().map(|(u, _)| u.clone()).collect();
    let got = fetch_all(&p, &urls, "").await;
    for (url, why) in &refused {
        let err = got[url.as_str()].as_str().unwrap_or_default();
        assert!(
            err.starts_with(&format!("UserError: url2base64: refusing to fetch {url}: "))
                && err.contains(why)
                && err.contains("; to allow it, set SYNC_WORKER_FETCH_ALLOW=")
                && err.ends_with(" in the worker's environment"),
            "{url}: expected a refusal saying {why:?}, got {err:?}"
        );
    }
    assert!(
        got[format!("http://[::ffff:127.0.0.1]:{port}/").as_str()]
            .as_str()
            .unwrap_or_default()
            .contains("SYNC_WORKER_FETCH_ALLOW=127.0.0.1/32"),
        "an IPv4-mapped address is judged, and allowed, as its IPv4 address: {got}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "refused before connecting");
    // Uncaught, the refusal fails the job at once (a UserError: no retry).
    let err = p
        .error(
            "def handle_cron():\n    return url2base64('http://169.254.169.254/latest/meta-data/iam/')\n",
            "handle_cron",
        )
        .await;
    assert!(
        err.contains("UserError: url2base64: refusing to fetch http://169.254.169.254/latest/meta-data/iam/: \
             169.254.169.254 is a link-local address (where cloud metadata services answer); \
             to allow it, set SYNC_WORKER_FETCH_ALLOW=169.254.169.254/32 in the worker's environment"),
        "{err}"
    );
}

#[tokio::test]
async fn url2base64_allow_list_redirects_and_size_limit() {
    let mut p = PyProject::new("fetch").await;
    p.worker_env("SYNC_WORKER_FETCH_ALLOW", " 127.0.0.1/32 ,::1");
    // Loopback too, but not in the allow-list: only reachable through a redirect.
    let (hidden, hidden_hits) = http_server("127.0.0.2", |_| ok(b"internal")).await;
    let to_hidden = format!("{hidden}/admin");
    let (base, _) = http_server("127.0.0.1", move |path| match path {
        "/image" => ok(b"image-bytes"),
        "/moved" => redirect("/image"),
        "/to-hidden" => redirect(&to_hidden),
        "/to-metadata" => redirect("http://169.254.169.254/latest/meta-data/"),
        // 21 MiB, with no length announced: the limit is found while reading.
        "/endless" => {
            let mut out =
                b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n".to_vec();
            out.resize(out.len() + 21 * 1024 * 1024, b'x');
            out
        }
        // A length over the limit is refused before the body is read.
        "/announced" => {
            b"HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\nConnection: close\r\n\r\nxx".to_vec()
        }
        "/2000" => ok(&[b'k'; 2000]),
        _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
    })
    .await;
    let url = |path: &str| format!("{base}{path}");
    let paths = [
        "/image",
        "/moved",
        "/to-hidden",
        "/to-metadata",
        "/endless",
        "/announced",
        "/nope",
    ];
    let urls: Vec<String> = paths.iter().map(|path| url(path)).collect();
    let got = fetch_all(&p, &urls, "").await;
    // The allow-list lets the loopback server through; a redirect within it is followed.
    assert_eq!(got[url("/image").as_str()], json!("image-bytes"), "{got}");
    assert_eq!(got[url("/moved").as_str()], json!("image-bytes"), "{got}");
    // Every redirect target is checked again: 127.0.0.2 is not in the allow-list.
    assert_eq!(
        got[url("/to-hidden").as_str()],
        json!(format!(
            "UserError: url2base64: refusing to fetch {hidden}/admin (redirected to by {}): \
             127.0.0.2 is a loopback address (the worker's own host); to allow it, set \
             SYNC_WORKER_FETCH_ALLOW=127.0.0.2/32 in the worker's environment",
            url("/to-hidden")
        ))
    );
    assert_eq!(hidden_hits.load(Ordering::SeqCst), 0, "{got}");
    assert!(
        got[url("/to-metadata").as_str()]
            .as_str()
            .unwrap_or_default()
            .starts_with(
                "UserError: url2base64: refusing to fetch http://169.254.169.254/latest/meta-data/ (redirected to by"
            ),
        "{got}"
    );
    // 20 MiB at most, read or announced.
    for path in ["/endless", "/announced"] {
        assert_eq!(
            got[url(path).as_str()],
            json!(format!(
                "UserError: url2base64: {} is larger than 20 MiB, the most url2base64 downloads: \
                 pass max_size=<bytes> to allow more",
                url(path)
            )),
            "{got}"
        );
    }
    assert_eq!(
        got[url("/nope").as_str()],
        json!(format!(
            "OSError: url2base64: GET {} returned 404 Not Found",
            url("/nope")
        ))
    );
    // max_size moves the limit.
    let small = fetch_all(&p, &[url("/2000")], ", max_size=1999").await;
    assert_eq!(
        small[url("/2000").as_str()],
        json!(format!(
            "UserError: url2base64: {} is larger than 1999 bytes, the most url2base64 downloads: \
             pass max_size=<bytes> to allow more",
            url("/2000")
        ))
    );
    let fits = fetch_all(&p, &[url("/2000")], ", max_size=2000").await;
    assert_eq!(fits[url("/2000").as_str()], json!("k".repeat(2000)));
}

#[tokio::test]
async fn url2base64_names_a_bad_allow_list() {
    let mut p = PyProject::new("fetch").await;
    p.worker_env("SYNC_WORKER_FETCH_ALLOW", "127.0.0.1/32,localhost");
    let err = p
        .error(
            "def handle_cron():\n    return url2base64('https://example.com/')\n",
            "handle_cron",
        )
        .await;
    assert!(
        err.contains(
            "UserError: url2base64: SYNC_WORKER_FETCH_ALLOW holds 'localhost', which is not an IP network"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn exceptions_fail_jobs_with_their_message() {
    let p = PyProject::new("context").await;
    for (raise, kind) in [
        ("UserError('wrong input')", "UserError: wrong input"),
        ("ValidationError('bad data')", "ValidationError: bad data"),
        ("OSError('disk')", "OSError: disk"),
    ] {
        let err = p
            .error(
                &format!("def handle_cron():\n    raise {raise}\n"),
                "handle_cron",
            )
            .await;
        assert!(err.contains(kind), "{err}");
    }
    let result = p
        .result(
            "def handle_cron():\n    try:\n        raise ValidationError('x')\n    except UserError as e:\n        return [str(e), isinstance(e, UserError)]\n",
            "handle_cron",
        )
        .await;
    assert_eq!(result, json!(["x", true]));
}
