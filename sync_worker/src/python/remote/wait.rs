// Waiting on a remote statement without holding the GIL, in 100 ms slices with a check
// of Python signals in between, so that the job's soft time limit (SIGALRM) stops it.
use std::future::Future;
use std::time::Duration;

use pyo3::prelude::*;

/// How long a wait runs before Python signals are checked.
const SLICE: Duration = Duration::from_millis(100);

/// A wait cut short by a Python signal handler that raised (the soft time limit).
pub(super) struct Interrupted(pub PyErr);

/// Await `fut` on `rt` without holding the GIL, checking Python signals every SLICE.
pub(super) fn wait<F>(
    py: Python<'_>,
    rt: &tokio::runtime::Runtime,
    fut: F,
) -> Result<F::Output, Interrupted>
where
    F: Future + Send,
    F::Output: Send,
{
    let mut fut = std::pin::pin!(fut);
    loop {
        let done = py
            .detach(|| rt.block_on(async { tokio::time::timeout(SLICE, fut.as_mut()).await.ok() }));
        if let Some(out) = done {
            return Ok(out);
        }
        py.check_signals().map_err(Interrupted)?;
    }
}
