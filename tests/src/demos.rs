// Helpers of the demo project tests (tests/tests/demo_*.rs): load a demo of sql/demo,
// exactly as shipped, into a fresh database, set its settings, run a real worker whose
// webhook URLs are the ones it serves, wait for jobs, and let the fakes' webhooks settle.
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tokio_postgres::Client;

use crate::fakes::FakeServer;
use crate::python::worker_bin;
use crate::{sqlstate, wait_for, TestDb, WorkerProcess};

/// `sql/demo/<file>` of this checkout.
pub fn demo_file(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../sql/demo")
        .join(file)
}

/// Run a setup file of sql/demo. Two tests creating the same (cluster-wide) role or
/// granting it at once can fail with a concurrency error: try again, it exists then.
pub async fn run_sql_file(client: &Client, file: &str) {
    let path = demo_file(file);
    let sql = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut tries = 0;
    loop {
        match client.batch_execute(&sql).await {
            Ok(()) => return,
            Err(e)
                if tries < 10 && matches!(sqlstate(&e).0.as_str(), "23505" | "XX000" | "40001") =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50 * tries)).await;
            }
            Err(e) => panic!("{file}: {e:?}"),
        }
    }
}

/// A free TCP port on 127.0.0.1 (for a worker whose base URL must be known up front).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A demo project imported into a fresh database.
pub struct Demo {
    pub db: TestDb,
    pub client: Client,
    pub name: String,
    pub id: i64,
    /// `http://127.0.0.1:PORT`: where the worker's webhook server listens, and its base URL.
    pub base_url: String,
    pub worker: Option<WorkerProcess>,
    /// How `sync_worker` is started: a binary and its first arguments (by default
    /// SYNC_WORKER_BIN; the package test uses the installed unit's command line).
    pub worker_program: Vec<String>,
}

impl Demo {
    /// A fresh database, the demo's setup files run in it, then `sql/demo/<name>.json`
    /// imported with `sync_worker import` (as the README says to).
    pub async fn load(name: &str, setup_files: &[&str]) -> Demo {
        let program = vec![worker_bin().display().to_string()];
        Self::load_into(TestDb::new().await, program, name, setup_files).await
    }

    /// `load` into database `db`, with `sync_worker` started as `worker_program`.
    pub async fn load_into(
        db: TestDb,
        worker_program: Vec<String>,
        name: &str,
        setup_files: &[&str],
    ) -> Demo {
        let client = db.connect().await;
        for file in setup_files {
            run_sql_file(&client, file).await;
        }
        let doc = demo_file(&format!("{name}.json"));
        let out = Command::new(&worker_program[0])
            .args(&worker_program[1..])
            .arg("--database-url")
            .arg(&db.url)
            .arg("import")
            .arg(&doc)
            .output()
            .expect("start sync_worker import");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "sync_worker import {} failed: {stdout}{}",
            doc.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: Value = serde_json::from_str(stdout.trim()).expect("import prints JSON");
        assert_eq!(printed["name"], name);
        let id = printed["project_id"].as_i64().expect("project_id");
        Demo {
            db,
            client,
            name: name.to_string(),
            id,
            base_url: format!("http://127.0.0.1:{}", free_port()),
            worker: None,
            worker_program,
        }
    }

    pub async fn sql(&self, sql: &str) {
        crate::exec(&self.client, sql).await
    }

    /// Set the value of a secret the document declares (import leaves it NULL).
    pub async fn secret(&self, key: &str, value: &str) {
        let n = self
            .client
            .execute(
                "UPDATE sync.project_secret SET value = $3 WHERE project_id = $1 AND key = $2",
                &[&self.id, &key, &value],
            )
            .await
            .expect("set secret");
        assert_eq!(n, 1, "the document declares no secret {key}");
    }

    /// Set the value of a param the document declares.
    pub async fn param(&self, key: &str, value: &str) {
        let n = self
            .client
            .execute(
                "UPDATE sync.project_param SET value = $3 WHERE project_id = $1 AND key = $2",
                &[&self.id, &key, &value],
            )
            .await
            .expect("set param");
        assert_eq!(n, 1, "the document declares no param {key}");
    }

    pub async fn activate(&self) {
        self.client
            .execute(
                "UPDATE sync.project SET active = true WHERE id = $1",
                &[&self.id],
            )
            .await
            .expect("activate");
    }

