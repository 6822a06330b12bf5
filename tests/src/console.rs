// The web console over plain HTTP (no browser): sign in, keep the cookies, read pages,
// post forms; for the tests of what a browser would not send (forged or stale forms).
use crate::{exec, scalar, TestDb};
use std::collections::BTreeMap;
use std::time::Duration;

pub struct ConsoleHttp {
    pub http: reqwest::Client,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    cookies: BTreeMap<String, String>,
}

/// One answer: status, `Location`, body, and the server's render time (Server-Timing).
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
    pub render_ms: Option<f64>,
}

impl ConsoleHttp {
    pub fn new(base: &str) -> ConsoleHttp {
        ConsoleHttp {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http client"),
            base: base.to_string(),
            cookies: BTreeMap::new(),
        }
    }

    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, resp: reqwest::Response) -> Answer {
        for c in resp.headers().get_all("set-cookie") {
            let c = c.to_str().unwrap_or_default();
            let pair = c.split(';').next().unwrap_or_default();
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty() {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_string(), v.to_string());
                }
            }
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let render_ms = resp
            .headers()
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split("dur=").nth(1))
            .and_then(|v| v.parse().ok());
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        Answer {
            status,
            location,
            body,
            render_ms,
        }
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .expect("GET");
        self.finish(resp).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .expect("POST");
        self.finish(resp).await
    }

    /// Sign in (loading the form first for its token); the answer to the POST.
    pub async fn sign_in(&mut self, role: &str, password: &str) -> Answer {
        let page = self.get("/console/signin").await;
        let token = hidden(&page.body, "csrf").expect("the sign-in form's token");
        self.post(
            "/console/signin",
            &[
                ("role", role),
                ("password", password),
                ("csrf", &token),
                ("next", "/console/"),
            ],
        )
        .await
    }

    /// The CSRF token of the signed-in session, read from a page's sign-out form.
    pub async fn csrf(&mut self) -> String {
        let page = self.get("/console/").await;
        hidden(&page.body, "csrf").expect("a form with the session's token")
    }

    /// The cookies held now, as a `Cookie` header (to replay them later).
    pub fn clone_cookies(&self) -> String {
        self.cookie_header()
    }

    /// Forget a cookie (e.g. to send a form without the session).
    pub fn drop_cookie(&mut self, name: &str) {
        self.cookies.remove(name);
    }
}

/// The value of the first hidden input `name` in a page.
pub fn hidden(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &html[at + name.len() + 15..];
    rest.split('"').next().map(str::to_string)
}

/// The console tests' roles: con_user, con_dev, con_admin (trust), con_pw (sync_user,
/// password `right-password-1`, checked), con_none (no sync_* role). Roles are
/// cluster-wide: made once, whichever test comes first.
pub async fn roles(db: &TestDb) {
    create_roles(db, ROLES_SQL).await;
    let c = db.connect().await;
    password_checked_for(&c, "con_pw").await;
}

/// The editing tests' roles: ced_user, ced_dev, ced_admin (trust), and ced_tutorial_runner
/// (NOLOGIN, the tutorial project's run_as, granted to ced_admin).
pub async fn editing_roles(db: &TestDb) {
    create_roles(db, EDITING_ROLES_SQL).await;
}

/// A worker with the console on (webhooks off) and the editing roles; its admin URL.
pub async fn editing_console(db: &TestDb) -> (crate::WorkerProcess, String) {
    editing_roles(db).await;
    let worker = crate::WorkerProcess::start(&db.url, &["--webhook-listen", "off"]);
    let base = worker.admin_url().await;
    (worker, base)
}

/// Run role-creating SQL; tests at once race on the cluster-wide catalog ("tuple
/// concurrently updated"): try again.
async fn create_roles(db: &TestDb, sql: &str) {
    let c = db.connect().await;
    for tries in 1.. {
        match c.batch_execute(sql).await {
            Ok(()) => break,
            Err(e) if tries < 10 => {
                eprintln!("creating the roles, try {tries}: {e}");
                tokio::time::sleep(Duration::from_millis(100 * tries)).await;
            }
            Err(e) => panic!("creating the roles: {e}"),
        }
    }
}

const EDITING_ROLES_SQL: &str = "DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ced_user') THEN
             CREATE ROLE ced_user LOGIN; END IF;
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ced_dev') THEN
             CREATE ROLE ced_dev LOGIN; END IF;
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ced_admin') THEN
             CREATE ROLE ced_admin LOGIN; END IF;
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ced_tutorial_runner') THEN
             CREATE ROLE ced_tutorial_runner NOLOGIN; END IF;
         END $$;
         GRANT sync_user TO ced_user;
         GRANT sync_developer TO ced_dev, ced_tutorial_runner;
         GRANT sync_admin TO ced_admin;
         GRANT ced_tutorial_runner TO ced_admin;";

const ROLES_SQL: &str = "DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'con_user') THEN
             CREATE ROLE con_user LOGIN; END IF;
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'con_dev') THEN
             CREATE ROLE con_dev LOGIN; END IF;
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'con_admin') THEN
             CREATE ROLE con_admin LOGIN; END IF;
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'con_none') THEN
             CREATE ROLE con_none LOGIN; END IF;
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'con_pw') THEN
             CREATE ROLE con_pw LOGIN; END IF;
         END $$;
         GRANT sync_user TO con_user, con_pw;
         GRANT sync_developer TO con_dev;
         GRANT sync_admin TO con_admin;
         ALTER ROLE con_pw PASSWORD 'right-password-1';";

/// Make the cluster check `role`'s password (scram) on TCP, whatever the other lines say:
/// prepend a pg_hba.conf line for it and reload.
pub async fn password_checked_for(c: &tokio_postgres::Client, role: &str) {
    let hba: String = scalar(c, "SELECT setting FROM pg_settings WHERE name = 'hba_file'").await;
    let text = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
    let line = format!("host all {role} 127.0.0.1/32 scram-sha-256");
    if !text.lines().any(|l| l == line) {
        // The tests run as root; the file stays the cluster owner's (written in place).
        std::fs::write(&hba, format!("{line}\n{text}")).expect("write pg_hba.conf");
        exec(c, "SELECT pg_reload_conf()").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
