// Waits between reconnection attempts: exponential, with full jitter so that the
// executors of every worker do not all reconnect at the same instants after a restart.
use std::time::Duration;

const FIRST: Duration = Duration::from_millis(500);
const MOST: Duration = Duration::from_secs(10);
/// Longest wait once the server answers again (starting up, out of connections): it is
/// back, or nearly, so the workers should not sit out a full 10 s step.
const ANSWERED: Duration = Duration::from_secs(3);

/// Exponential backoff, 0.5 s doubling to 10 s (3 s once the server answers); each wait
/// is drawn at random between zero and that step.
#[derive(Debug, Clone)]
pub struct Backoff {
    step: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { step: FIRST }
    }
}

impl Backoff {
    /// The wait after an attempt that got no answer from the server.
    pub fn next_delay(&mut self) -> Duration {
        self.next(false)
    }

    /// The wait after a failed connection attempt.
    pub fn after(&mut self, e: &super::ConnectError) -> Duration {
        self.next(e.server_answered())
    }

    /// The wait after a failed attempt; `server_answered`: the server itself refused.
    pub fn next(&mut self, server_answered: bool) -> Duration {
        if server_answered {
            self.step = self.step.min(ANSWERED);
        }
        let step = self.step;
        self.step = (self.step * 2).min(MOST);
        step.mul_f64(rand::random::<f64>())
    }

    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_jittered_below_a_doubling_step() {
        let mut b = Backoff::default();
        let waits: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        let steps = [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0];
        for (w, s) in waits.iter().zip(steps) {
            assert!(w.as_secs_f64() <= s, "{waits:?}");
        }
        // Full jitter: 200 draws of a 10 s step do not all land on one value.
        let draws: std::collections::BTreeSet<_> = (0..200).map(|_| b.next_delay()).collect();
        assert!(draws.len() > 100, "{draws:?}");
        assert!(draws.iter().any(|d| d.as_secs_f64() < 5.0));
    }

    #[test]
    fn a_server_that_answers_caps_the_wait() {
        let mut b = Backoff::default();
        for _ in 0..10 {
            b.next_delay();
        }
        for _ in 0..50 {
            assert!(b.next(true) <= ANSWERED);
        }
        b.reset();
        assert!(b.next(true) <= FIRST);
    }
}
