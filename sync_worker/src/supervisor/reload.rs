// SIGHUP: read the settings again (the same flags and environment, the config file anew),
// apply what may change while running (config/reload.rs says what) and log the rest.
//
// Executors get their settings when they start: each is told to stop once it has
// finished the work it was sent, and its slot starts a new one with the new settings.
use super::*;
use crate::config::reload::{plan, Reload};
use std::sync::OnceLock;

type LogFilter = Box<dyn Fn(Option<&str>) -> Result<(), String> + Send + Sync>;

/// Replaces this process's log filter; set by main when it sets up the log.
static LOG_FILTER: OnceLock<LogFilter> = OnceLock::new();

/// How to replace the log filter (`log_level`, unset = what the start would use).
pub fn on_log_level(set: impl Fn(Option<&str>) -> Result<(), String> + Send + Sync + 'static) {
    let _ = LOG_FILTER.set(Box::new(set));
}

/// The settings as a start of this process would read them now.
fn read_settings() -> Result<Config, String> {
    use clap::Parser;
    let cli = crate::cli::Cli::try_parse_from(std::env::args_os()).map_err(|e| e.to_string())?;
    let cfg = Config::from_args(&cli.worker).map_err(|e| e.to_string())?;
    crate::startup::check_environment(&cfg).map_err(|e| e.to_string())?;
    Ok(cfg)
}

impl Supervisor {
    pub(super) fn reload(&mut self) {
        if self.stopping.is_some() {
            tracing::info!("SIGHUP: the worker is stopping; settings not reloaded");
            return;
        }
        let new = match read_settings() {
            Ok(cfg) => cfg,
            Err(e) => {
                tracing::error!(
                    "SIGHUP: settings not reloaded, the worker goes on with the running ones: {e}"
                );
                return;
            }
        };
        let reload = plan(&self.cfg, &new);
        report(&reload);
        if let Some(change) = reload.change("log_level") {
            if let Some(set) = LOG_FILTER.get() {
                if let Err(e) = set(reload.config.log_level.as_deref()) {
                    tracing::error!("SIGHUP: cannot set log_level {}: {e}", change.new);
                }
            }
        }
        let restart = reload.restarts_executors();
        self.cfg = reload.config;
        if restart {
            self.retire_executors();
        }
        tracing::debug!(
            "SIGHUP: settings read again from {}",
            self.cfg
                .file
                .as_ref()
                .map_or("the command line and the environment".into(), |f| f
                    .display()
                    .to_string())
        );
    }

    /// Every executor started with the old settings takes no more work and is told to
    /// stop once it is idle (`stop_retired`); a slot whose executor exits starts a new
    /// one with the running settings.
    fn retire_executors(&mut self) {
        let mut n = 0;
        for id in self.pools.ids() {
            let Some(p) = self.pools.slot_mut(id).proc.as_mut() else {
                continue;
            };
            if matches!(p.life, Life::Starting | Life::Ready) {
                p.life = Life::Leaving;
                self.retiring.push((id, p.generation));
                n += 1;
            }
        }
        if n > 0 {
            tracing::info!("restarting {n} executor(s) for the new settings, each once it is idle");
        }
        self.stop_retired();
    }

    /// Tell each retired executor that has no work left to stop.
    pub(super) fn stop_retired(&mut self) {
        let pools = &mut self.pools;
        self.retiring.retain(|&(id, generation)| {
            let Some(p) = pools
                .slot_mut(id)
                .proc
                .as_mut()
                .filter(|p| p.generation == generation)
            else {
                return false;
            };
            if !p.inflight.is_empty() || !p.hook_batches.is_empty() {
                return true;
            }
            p.send(ToExecutor::Stop);
            false
        });
    }
}

/// One line per setting reloaded, one warning for those that wait for a restart.
fn report(reload: &Reload) {
    for c in &reload.changes {
        tracing::info!("reloaded: {} {} -> {}", c.key, c.old, c.new);
    }
    if !reload.needs_restart.is_empty() {
        tracing::warn!(
            "SIGHUP: changed but applied only when the worker restarts: {}",
            reload.needs_restart.join(", ")
        );
    }
    if reload.changes.is_empty() && reload.needs_restart.is_empty() {
        tracing::info!("SIGHUP: settings read again; none changed");
    }
}
