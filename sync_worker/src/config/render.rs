// The settings table written out: each flag's --help line, the example config file
// (`sync_worker --print-config`, which is contrib/worker.toml) and the table of
// docs/configuration.md (`--print-config=markdown`).
//
// Texts are Markdown; the help and the TOML comments show links as their text only.
use super::define::{setting, Fallback, Setting};
use super::settings::SETTINGS;

/// What `--print-config` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrintFormat {
    // The example config file (contrib/worker.toml).
    Toml,
    // The settings table of docs/configuration.md.
    Markdown,
}

pub fn print(format: PrintFormat) -> String {
    match format {
        PrintFormat::Toml => toml(),
        PrintFormat::Markdown => markdown(),
    }
}

/// Width of the example's comment lines.
const WIDTH: usize = 88;

const TOML_HEADER: &str = "\
# /etc/pg_sync/worker.toml: example configuration of sync_worker, written by
# `sync_worker --print-config`; docs/configuration.md has the same settings as a table.
#
# Every setting is listed with its default, its flag and its environment variable. The
# lines not commented out are values for production; the others show the default or an
# example. Precedence: command-line flag > environment variable > this file > default.
# Keys are the flag names in snake_case (--poll-interval -> poll_interval). An unknown
# key or a bad value stops the worker with exit code 78 (EX_CONFIG) naming the setting;
# check a file with `sync_worker --config /etc/pg_sync/worker.toml --check`.
#
# Durations: \"500ms\", \"2s\", \"5m\", \"1h30m\", \"1d\" or a number of seconds. Sizes:
# \"10MiB\", \"512KiB\", \"1MB\" or a number of bytes. Addresses: \"127.0.0.1:8780\",
# \"0.0.0.0:8780\", \"[::1]:8780\", or \"off\".
#
# Set in the environment only (no key here): SYNC_WORKER_FETCH_ALLOW, the networks
# url2base64() in task code may fetch from although its rules refuse them
# (comma-separated CIDRs, e.g. 127.0.0.1/32,fd00::/8).
";

/// The --help line of a setting's flag: its sentence (without the final period, as clap
/// writes doc comments) and its default.
pub fn flag_help(key: &str) -> String {
    match setting(key) {
        Some(s) => format!(
            "{} [default: {}]",
            plain(s.doc.trim().trim_end_matches('.')),
            plain(&default_text(s))
        ),
        None => String::new(),
    }
}

/// The example config file.
pub fn toml() -> String {
    let mut out = String::from(TOML_HEADER);
    let mut section = "";
    for s in SETTINGS {
        if s.section != section {
            section = s.section;
            let head = format!("# --- {section} ");
            out.push_str(&format!("\n{head:-<WIDTH$}\n"));
        }
        out.push('\n');
        let text = meaning(s);
        let flag = match s.value_name {
            Some(v) => format!("{} {v}", s.flag()),
            None => s.flag(),
        };
        for line in [
            plain(&text),
            format!(
                "Default: {}. Flag {flag}, environment {}.",
                plain(&default_text(s)),
                s.env
            ),
        ] {
            for l in wrap(&line, WIDTH - 2) {
                out.push_str(&format!("# {l}\n"));
            }
        }
        match (s.suggested, s.example, s.default) {
            (Some(v), _, _) => out.push_str(&format!("{} = {v}\n", s.key)),
            (None, Some(v), _) | (None, None, Fallback::Value(v)) => {
                out.push_str(&format!("# {} = {v}\n", s.key))
            }
            (None, None, _) => {}
        }
    }
    out
}

/// The settings table of docs/configuration.md.
pub fn markdown() -> String {
    let mut out = String::from(
        "| TOML key | flag | environment variable | default | meaning |\n|---|---|---|---|---|\n",
    );
    for s in SETTINGS {
        let flag = match s.value_name {
            Some(v) => format!("{} {v}", s.flag()),
            None => s.flag(),
        };
        let default = match s.default {
            Fallback::Value(v) => format!("`{}`", unquote(v)),
            _ => default_text(s),
        };
        out.push_str(&format!(
            "| `{}` | `{flag}` | `{}` | {default} | {} |\n",
            s.key,
            s.env,
            meaning(s).replace('|', "\\|")
        ));
    }
    out
}

/// What a setting does: its sentence, its note, and the old name it replaces (Markdown).
fn meaning(s: &Setting) -> String {
    let mut text = s.doc.trim().to_string();
    if let Some(note) = s.note {
        text = format!("{text} {note}");
    }
    if let Some(old) = &s.replaces {
        text = format!(
            "{text} Deprecated old name: `{}` (`{}`, `{}`), {}; it still works in this \
             release with a warning at start, and giving both is refused.",
            old.key,
            old.flag(),
            old.env,
            old.was
        );
    }
    text
}

/// The default as the docs say it (Markdown).
fn default_text(s: &Setting) -> String {
    match s.default {
        Fallback::Value(v) => unquote(v).to_string(),
        Fallback::Unset(what) => what.to_string(),
        Fallback::Required => "none (required)".to_string(),
    }
}

/// A TOML string literal's text; other literals as they are.
fn unquote(literal: &str) -> &str {
    literal
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(literal)
}

/// Markdown links as their text: `[text](target)` -> `text`.
pub fn plain(markdown: &str) -> String {
    let mut out = String::new();
    let mut rest = markdown;
    while let Some(open) = rest.find('[') {
        // `[text]` directly followed by `(target)`; anything else is plain text.
        let link = rest[open..].find(']').and_then(|end| {
            let end = open + end;
            let target = rest[end + 1..].strip_prefix('(')?;
            Some((end, end + 2 + target.find(')')?))
        });
        match link {
            Some((end, close)) => {
                out.push_str(&rest[..open]);
                out.push_str(&rest[open + 1..end]);
                rest = &rest[close + 1..];
            }
            None => {
                out.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Words in lines of at most `width` characters (a longer word gets its own line); an
/// inline code span is not broken.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut in_code = false;
    for word in text.split_whitespace() {
        match words.last_mut() {
            Some(last) if in_code => {
                last.push(' ');
                last.push_str(word);
            }
            _ => words.push(word.to_string()),
        }
        if word.matches('`').count() % 2 == 1 {
            in_code = !in_code;
        }
    }
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in words {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}
