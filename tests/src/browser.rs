// Real-browser tests: one headless chromium driven through chromedriver (WebDriver), the
// driver started once per test binary, a browser session per test, and screenshots.
//
// Debian's `chromium` and `chromium-driver` packages provide both (scripts/lib.sh
// installs them). chromedriver runs in its own process group, killed with every browser
// it started when the test binary exits.
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The port chromedriver listens on, started at the first call.
fn driver_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
            l.local_addr().expect("local addr").port()
        };
        let driver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(&driver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start {driver}: {e} (install Debian's chromium-driver)")
                })
        };
        DRIVER_PGID.store(child.id() as i32, std::sync::atomic::Ordering::SeqCst);
        extern "C" fn kill_driver() {
            let pgid = DRIVER_PGID.load(std::sync::atomic::Ordering::SeqCst);
            if pgid > 0 {
                // SAFETY: signalling the process group we created.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
        }
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(kill_driver) };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return port;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("chromedriver did not listen on port {port}");
    })
}

static DRIVER_PGID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// A new headless browser session (close it with `close().await` at the end).
pub async fn open() -> Client {
    let port = driver_port();
    let mut caps = serde_json::Map::new();
    let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": binary,
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,900", "--lang=en-US"],
        }),
    );
    ClientBuilder::native()
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a chromium session through chromedriver")
}

/// Where screenshots go: $PG_SYNC_SCREENSHOTS, else target/console-screenshots/.
pub fn screenshot_dir() -> PathBuf {
    let dir = std::env::var("PG_SYNC_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots")
        });
    std::fs::create_dir_all(&dir).expect("create the screenshot folder");
    dir
}

/// Save what the browser shows as `<name>.png` and print its path.
pub async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let png = client.screenshot().await.expect("take a screenshot");
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write the screenshot");
    println!("screenshot: {}", path.display());
    path
}

/// How long a page may take to show what a test waits for: generous, since CI runs
/// several browsers and workers on 2 cores; a test that passes waits far less.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The first element matching `css`, waited for up to PATIENCE: after a click the browser
/// may still show the page before (a form posted to its own path looks the same).
pub async fn find(client: &Client, css: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element `{css}` within {PATIENCE:?}: {e}"))
}

/// The text of the first element matching a CSS selector.
pub async fn text(client: &Client, css: &str) -> String {
    find(client, css).await.text().await.expect("element text")
}

/// Fill the input matching `css` with `value` (cleared first).
pub async fn fill(client: &Client, css: &str, value: &str) {
    let el = find(client, css).await;
    el.clear().await.expect("clear the input");
    el.send_keys(value).await.expect("type into the input");
}

/// Click the element matching `css`.
pub async fn click(client: &Client, css: &str) {
    find(client, css).await.click().await.expect("click");
}

/// The page's path and query.
pub async fn path(client: &Client) -> String {
    let url = client.current_url().await.expect("current url");
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

/// Sign in to the console at `base` (`http://127.0.0.1:PORT`) as `role`.
pub async fn sign_in(client: &Client, base: &str, role: &str, password: &str) {
    client
        .goto(&format!("{base}/console/signin"))
        .await
        .expect("open the sign-in page");
    fill(client, "#role", role).await;
    fill(client, "#password", password).await;
    click(client, "form button[type=submit]").await;
}

/// Wait (up to PATIENCE) until the page's path and query start with `prefix`; the path.
pub async fn wait_path(client: &Client, prefix: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        let p = path(client).await;
        if p.starts_with(prefix) {
            return p;
        }
        if start.elapsed() > PATIENCE {
            panic!("the browser stayed at {p}, not {prefix}...");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait (up to PATIENCE) for the page a successful form leads to: its path starts with
/// `prefix` and it says what was done (`?done=`). Unlike `wait_path`, this cannot return
/// while the form's own page (e.g. `.../new`, under the same prefix) is still shown.
pub async fn wait_done(client: &Client, prefix: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        let p = path(client).await;
        if p.starts_with(prefix) && p.contains("done=") {
            return p;
        }
        if start.elapsed() > PATIENCE {
            panic!("the browser stayed at {p}, not {prefix}...?done=...");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait (up to PATIENCE) until the page's path and query are `want`.
pub async fn wait_at(client: &Client, want: &str) {
    let start = std::time::Instant::now();
    loop {
        let p = path(client).await;
        if p == want {
            return;
        }
        if start.elapsed() > PATIENCE {
            panic!("the browser stayed at {p}, not {want}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The page's HTML as the browser has it now.
pub async fn source(b: &Client) -> String {
    b.source().await.expect("page source")
}

/// Is there an element matching `css` now (no waiting)?
pub async fn exists(b: &Client, css: &str) -> bool {
    !b.find_all(Locator::Css(css))
        .await
        .expect("find")
        .is_empty()
}

/// Put `code` into the code editor `#id` (CodeMirror when it runs, else the textarea).
pub async fn set_code(b: &Client, id: &str, code: &str) {
    b.execute(
        "const a = document.getElementById(arguments[0]);
         if (a.cm) { a.cm.setValue(arguments[1]); } else { a.value = arguments[1]; }",
        vec![serde_json::json!(id), serde_json::json!(code)],
    )
    .await
    .expect("set the editor's code");
}

/// Wait (up to PATIENCE) for an element `css` whose text satisfies `ok`; its text. On
/// timeout, the page's errors are in the panic message.
pub async fn wait_text(b: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let start = std::time::Instant::now();
    loop {
        if let Ok(el) = b.find(Locator::Css(css)).await {
            if let Ok(t) = el.text().await {
                if ok(&t) {
                    return t;
                }
            }
        }
        if start.elapsed() > PATIENCE {
            let mut errors = vec![];
            for e in b
                .find_all(Locator::Css(".field-error, .error"))
                .await
                .unwrap_or_default()
            {
                errors.push(e.text().await.unwrap_or_default());
            }
            panic!(
                "no `{css}` as expected at {}; errors: {errors:?}",
                path(b).await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Click `css`, then wait until the path starts with `prefix`.
pub async fn click_and_wait(b: &Client, css: &str, prefix: &str) {
    click(b, css).await;
    wait_path(b, prefix).await;
}
