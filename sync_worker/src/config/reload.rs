// What SIGHUP may change in a running worker: each setting is reloadable (taken at once,
// or by restarting the executors gracefully) or waits for a restart of the worker.
//
// `plan` compares the running settings with the ones just read and returns what to run
// with, what changed and what was left for the next start; it touches nothing itself.
use super::Config;
use std::time::Duration;

/// How a reloaded setting reaches the code that uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    /// The supervisor reads it each time it needs it.
    Now,
    /// Executors are given it when they start: they are restarted, each once it has
    /// finished the work it was sent.
    Executors,
}

/// A reloadable setting whose value changed, with both values as the file writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: &'static str,
    pub old: String,
    pub new: String,
    pub takes: Takes,
}

/// The outcome of comparing the running settings with the ones read again.
#[derive(Debug)]
pub struct Reload {
    /// The settings to run with: the running ones, with the reloadable settings taken
    /// from the new ones.
    pub config: Config,
    /// Reloadable settings that changed, in the order of the settings' table.
    pub changes: Vec<Change>,
    /// Settings that changed but keep their running value until the worker restarts.
    pub needs_restart: Vec<&'static str>,
}

impl Reload {
    /// Whether the executors must be restarted to take the changes.
    pub fn restarts_executors(&self) -> bool {
        self.changes.iter().any(|c| c.takes == Takes::Executors)
    }

    /// The change of `key`, if it changed.
    pub fn change(&self, key: &str) -> Option<&Change> {
        self.changes.iter().find(|c| c.key == key)
    }
}

/// Every setting is listed once, under `reload` (with how it takes effect and how its
/// value is shown) or under `restart`; a test checks that together they are the
/// settings of settings.rs, so a new setting is not reloaded by accident.
macro_rules! rules {
    (
        reload { $($key:literal: $field:ident, $takes:ident, $show:expr;)* }
        restart { $($rkey:literal: $rfield:ident,)* }
    ) => {
        #[cfg(test)]
        const RELOADABLE: &[&str] = &[$($key),*];
        #[cfg(test)]
        const RESTART: &[&str] = &[$($rkey),*];

        /// What SIGHUP does with `new`, read while the worker runs with `old`.
        pub fn plan(old: &Config, new: &Config) -> Reload {
            let mut config = old.clone();
            let mut changes = Vec::new();
            $(
                if old.$field != new.$field {
                    changes.push(Change {
                        key: $key,
                        old: ($show)(&old.$field),
                        new: ($show)(&new.$field),
                        takes: Takes::$takes,
                    });
                    config.$field = new.$field.clone();
                }
            )*
            let mut needs_restart = Vec::new();
            $(
                if old.$rfield != new.$rfield {
                    needs_restart.push($rkey);
                }
            )*
            Reload {
                config,
                changes,
                needs_restart,
            }
        }
    };
}

rules! {
    reload {
        // The supervisor's own filter is replaced too (see supervisor/reload.rs).
        "log_level": log_level, Executors, unset_or;
        "soft_time_limit": soft_time_limit, Executors, duration;
        "hard_time_limit": hard_time_limit, Executors, duration;
        // Also read by the supervisor, which sizes batches for it at once (the old
        // executors take no more batches).
        "throttle": throttle, Executors, duration;
        "executor_memory_limit": executor_memory_limit, Executors, size;
        "eval_context_path": eval_context_path, Executors, unset_or;
        "python_path": python_path, Executors, unset_or;
        "batch_size": batch_size, Now, number;
        "grace_period": grace_period, Now, duration;
    }
    restart {
        "database_url": database_url,
        "database_ca_file": database_ca_file,
        "executor_database_url": executor_database_url,
        "wait_for_database": wait_for_database,
        "executors": executors,
        "poll_interval": poll_interval,
        "rescue_interval": rescue_interval,
        "webhook_listen": webhook_listen,
        "base_url": base_url,
        "webhook_executors": webhook_executors,
        // The webhook server resolves each handler's limit with it when it looks the
        // token up: it keeps the value it started with.
        "webhook_time_limit": webhook_time_limit,
        "max_body_size": max_body_size,
        "webhook_queue_size": webhook_queue_size,
        "admin_listen": admin_listen,
        "admin_token": admin_token,
        "console": console,
        "console_idle_timeout": console_idle_timeout,
        "console_session_lifetime": console_session_lifetime,
        "console_max_sessions": console_max_sessions,
        "environment": environment,
        "allow_unsafe_prod": allow_unsafe_prod,
        "log_format": log_format,
        "max_time_drift": max_time_drift,
    }
}

fn unset_or(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "(unset)".into())
}

