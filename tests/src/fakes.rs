// Fake external APIs for tests (tests/fakes/*.py: GitHub, Trello, Telegram): start one
// on a free port, talk to its /_fake inspection API, kill it when the test ends.
//
// The fakes are Python standard-library servers; a tiny HTTP/1.1 client here (one
// request per connection) is all the tests need to seed and inspect them.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A running fake server, killed on drop.
pub struct FakeServer {
    pub kind: String,
    pub port: u16,
    child: Child,
    /// Held open: the fake exits when it closes (also if the test process dies).
    _stdin: Option<ChildStdin>,
}

/// Where the fake scripts live.
pub fn fakes_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fakes")
}

impl FakeServer {
    /// Start `tests/fakes/<kind>.py --port 0 <args>` and read its port.
    pub fn start(kind: &str, args: &[&str]) -> FakeServer {
        let script = fakes_dir().join(format!("{kind}.py"));
        let mut child = Command::new("/usr/bin/python3")
            .arg(&script)
            .args(["--port", "0", "--exit-on-stdin-eof"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("fake {kind}: cannot read its port: {e}"));
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("fake {kind} printed {line:?} instead of its port"));
        FakeServer {
            kind: kind.to_string(),
            port,
            child,
            _stdin: stdin,
        }
    }

    /// `http://127.0.0.1:<port>` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// How logs, errors and results show `url(path)` when `url(base)` is a provider's
    /// base URL: a secret, so masked (`***`) wherever the worker writes it.
    pub fn masked(&self, base: &str, path: &str) -> String {
        let full = self.url(path);
        match full.strip_prefix(&self.url(base)) {
            Some(rest) => format!("***{rest}"),
            None => full,
        }
    }

    /// One request; (status, body parsed as JSON, or as a JSON string when it is text).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .unwrap_or_else(|e| panic!("fake {}: cannot connect: {e}", self.kind));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.port,
            payload.len()
        );
        if body.is_some() {
            req.push_str("Content-Type: application/json\r\n");
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&payload);
        stream
            .write_all(req.as_bytes())
            .unwrap_or_else(|e| panic!("fake {}: cannot send: {e}", self.kind));
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .unwrap_or_else(|e| panic!("fake {}: cannot read the answer: {e}", self.kind));
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("fake {}: bad answer {head:?}", self.kind));
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()))
        };
        (status, value)
    }

    /// GET on the inspection API or the fake API; panics unless 2xx.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Value {
        let (status, value) = self.request("GET", path, headers, None);
        assert!(
            (200..300).contains(&status),
            "fake {}: GET {path}: {status} {value}",
            self.kind
        );
        value
    }

    /// POST JSON; panics unless 2xx.
    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Value {
        let (status, value) = self.request("POST", path, headers, Some(body));
        assert!(
            (200..300).contains(&status),
            "fake {}: POST {path}: {status} {value}",
            self.kind
        );
        value
    }

    /// Everything the fake stores, with "requests" and "deliveries".
    pub fn state(&self) -> Value {
        self.get("/_fake/state", &[])
    }

    /// The calls the fake received (method, path, query, headers, body, status).
    pub fn requests(&self) -> Vec<Value> {
        match self.get("/_fake/requests", &[]) {
            Value::Array(items) => items,
            other => panic!("fake {}: /_fake/requests gave {other}", self.kind),
        }
    }

    /// The next `count` calls whose path starts with `path` answer `status`.
    pub fn fail_next(&self, status: u16, count: u32, path: &str) {
        self.post(
            "/_fake/fail",
            &[],
            &serde_json::json!({"status": status, "count": count, "path": path}),
        );
    }

    pub fn reset(&self) {
        self.post("/_fake/reset", &[], &Value::Null);
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
