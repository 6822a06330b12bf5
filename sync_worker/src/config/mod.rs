// The worker's settings: command-line flags, environment variables and a TOML file,
// merged with CLI > env > file > default, checked, and named in every error.
//
// Each setting is declared once, in settings.rs; define.rs turns the declarations into
// the flags, the file's keys, `Config` and the merge, and render.rs writes them out for
// --help, --print-config and the docs. Clap reads a flag or its environment variable (so
// CLI > env comes from clap); the file fills what both left unset. Every setting has one
// name: `snake_case` in the file, `--kebab-case` on the command line.
mod checks;
mod define;
pub mod reload;
pub mod render;
mod settings;
#[cfg(test)]
mod tests;
mod values;

pub use settings::{Config, SettingFlags};
pub use values::{parse_duration, Environment, LogFormat};

use clap::Args;
use settings::SettingsFile;
use std::path::{Path, PathBuf};
use std::time::Duration;
use values::PathList;

#[derive(Args, Debug, Clone, Default)]
pub struct WorkerArgs {
    /// TOML file with settings (keys are the flag names in snake_case). Flags and
    /// environment variables override it.
    #[arg(long, env = "SYNC_WORKER_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Check the configuration, the database and the ports, print a summary and exit
    /// (0 = the worker would start).
    #[arg(long)]
    pub check: bool,

    /// Same as --log-format json (kept for older scripts).
    #[arg(long, env = "SYNC_WORKER_LOG_JSON", global = true, hide = true, value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub log_json: bool,

    /// The old name of SYNC_WORKER_EVAL_CONTEXT_PATH, read for one more release.
    #[arg(long, env = "SYNC_EVAL_CONTEXT_PATH", hide = true)]
    pub old_eval_context_path: Option<String>,

    #[command(flatten)]
    pub settings: SettingFlags,
}

impl WorkerArgs {
    /// The log format the command line asks for, if any: --log-json is --log-format json
    /// and wins over it.
    pub fn log_format(&self) -> Option<LogFormat> {
        if self.log_json {
            Some(LogFormat::Json)
        } else {
            self.settings.log_format
        }
    }

    /// --eval-context-path or its variable, else the variable's old name (which adds a
    /// deprecation warning); both is refused.
    fn eval_context_path(
        &self,
        warnings: &mut Vec<String>,
    ) -> Result<Option<PathList>, ConfigError> {
        let Some(old) = &self.old_eval_context_path else {
            return Ok(self.settings.eval_context_path.clone());
        };
        if self.settings.eval_context_path.is_some() {
            return Err(invalid(
                "eval_context_path",
                "both SYNC_WORKER_EVAL_CONTEXT_PATH (or --eval-context-path) and its deprecated \
                 old name SYNC_EVAL_CONTEXT_PATH are set: keep SYNC_WORKER_EVAL_CONTEXT_PATH only",
            ));
        }
        warnings.push(
            "SYNC_EVAL_CONTEXT_PATH is deprecated and will be removed in the next release: \
             use SYNC_WORKER_EVAL_CONTEXT_PATH instead"
                .into(),
        );
        Ok(Some(PathList(old.clone())))
    }
}

/// The Python directories (eval_context_path, python_path) of a command that reads no
/// config file (`run-job`): from flags and variables; a deprecated name is logged.
pub fn python_dirs(args: &WorkerArgs) -> Result<(Option<String>, Option<String>), ConfigError> {
    let mut warnings = Vec::new();
    let eval_context_path = args.eval_context_path(&mut warnings)?;
    log_deprecations(&warnings);
    Ok((
        eval_context_path.map(|p| p.0),
        args.settings.python_path.clone().map(|p| p.0),
    ))
}

/// Log each deprecated name that was used (once the log is set up).
pub fn log_deprecations(warnings: &[String]) {
    for warning in warnings {
        tracing::warn!("{warning}");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // No setting is `required` since database_url may come from libpq's variables.
    #[allow(dead_code)]
    #[error("{}", missing(.key))]
    Missing { key: &'static str },
    #[error("config file {path}: {why}")]
    File { path: String, why: String },
    #[error("{setting}: {why}")]
    Invalid { setting: &'static str, why: String },
}

fn invalid(setting: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        why: why.into(),
    }
}

/// How to give a required setting.
fn missing(key: &str) -> String {
    let mut text = format!("{key} is not set");
    if let Some(s) = define::setting(key) {
        text.push_str(&format!(
            ": give {}, {} or `{key}` in the config file",
            s.flag(),
            s.env
        ));
        if let Some(example) = s.example {
            text.push_str(&format!(", e.g. {}", example.trim_matches('"')));
        }
    }
    text
}

impl Config {
    /// The settings from the command line, the environment and the config file.
    pub fn from_args(args: &WorkerArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => SettingsFile::default(),
        };
        Self::merge(args, file, args.config.clone())
    }

    fn merge(
        args: &WorkerArgs,
        file: SettingsFile,
        path: Option<PathBuf>,
    ) -> Result<Config, ConfigError> {
        let mut flags = args.settings.clone();
        flags.log_format = args.log_format();
        let mut deprecations = Vec::new();
        flags.eval_context_path = args.eval_context_path(&mut deprecations)?;
        checks::cross_checks(settings::merge(&flags, file, path, deprecations)?)
    }

    /// The hard limit of a webhook handler: its soft limit plus the jobs' margin.
    pub fn webhook_hard_limit(&self) -> Duration {
        self.webhook_time_limit + (self.hard_time_limit - self.soft_time_limit)
    }
}

fn read_file(path: &Path) -> Result<SettingsFile, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: shown.clone(),
        why: format!("cannot read it: {e}"),
    })?;
    parse_file(&text).map_err(|why| ConfigError::File { path: shown, why })
}

/// The settings of a config file's text; the error names the key and shows the line.
fn parse_file(text: &str) -> Result<SettingsFile, String> {
    toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
}

/// Tests: the worker's flags alone, parsed as the command line does.
#[cfg(test)]
#[derive(clap::Parser)]
pub(crate) struct Flags {
    #[command(flatten)]
    pub worker: WorkerArgs,
}