fn duration(d: &Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn size(bytes: &usize) -> String {
    match *bytes {
        n if n > 0 && n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n > 0 && n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n => n.to_string(),
    }
}

fn number(n: &usize) -> String {
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_file, Config, Flags};
    use clap::Parser;

    /// The settings of a config file, with the database URL given as a flag.
    fn config(toml: &str) -> Config {
        let flags =
            Flags::try_parse_from(["sync_worker", "--database-url", "postgres://h/db"]).unwrap();
        Config::merge(&flags.worker, parse_file(toml).unwrap(), None).unwrap()
    }

    #[test]
    fn every_setting_is_reloadable_or_waits_for_a_restart() {
        let mut classified: Vec<&str> = RELOADABLE.iter().chain(RESTART).copied().collect();
        classified.sort_unstable();
        let mut settings: Vec<&str> = crate::config::settings::SETTINGS
            .iter()
            .map(|s| s.key)
            .collect();
        settings.sort_unstable();
        assert_eq!(classified, settings);
    }

    #[test]
    fn nothing_changed_changes_nothing() {
        let old = config("log_level = 'info'\nexecutors = 2\n");
        let plan = plan(&old, &config("executors = 2\nlog_level = 'info'\n"));
        assert!(plan.changes.is_empty(), "{:?}", plan.changes);
        assert!(plan.needs_restart.is_empty());
        assert!(!plan.restarts_executors());
    }

    #[test]
    fn reloadable_settings_are_applied_and_shown_as_written() {
        let old = config("log_level = 'info'\nexecutors = 2\n");
        let new = config(
            "log_level = 'debug'\nexecutors = 2\nsoft_time_limit = '1.5s'\n\
             hard_time_limit = '10s'\nthrottle = '200ms'\nexecutor_memory_limit = '512MiB'\n",
        );
        let plan = plan(&old, &new);
        let shown: Vec<String> = plan
            .changes
            .iter()
            .map(|c| format!("{} {} -> {}", c.key, c.old, c.new))
            .collect();
        assert_eq!(
            shown,
            [
                "log_level info -> debug",
                "soft_time_limit 300s -> 1500ms",
                "hard_time_limit 330s -> 10s",
                "throttle 0s -> 200ms",
                "executor_memory_limit 2GiB -> 512MiB",
            ]
        );
        assert!(plan.needs_restart.is_empty());
        assert!(plan.restarts_executors());
        assert_eq!(plan.config.log_level.as_deref(), Some("debug"));
        assert_eq!(plan.config.soft_time_limit, Duration::from_millis(1500));
        assert_eq!(plan.config.hard_time_limit, Duration::from_secs(10));
        assert_eq!(plan.config.throttle, Duration::from_millis(200));
        assert_eq!(plan.config.executor_memory_limit, 512 << 20);
    }

    #[test]
    fn settings_read_by_the_supervisor_need_no_executor_restart() {
        let old = config("");
        let plan = plan(&old, &config("batch_size = 20\ngrace_period = '5s'\n"));
        assert_eq!(plan.change("batch_size").map(|c| c.takes), Some(Takes::Now));
        assert_eq!(
            plan.change("grace_period")
                .map(|c| (c.old.as_str(), c.new.as_str())),
            Some(("30s", "5s"))
        );
        assert!(!plan.restarts_executors());
        assert_eq!(plan.config.batch_size, 20);
    }

    #[test]
    fn other_settings_keep_their_running_value_and_are_named() {
        let old = config("executors = 2\nlog_level = 'info'\n");
        let new = config(
            "executors = 3\nlog_level = 'warn'\nwebhook_time_limit = '5s'\n\
             admin_listen = '127.0.0.1:9999'\nlog_format = 'json'\n",
        );
        let plan = plan(&old, &new);
        assert_eq!(
            plan.needs_restart,
            [
                "executors",
                "webhook_time_limit",
                "admin_listen",
                "log_format"
            ]
        );
        assert_eq!(plan.config.executors, 2);
        assert_eq!(plan.config.webhook_time_limit, old.webhook_time_limit);
        assert_eq!(plan.config.admin_listen, old.admin_listen);
        assert_eq!(plan.config.log_format, old.log_format);
        // The reloadable one still applies.
        assert_eq!(plan.config.log_level.as_deref(), Some("warn"));
    }

    #[test]
    fn an_unset_value_is_shown_as_unset() {
        let plan = plan(&config("log_level = 'debug'\n"), &config(""));
        assert_eq!(
            plan.change("log_level").map(|c| c.new.as_str()),
            Some("(unset)")
        );
        assert_eq!(plan.config.log_level, None);
    }
}
