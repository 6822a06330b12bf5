// SIGTERM / SIGINT: the first one asks for a graceful stop (finish running jobs within
// the grace period), a second one stops at once (jobs not finished are given back).
// SIGHUP reloads the settings (reload.rs) and never stops the worker.
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// How many stop signals arrived so far (0, 1 = graceful, 2+ = now).
pub fn listen() -> std::io::Result<watch::Receiver<u32>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            let n = *tx.borrow() + 1;
            if n == 1 {
                tracing::info!("{name}: stopping; running jobs may finish first");
            } else {
                tracing::warn!("{name} again: stopping now");
            }
            if tx.send(n).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// SIGHUP, one event per signal (signals that arrive together may come as one). From the
/// moment this is called, SIGHUP no longer ends the process.
pub fn hangups() -> std::io::Result<tokio::signal::unix::Signal> {
    signal(SignalKind::hangup())
}
