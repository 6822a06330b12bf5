// `sync_worker check-code FILE`: compiles every code layer of a project document the way
// executors will (none of it runs) and reports each problem at its layer and line.
//
// The console's "check" runs this same command in a child process (`check_in_child`), so
// that the worker's own process never hosts the interpreter and a pathological paste
// costs a killed child, not the worker.
use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::child_env::inherited;
use crate::python::{Runtime, RuntimeOptions};

#[derive(clap::Args, Debug)]
pub struct CheckCodeArgs {
    /// A project document (as `sync_worker export` writes it), or `-` for standard input.
    pub file: String,
    /// Print the problems as a JSON list instead of one line each.
    #[arg(long)]
    pub json: bool,
}

/// One layer that does not compile. `line` and `column` are 1-based, when Python knows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CodeProblem {
    pub layer: String,
    pub line: Option<i64>,
    pub column: Option<i64>,
    pub message: String,
}

impl std::fmt::Display for CodeProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.layer, self.message),
            (Some(l), None) => write!(f, "{}:{l}: {}", self.layer, self.message),
            _ => write!(f, "{}: {}", self.layer, self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a JSON document: {source}")]
    NotJson {
        path: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Python(#[from] crate::python::RuntimeError),
    #[error("the code check gave an unexpected answer: {0}")]
    Answer(serde_json::Error),
    #[error("cannot start the code check ({exe}): {source}")]
    Spawn { exe: String, source: std::io::Error },
    #[error("the code check did not finish within {0:?}; is the code very large?")]
    Timeout(Duration),
    #[error("the code check failed: {0}")]
    Child(String),
}

/// Problems of a parsed project document.
pub fn check_document(doc: &Value) -> Result<Vec<CodeProblem>, CheckError> {
    let runtime = Runtime::with_options(RuntimeOptions::default())?;
    let problems = runtime.check_code(doc)?;
    serde_json::from_value(problems).map_err(CheckError::Answer)
}

/// The command: exit 0 when every layer compiles, 1 when one does not, 2 when the
/// document cannot be read.
pub fn main(args: &CheckCodeArgs) -> i32 {
    let doc = match read_document(&args.file) {
        Ok(doc) => doc,
        Err(e) => {
            eprintln!("sync_worker check-code: {e}");
            return 2;
        }
    };
    let problems = match check_document(&doc) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sync_worker check-code: {e}");
            return 2;
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&problems).unwrap_or_default());
    } else {
        for p in &problems {
            println!("{p}");
        }
    }
    i32::from(!problems.is_empty())
}

fn read_document(path: &str) -> Result<Value, CheckError> {
    let name = if path == "-" { "standard input" } else { path };
    let mut text = String::new();
    let read = if path == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    read.map_err(|source| CheckError::Read {
        path: name.to_string(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| CheckError::NotJson {
        path: name.to_string(),
        source,
    })
}

/// How long a check in a child process may take before it is killed.
pub const CHILD_TIME_LIMIT: Duration = Duration::from_secs(10);

/// Check a document in a child process (`sync_worker check-code --json -`), killed after
/// `CHILD_TIME_LIMIT`.
pub async fn check_in_child(doc: &Value) -> Result<Vec<CodeProblem>, CheckError> {
    let exe = std::env::current_exe().map_err(|source| CheckError::Spawn {
        exe: "the worker's own executable".into(),
        source,
    })?;
    let spawn_error = |source| CheckError::Spawn {
        exe: exe.display().to_string(),
        source,
    };
    let mut child = tokio::process::Command::new(&exe)
        .args(["check-code", "--json", "-"])
        // It compiles what a person pasted: like an executor, it gets none of the
        // worker's credentials.
        .env_clear()
        .envs(std::env::vars_os().filter(|(k, _)| inherited(k)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error)?;
    let input = serde_json::to_vec(doc).map_err(CheckError::Answer)?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| CheckError::Child("the child process has no standard input".into()))?;
    let run = async move {
        // A write error shows as the child's own failure below.
        let _ = stdin.write_all(&input).await;
        drop(stdin);
        child.wait_with_output().await
    };
    let output = tokio::time::timeout(CHILD_TIME_LIMIT, run)
        .await
        .map_err(|_| CheckError::Timeout(CHILD_TIME_LIMIT))?
        .map_err(spawn_error)?;
    // Exit 1 means "problems found": the list is on stdout either way.
    match output.status.code() {
        Some(0) | Some(1) => serde_json::from_slice(&output.stdout).map_err(CheckError::Answer),
        _ => Err(CheckError::Child(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_layer_is_checked_at_its_line_and_wrong_shapes_are_said() {
        let doc = json!({
            "core_code": "import json\nx = (\n",
            "common_code": "VAT = 0.2\nimport os\n",
            "tasks": [
                {"name": "ok", "code": "def handle_db(records):\n    return 1\n"},
                {"name": "broken", "code": "def f():\n    return 1\n  x = 2\n"},
                {"name": "private", "code": "def f(o):\n    return o._secret\n"},
            ],
        });
        let problems = check_document(&doc).expect("the check runs");
        let at: Vec<(&str, Option<i64>)> = problems
            .iter()
            .map(|p| (p.layer.as_str(), p.line))
            .collect();
        assert_eq!(
            at,
            vec![
                ("<core_code>", Some(2)),
                ("<common_code>", Some(2)),
                ("<task broken>", Some(3)),
                ("<task private>", Some(2)),
            ],
            "{problems:?}"
        );
        assert!(problems[1].message.contains("import is not allowed"));
        assert!(problems[3].message.contains("private attribute"));
        // The sandbox's prefix ("<layer>, line N: ") is not repeated in the message.
        assert!(!problems[3].message.contains("line 2"), "{}", problems[3]);
        assert_eq!(problems[0].to_string().split(':').nth(1), Some("2"));

        // One test, not two: each loads the package into the one interpreter.
        let clean = json!({"core_code": "", "tasks": [{"name": "t", "code": "x = 1"}]});
        assert_eq!(check_document(&clean).expect("runs"), vec![]);
        let wrong = check_document(&json!({"tasks": {"name": "t"}})).expect("runs");
        assert_eq!(wrong.len(), 1);
        assert!(wrong[0].message.contains("tasks must be a list"));
        let nul = check_document(&json!({"tasks": [{"name": "t", "code": "x = '\u{0}'"}]}))
            .expect("runs");
        assert_eq!(nul.len(), 1, "{nul:?}");
    }
}