    /// Start the worker: one executor, webhooks served at `base_url`, which is also the
    /// base of `webhooks.NAME`.
    pub async fn start_worker(&mut self) {
        let listen = self.base_url.trim_start_matches("http://").to_string();
        let program: Vec<&str> = self.worker_program.iter().map(String::as_str).collect();
        let worker = WorkerProcess::start_program(
            &program,
            &[
                "--database-url",
                &self.db.url,
                "--admin-listen",
                "127.0.0.1:0",
                "--executors",
                "1",
                "--poll-interval",
                "200ms",
                "--webhook-listen",
                &listen,
                "--base-url",
                &self.base_url,
            ],
            &[],
        );
        worker.webhook_url().await;
        self.worker = Some(worker);
    }

    /// URL of a webhook trigger of the project.
    pub async fn webhook(&self, trigger: &str) -> String {
        let token: String = self
            .client
            .query_one(
                "SELECT token FROM sync.webhook_trigger WHERE project_id = $1 AND name = $2",
                &[&self.id, &trigger],
            )
            .await
            .expect("webhook token")
            .get(0);
        format!("{}/sync/webhook/{token}", self.base_url)
    }

    /// Give a webhook trigger of the project a signing secret: the worker then answers
    /// 401 to requests without a matching `X-Hub-Signature-256` (GitHub's signature).
    pub async fn signing_secret(&self, trigger: &str, secret: &str) {
        let n = self
            .client
            .execute(
                "UPDATE sync.webhook_trigger SET signing_secret = $3 WHERE project_id = $1 AND name = $2",
                &[&self.id, &trigger, &secret],
            )
            .await
            .expect("set the signing secret");
        assert_eq!(n, 1, "the project has no webhook trigger {trigger}");
    }

    /// Press a button and wait for its job; (state, result, error).
    pub async fn press(&self, button: &str) -> (i64, Value) {
        let id: i64 = self
            .client
            .query_one("SELECT sync_run_button($1, $2)", &[&self.name, &button])
            .await
            .expect("press the button")
            .get(0);
        let result = self.done(id).await;
        (id, result)
    }

    /// Wait for job `id` to end; panics unless it is done; its result.
    pub async fn done(&self, id: i64) -> Value {
        let (state, result, error) = self.finish(id).await;
        assert_eq!(
            state,
            "done",
            "job {id}: {error:?}\n{}",
            self.log_text().await
        );
        result
    }

    /// Wait for job `id` to end; (state, result, error).
    pub async fn finish(&self, id: i64) -> (String, Value, Option<String>) {
        wait_for(&format!("job {id}"), Duration::from_secs(60), || async {
            self.client
                .query_one(
                    "SELECT state NOT IN ('pending', 'running') FROM sync.job WHERE id = $1",
                    &[&id],
                )
                .await
                .map(|r| r.get::<_, bool>(0))
                .unwrap_or(false)
        })
        .await;
        let row = self
            .client
            .query_one(
                "SELECT state, result, error FROM sync.job WHERE id = $1",
                &[&id],
            )
            .await
            .expect("read job");
        (
            row.get(0),
            row.get::<_, Option<Value>>(1).unwrap_or(Value::Null),
            row.get(2),
        )
    }

    /// Wait for every job of the project to end (children included).
    pub async fn idle(&self) {
        wait_for("the queue to drain", Duration::from_secs(60), || async {
            self.count("SELECT count(*) FROM sync.job WHERE state IN ('pending', 'running')")
                .await
                == 0
        })
        .await;
    }

