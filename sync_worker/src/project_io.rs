// `sync_worker export NAME` and `sync_worker import FILE [--replace]`: a project's
// definition as a JSON document, through sync_export_project / sync_import_project.
use std::io::{Read, Write};

use serde_json::{json, Value};

use crate::pg;

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Name of the project to export; the document goes to standard output.
    pub name: String,
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The document (written by `sync_worker export`), or `-` for standard input.
    pub file: String,
    /// Update the project of that name in place if it exists (param values, secret
    /// values, webhook tokens and cron schedules are kept).
    #[arg(long)]
    pub replace: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectIoError {
    #[error("--database-url (or DATABASE_URL) is not set: give the URL of the database where pg_sync is installed, e.g. postgres://user@host/db, or set libpq's PGHOST, PGDATABASE...")]
    NoUrl,
    #[error("--database-url is not a valid PostgreSQL URL: {0}")]
    BadUrl(crate::pg::UrlError),
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
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot connect to the database: {0}")]
    Connect(pg::ConnectError),
    #[error("{}", describe(.0))]
    Sql(tokio_postgres::Error),
    #[error("cannot write the document: {0}")]
    Write(std::io::Error),
}

impl ProjectIoError {
    /// 2: what was given is unusable (settings, file); 1: the database said no.
    fn exit_code(&self) -> i32 {
        match self {
            Self::NoUrl | Self::BadUrl(_) | Self::Read { .. } | Self::NotJson { .. } => 2,
            _ => 1,
        }
    }
}

/// PostgreSQL's message with its SQLSTATE, detail and hint, as psql shows them.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("ERROR: {} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!("\nDETAIL: {detail}"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("\nHINT: {hint}"));
            }
            text
        }
        None => e.to_string(),
    }
}

fn finish(command: &str, result: Result<(), ProjectIoError>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sync_worker {command}: {e}");
            e.exit_code()
        }
    }
}

/// Entry point of `export`; returns the process exit code.
pub fn export_main(database_url: Option<&str>, args: &ExportArgs) -> i32 {
    finish("export", export(database_url, args))
}

/// Entry point of `import`; returns the process exit code.
pub fn import_main(database_url: Option<&str>, args: &ImportArgs) -> i32 {
    finish("import", import(database_url, args))
}

fn export(database_url: Option<&str>, args: &ExportArgs) -> Result<(), ProjectIoError> {
    let url = check_url(database_url)?;
    let doc: Value = with_client(url, "sync_worker export", |client| async move {
        let row = client
            .query_one("SELECT sync_export_project($1)", &[&args.name])
            .await
            .map_err(ProjectIoError::Sql)?;
        Ok(row.get(0))
    })?;
    let mut text =
        serde_json::to_string_pretty(&doc).map_err(|e| ProjectIoError::Write(e.into()))?;
    text.push('\n');
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(ProjectIoError::Write)
}

fn import(database_url: Option<&str>, args: &ImportArgs) -> Result<(), ProjectIoError> {
    let url = check_url(database_url)?;
    // The file is read and parsed before connecting: a bad file is the caller's error.
    let (path, text) = read_input(&args.file)?;
    let doc: Value = serde_json::from_str(&text).map_err(|source| ProjectIoError::NotJson {
        path: path.clone(),
        source,
    })?;
    let replace = args.replace;
    let id: i64 = with_client(url, "sync_worker import", |client| {
        let doc = &doc;
        async move {
            let row = client
                .query_one("SELECT sync_import_project($1, $2)", &[doc, &replace])
                .await
                .map_err(ProjectIoError::Sql)?;
            Ok(row.get(0))
        }
    })?;
    // The project has the document's name: the import checked it is a string.
    println!("{}", json!({"project_id": id, "name": doc["name"]}));
    Ok(())
}

fn check_url(database_url: Option<&str>) -> Result<&str, ProjectIoError> {
    let url = crate::pg::url_or_environment(database_url).ok_or(ProjectIoError::NoUrl)?;
    crate::pg::resolve(url).map_err(ProjectIoError::BadUrl)?;
    Ok(url)
}

/// The document's text and how to name its source in messages.
fn read_input(file: &str) -> Result<(String, String), ProjectIoError> {
    let mut text = String::new();
    if file == "-" {
        let path = "standard input".to_string();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| ProjectIoError::Read {
                path: path.clone(),
                source,
            })?;
        return Ok((path, text));
    }
    text = std::fs::read_to_string(file).map_err(|source| ProjectIoError::Read {
        path: file.to_string(),
        source,
    })?;
    Ok((file.to_string(), text))
}

/// Run `work` with a connection on a one-thread runtime.
fn with_client<T, F, Fut>(url: &str, application_name: &str, work: F) -> Result<T, ProjectIoError>
where
    F: FnOnce(tokio_postgres::Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, ProjectIoError>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ProjectIoError::Runtime)?;
    rt.block_on(async {
        let client = pg::connect(url, application_name)
            .await
            .map_err(ProjectIoError::Connect)?;
        work(client).await
    })
}
