// What the worker tells systemd under Type=notify: READY=1 once it serves the queue,
// WATCHDOG=1 while its supervisor loop turns, STOPPING=1; a no-op outside systemd.
use sd_notify::NotifyState;
use std::time::{Duration, Instant};

pub struct Notifier {
    /// Half of WatchdogSec (systemd's advice), when the unit sets one.
    ping_every: Option<Duration>,
    last_ping: Option<Instant>,
    ready: bool,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let mut usec = 0;
        // The environment is kept: executors are started with a cleared one anyway.
        let ping_every = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(100)));
        Notifier {
            ping_every,
            last_ping: None,
            ready: false,
        }
    }

    /// Startup is over: the checks passed and the queue is being served (once).
    pub fn ready(&mut self, worker_id: i32) {
        if !self.ready {
            self.ready = true;
            send(&[
                NotifyState::Ready,
                NotifyState::Status(&format!("serving the queue as worker {worker_id}")),
            ]);
        }
    }

    /// The supervisor loop turned: ping the watchdog when it is due. Called from the loop
    /// itself, so a stuck loop stops the pings and systemd restarts the worker.
    pub fn alive(&mut self) {
        let Some(every) = self.ping_every else { return };
        if self.last_ping.is_none_or(|t| t.elapsed() >= every) {
            self.last_ping = Some(Instant::now());
            send(&[NotifyState::Watchdog]);
        }
    }

    pub fn stopping(&self) {
        send(&[NotifyState::Stopping]);
    }
}

fn send(states: &[NotifyState]) {
    // Without NOTIFY_SOCKET this does nothing; a failure to reach systemd must not stop
    // the worker, but it is worth a line in the log.
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!("telling systemd {states:?} failed: {e}");
    }
}