    /// Fails the test, with their errors, if any job failed.
    pub async fn no_failed_jobs(&self) {
        let rows = self
            .client
            .query(
                "SELECT id, trigger_name, handler, error FROM sync.job WHERE state = 'failed' ORDER BY id",
                &[],
            )
            .await
            .expect("failed jobs");
        let failed: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "job {} ({} {}): {}",
                    r.get::<_, i64>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                    r.get::<_, Option<String>>(3).unwrap_or_default()
                )
            })
            .collect();
        assert!(failed.is_empty(), "failed jobs:\n{}", failed.join("\n"));
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// The project's log lines, for failure messages.
    pub async fn log_text(&self) -> String {
        self.client
            .query(
                "SELECT job_id, level, message FROM sync.log ORDER BY id",
                &[],
            )
            .await
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        format!(
                            "{:?} {}: {}",
                            r.get::<_, Option<i64>>(0),
                            r.get::<_, String>(1),
                            r.get::<_, String>(2)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }

    /// Make the cron trigger due now and wait for the run it enqueues; its result. The
    /// trigger is then scheduled a day later, so that no run of its own schedule comes
    /// between the test's steps.
    pub async fn run_cron(&self, trigger: &str) -> Value {
        let id = self.start_cron(trigger).await;
        self.done(id).await
    }

    /// Make the cron trigger due now, as `run_cron` does; the id of the job it enqueued.
    pub async fn start_cron(&self, trigger: &str) -> i64 {
        // A run already due (e.g. the first one after the project was switched on) is
        // let through first.
        let settled = "SELECT c.next_run_at > sync.clock() AND NOT EXISTS (
                           SELECT 1 FROM sync.job j WHERE j.trigger_kind = 'cron' AND j.trigger_id = c.id
                           AND j.state IN ('pending', 'running'))
                       FROM sync.cron_trigger c WHERE c.project_id = $1 AND c.name = $2";
        wait_for(
            &format!("cron {trigger} to be idle"),
            Duration::from_secs(30),
            || async {
                self.client
                    .query_one(settled, &[&self.id, &trigger])
                    .await
                    .map(|r| r.get::<_, bool>(0))
                    .unwrap_or(false)
            },
        )
        .await;
        let before: i64 = self
            .client
            .query_one(
                "SELECT coalesce(max(id), 0) FROM sync.job WHERE trigger_kind = 'cron' AND trigger_name = $1",
                &[&trigger],
            )
            .await
            .expect("cron jobs")
            .get(0);
        self.client
            .execute(
                "UPDATE sync.cron_trigger SET next_run_at = sync.clock() WHERE project_id = $1 AND name = $2",
                &[&self.id, &trigger],
            )
            .await
            .expect("make the cron due");
        let start = std::time::Instant::now();
        let id = loop {
            let id: i64 = self
                .client
                .query_one(
                    "SELECT coalesce(min(id), 0) FROM sync.job
                     WHERE trigger_kind = 'cron' AND trigger_name = $1 AND id > $2",
                    &[&trigger, &before],
                )
                .await
                .expect("cron jobs")
                .get(0);
            if id > 0 {
                break id;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "cron {trigger} was not run within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        self.client
            .execute(
                "UPDATE sync.cron_trigger SET next_run_at = sync.clock() + interval '1 day'
                 WHERE project_id = $1 AND name = $2",
                &[&self.id, &trigger],
            )
            .await
            .expect("park the cron");
        id
    }
}

/// The webhooks a fake sent so far (with the status each got).
pub fn deliveries(fake: &FakeServer) -> Vec<Value> {
    match fake.state()["deliveries"].clone() {
        Value::Array(items) => items,
        other => panic!("fake {}: deliveries are {other}", fake.kind),
    }
}

/// Wait until the fakes have no webhook delivery left to send, and none of them makes
/// another: deliveries answered by the worker may have called the other fake, which
/// queued deliveries of its own. Returns how many each fake has sent in all.
pub async fn settle(fakes: &[&FakeServer]) -> Vec<usize> {
    let mut last: Option<Vec<usize>> = None;
    let mut stable = 0;
    for _ in 0..200 {
        for fake in fakes {
            fake.post("/_fake/flush", &[], &Value::Null);
        }
        let now: Vec<usize> = fakes.iter().map(|f| deliveries(f).len()).collect();
        if last.as_ref() == Some(&now) {
            stable += 1;
            if stable == 2 {
                return now;
            }
        } else {
            stable = 0;
        }
        last = Some(now);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    panic!("the fakes' webhooks never settled: {last:?} deliveries (a loop?)")
}

/// The Trello card that the GitHub <-> Trello demo links to GitHub ref `issue`
/// (`owner/name#number`), if any.
pub async fn card_linked_to(client: &Client, issue: &str) -> Option<String> {
    client
        .query_opt(
            "SELECT CASE WHEN system1 = 'trello' THEN ref1 ELSE ref2 END
             FROM sync_search_links('github_trello_issue', jsonb_build_object('github', $1::text, 'trello', null))",
            &[&issue],
        )
        .await
        .expect("search links")
        .map(|r| r.get(0))
}
